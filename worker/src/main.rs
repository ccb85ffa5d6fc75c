//! `hearth-worker`: thin CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hearth_worker::session::{join, JoinOptions};

/// Hearth worker: donate your GPU or CPU to a community fine-tune.
#[derive(Parser, Debug)]
#[command(name = "hearth-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join a run: `hearth-worker join /ip4/…/tcp/4001/p2p/<coordinator peer id>`.
    Join {
        /// The coordinator's address, as it printed it (ends in /p2p/<peer id>).
        coordinator: String,
        /// Where to train: cpu (cuda:N needs a build with the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CPU threads to use for training (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Where the model, data shards and checkpoints are kept.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Name shown on the dashboard and leaderboard.
        #[arg(long)]
        name: Option<String>,
        /// Leave after contributing to this many rounds.
        #[arg(long)]
        rounds: Option<u64>,
        /// Join token, for runs that require one.
        #[arg(long)]
        token: Option<String>,
        /// Also relay other workers' deltas (subscribe to the deltas topic).
        #[arg(long)]
        relay: bool,
        /// Only print warnings and errors.
        #[arg(long)]
        quiet: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Misbehave on purpose, to test a coordinator's defences (organisers only).
        #[arg(long, value_enum, hide = true)]
        attack: Option<hearth_worker::attack::Attack>,
    },
    /// Train LoRA locally without a swarm (a hardware check, or a single-machine baseline) and write a PEFT adapter.
    Train(hearth_worker::train_cmd::TrainArgs),
    /// Print this machine's peer id (the identity your credit is tied to).
    Id {
        /// Where the identity lives (default: the cache directory).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("HEARTH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            hearth_model::default_model_path()
                .parent()
                .and_then(|p| p.parent())
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".hearth"))
        })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Id { cache_dir } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let key = hearth_net::load_or_create_identity(&dir.join("identity.key"))?;
            println!("{}", key.public().to_peer_id());
            Ok(())
        }
        Command::Train(args) => {
            init_logging(false);
            hearth_worker::train_cmd::run(args)
        }
        Command::Join {
            coordinator,
            device,
            threads,
            cache_dir,
            name,
            rounds,
            token,
            relay,
            quiet,
            metrics,
            attack,
        } => {
            init_logging(quiet);
            if device != "cpu" {
                anyhow::bail!(
                    "device {device:?} is not available in this build (use --device cpu)"
                );
            }
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            // candle's CPU kernels size their thread pool from this variable on first use.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let addr = coordinator
                .parse()
                .with_context(|| format!("coordinator address {coordinator:?}"))?;
            let opts = JoinOptions {
                coordinator: addr,
                identity: dir.join("identity.key"),
                cache_dir: dir,
                name: name.unwrap_or_else(|| "volunteer".into()),
                device,
                threads,
                rounds,
                token,
                relay,
                listen: Vec::new(),
                metrics,
                attack,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(join(opts))
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info,libp2p=warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
