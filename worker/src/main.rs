//! `hearth-worker`: thin CLI over the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hearth_worker::control::Control;
use hearth_worker::device::DeviceArg;
use hearth_worker::paths::{default_cache_dir, identity_path};
use hearth_worker::progress::Progress;
use hearth_worker::schedule::Window;
use hearth_worker::session::{join, JoinOptions};

/// Hearth worker: donate your GPU or CPU to a community fine-tune.
#[derive(Parser, Debug)]
#[command(name = "hearth-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines (with progress bars on a terminal).
    Text,
    /// One JSON object per line, no bars (for log collectors).
    Json,
}

/// Options of `join`.
#[derive(clap::Args, Debug)]
struct JoinArgs {
    /// The coordinator's address, exactly as it printed it (ends in /p2p/<peer id>).
    coordinator: String,
    /// Where to train: `cpu`, `cuda:N` (GPU number N; needs a build with `--features cuda`), or
    /// `auto` (the first GPU when this build has CUDA and one is present, else the CPU).
    #[arg(long, default_value = "auto")]
    device: String,
    /// How many CPU cores training may use (default: all of them). Fewer keeps the machine
    /// responsive for other work.
    #[arg(long)]
    threads: Option<usize>,
    /// How the frozen base weights are held: f32, bf16, f16, q8 or q4 (QLoRA-style 4-bit
    /// blocks, about an eighth of f32). Lower precision trains bigger models in less memory;
    /// each weight is expanded to f32 only for its own matmul.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Activation checkpointing: keep one transformer block's activations at a time and
    /// recompute each block in the backward pass. The same training in much less memory, one
    /// more forward pass per step; for models whose activations do not fit otherwise.
    #[arg(long)]
    checkpoint_activations: bool,
    /// The most sequences trained at once. Lower it to use less memory: the worker then adds up
    /// several smaller batches per step, so the training result is the same, only slower.
    #[arg(long, value_name = "N")]
    max_batch: Option<usize>,
    /// The most memory training may use, e.g. 6G or 512M (default: what the system reports as
    /// available). The worker refuses to join if the run needs more.
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<String>,
    /// Only train during these local hours, e.g. 22:00-07:00 (may wrap past midnight). Outside
    /// them the worker stays connected, idle, and resumes when the window opens.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    hours: Option<String>,
    /// Leave after contributing to this many rounds (default: keep going until Ctrl-C).
    #[arg(long)]
    rounds: Option<u64>,
    /// Name shown next to your contribution on the dashboard and leaderboard.
    #[arg(long)]
    name: Option<String>,
    /// Where downloads are kept: the model, data shards and checkpoints, each checked by
    /// hash on every start (default: $HEARTH_CACHE, else ~/.cache/hearth).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Your identity key (your credit is tied to it; keep it safe). Default: $HEARTH_IDENTITY,
    /// else ~/.local/share/hearth/identity.key, or DIR/identity.key with --cache-dir.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Join token, for runs that admit only invited volunteers.
    #[arg(long)]
    token: Option<String>,
    /// Private swarm: only peers holding the same key can even open a connection (libp2p pnet;
    /// TCP only, QUIC off). FILE is the swarm key the organiser gave you (IPFS swarm.key or 64
    /// hex digits); use the coordinator's /tcp/ address.
    #[arg(long, value_name = "FILE")]
    swarm_key: Option<PathBuf>,
    /// Also pass other workers' updates along (uses a little more upload bandwidth).
    #[arg(long)]
    relay: bool,
    /// Local control address, e.g. 127.0.0.1:9102: POST /pause, POST /resume, GET /status
    /// (JSON). Pausing also works with `kill -USR1 <pid>`, resuming with `kill -USR2 <pid>`.
    #[arg(long, value_name = "ADDR")]
    control: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Print only warnings and the final summary.
    #[arg(long)]
    quiet: bool,
    /// `text` (progress bars on a terminal) or `json` (one JSON object per line, no bars).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Pretend the local time is HH:MM (tests of --hours).
    #[arg(long, hide = true, value_name = "HH:MM")]
    now: Option<String>,
    /// Misbehave on purpose, to test a coordinator's defences (organisers only).
    #[arg(long, value_enum, hide = true)]
    attack: Option<hearth_worker::attack::Attack>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join a run and contribute: `hearth-worker join /ip4/…/tcp/4001/p2p/<coordinator peer id>`.
    ///
    /// Everything else has a default. While it runs: Ctrl-C finishes the step in progress, drops
    /// the unfinished round and leaves the swarm (press it again to quit at once); SIGUSR1 or
    /// POST /pause on --control pauses after the current step, SIGUSR2 or POST /resume resumes.
    /// Before joining, the worker estimates the memory the run needs and refuses, with a
    /// suggestion, when this machine cannot hold it.
    Join(Box<JoinArgs>),
    /// Measure this machine: training speed, memory, and how long a round would take.
    Bench(hearth_worker::bench::BenchArgs),
    /// Train LoRA locally without a swarm (a hardware check, or a single-machine baseline) and write a PEFT adapter.
    Train(hearth_worker::train_cmd::TrainArgs),
    /// Print this machine's peer id (the identity your credit is tied to).
    Id {
        /// The identity key file (default: $HEARTH_IDENTITY, else
        /// ~/.local/share/hearth/identity.key, or DIR/identity.key with --cache-dir).
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The cache directory `join --cache-dir` uses (default: $HEARTH_CACHE).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Id {
            identity,
            cache_dir,
        } => {
            let path = identity_path(
                identity.or_else(|| env_path("HEARTH_IDENTITY")),
                cache_dir.or_else(|| env_path("HEARTH_CACHE")).as_deref(),
            )?;
            let key = hearth_net::load_or_create_identity(&path)?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::Train(args) => {
            init_logging(false, LogFormat::Text, &Progress::hidden());
            hearth_worker::train_cmd::run(args)
        }
        Command::Bench(args) => {
            init_logging(true, LogFormat::Text, &Progress::hidden());
            hearth_worker::bench::run(args)
        }
        Command::Join(args) => join_cmd(*args),
    }
}

fn join_cmd(a: JoinArgs) -> Result<()> {
    let progress = Progress::new(!a.quiet && a.log_format == LogFormat::Text);
    init_logging(a.quiet, a.log_format, &progress);
    if let Some(now) = &a.now {
        now.parse::<hearth_worker::schedule::TimeOfDay>()
            .with_context(|| "--now")?;
        std::env::set_var(hearth_worker::schedule::NOW_ENV, now);
    }
    let window = a
        .hours
        .as_deref()
        .map(str::parse::<Window>)
        .transpose()
        .context("--hours")?;
    let device = a.device.parse::<DeviceArg>()?.resolve()?;
    let threads = match a.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    if a.max_batch == Some(0) {
        bail!("--max-batch must be at least 1");
    }
    let max_memory = a
        .max_memory
        .as_deref()
        .map(hearth_worker::memory::parse_size)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?;
    // candle's CPU kernels size their thread pool from this variable on first use.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let cache_dir = a.cache_dir.or_else(|| env_path("HEARTH_CACHE"));
    let identity = identity_path(
        a.identity.or_else(|| env_path("HEARTH_IDENTITY")),
        cache_dir.as_deref(),
    )?;
    let dir = cache_dir.unwrap_or_else(default_cache_dir);
    let addr = a
        .coordinator
        .parse()
        .with_context(|| format!("coordinator address {:?}", a.coordinator))?;
    let swarm_key = a
        .swarm_key
        .as_deref()
        .map(hearth_net::SwarmKey::load)
        .transpose()
        .context("--swarm-key")?;
    let opts = JoinOptions {
        coordinator: addr,
        identity,
        cache_dir: dir,
        name: a.name.unwrap_or_else(|| "volunteer".into()),
        device,
        threads,
        max_batch: a.max_batch,
        footprint: hearth_worker::memory::Footprint {
            dtype: hearth_model::linear::BaseDType::parse(&a.dtype).context("--dtype")?,
            checkpoint: a.checkpoint_activations,
        },
        max_memory,
        control_addr: a.control,
        control: Control::new(window),
        progress,
        rounds: a.rounds,
        token: a.token,
        relay: a.relay,
        listen: Vec::new(),
        metrics: a.metrics,
        attack: a.attack,
        swarm_key,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(join(opts))
}

/// A path from an environment variable, if set and not empty.
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn init_logging(quiet: bool, format: LogFormat, progress: &Progress) {
    let default = if quiet {
        "warn"
    } else {
        "info,libp2p=warn,hearth_net=warn"
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(progress.clone());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
