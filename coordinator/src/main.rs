//! `hearth-coordinator`: thin CLI over the library.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use hearth_coordinator::demo::{demo, DemoOptions};
use hearth_coordinator::init::{init, InitOptions, Preset};
use hearth_coordinator::service::{RunOptions, Service};

/// Hearth coordinator: runs a community LoRA fine-tune that volunteers join with `hearth-worker`.
#[derive(Parser, Debug)]
#[command(name = "hearth-coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write DIR/run.toml (every setting spelled out) and prepare the dataset shards.
    Init {
        /// Base model preset (default: tiny, or the model given by --model).
        #[arg(long, value_enum)]
        preset: Option<Preset>,
        /// Base model: with --preset smollm2-135m its GGUF file (default: where
        /// deploy/fetch-model.sh puts it); alone, any supported model (Llama 1-3, Mistral,
        /// Qwen2/2.5, Qwen3) as a GGUF file or a Hugging Face directory.
        #[arg(long, value_name = "FILE|DIR")]
        model: Option<PathBuf>,
        /// LoRA target modules of a --model run (comma-separated; default q_proj,v_proj).
        #[arg(long, value_delimiter = ',')]
        lora_targets: Option<Vec<String>>,
        /// LoRA rank of a --model run (default 8; alpha is twice the rank).
        #[arg(long)]
        rank: Option<usize>,
        /// Tokens per training sequence of a --model run (default 256).
        #[arg(long)]
        seq_len: Option<usize>,
        /// Dataset (JSONL or plain text); default: the generated demo task.
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Number of training shards.
        #[arg(long, default_value_t = 8)]
        shards: usize,
    },
    /// Run the coordinator: listen, open rounds, verify and aggregate deltas, publish checkpoints.
    Run {
        /// The run.toml written by `init`.
        #[arg(long)]
        config: PathBuf,
        /// libp2p listen multiaddr (repeatable); overrides run.toml.
        #[arg(long)]
        listen: Vec<String>,
        /// HTTP bind address (dashboard, API, /metrics); overrides run.toml. Empty disables HTTP.
        #[arg(long)]
        http: Option<String>,
        /// Stop after this many committed rounds.
        #[arg(long)]
        rounds: Option<u64>,
        /// Write the dialable multiaddr to this file once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Private swarm: only peers holding the same key can even open a connection (libp2p
        /// pnet; TCP only, QUIC off). FILE is an IPFS swarm.key or 64 hex digits; make one with
        /// `hearth-coordinator keygen --out FILE` and give it to every worker (`join --swarm-key`).
        #[arg(long, value_name = "FILE")]
        swarm_key: Option<PathBuf>,
    },
    /// Start a coordinator and N worker processes on loopback; exit after R rounds with a JSON summary.
    Demo {
        /// Base model preset (default: tiny, or the model given by --model).
        #[arg(long, value_enum)]
        preset: Option<Preset>,
        /// Base model: the GGUF file of smollm2-135m, or alone any supported model (GGUF file or
        /// Hugging Face directory).
        #[arg(long, value_name = "FILE|DIR")]
        model: Option<PathBuf>,
        /// Worker processes.
        #[arg(long, default_value_t = 3)]
        workers: usize,
        /// Rounds (default: the preset's demo length, 3 on tiny, 12 on smollm2-135m).
        #[arg(long)]
        rounds: Option<u64>,
        /// Working directory (default: a fresh temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HTTP bind address of the dashboard ("" to disable).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// CPU threads per worker (default: cores / workers).
        #[arg(long)]
        threads: Option<usize>,
        /// How many of the workers misbehave (to try the coordinator's defences).
        #[arg(long, default_value_t = 0)]
        adversaries: usize,
        /// How they misbehave: sign-flip, scale, nan, noise, replay, stale, wrong-shape, forged, alie,
        /// free-ride, lazy.
        #[arg(long, default_value = "scale")]
        attack: String,
        /// Fresh demo-task examples to decode greedily with the base and the fine-tuned adapter (0 = skip).
        #[arg(long, default_value_t = 30)]
        accuracy_examples: usize,
        /// Training shards to cut the data into (workers lease one each; default 8).
        #[arg(long)]
        shards: Option<usize>,
        /// Seed of the demo task, the held-out split and the shards (default 7).
        #[arg(long)]
        seed: Option<u64>,
        /// Worker i serves Prometheus metrics on 127.0.0.1:(PORT + i).
        #[arg(long, value_name = "PORT")]
        worker_metrics_port: Option<u16>,
        /// Also write the JSON summary to this file.
        #[arg(long, value_name = "FILE")]
        json_out: Option<PathBuf>,
        /// Run the demo as a private swarm with this key (see `run --swarm-key`).
        #[arg(long, value_name = "FILE")]
        swarm_key: Option<PathBuf>,
        #[command(flatten)]
        overrides: hearth_coordinator::overrides::RunOverrides,
    },
    /// Write a new random swarm key (IPFS swarm.key format, mode 0600) for a private swarm.
    ///
    /// Pass it to `run --swarm-key FILE` and give it to every worker (`join --swarm-key FILE`)
    /// over a private channel: only peers holding it can connect. Never overwrites a file.
    Keygen {
        /// The key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Ban a peer id from the run (applied by the running coordinator within a second, or at its next start).
    Ban {
        /// The peer id to ban.
        peer_id: String,
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Held-out loss of a model (and optional PEFT adapter) on a text or dataset file, as one JSON line.
    Eval(hearth_coordinator::eval_cmd::EvalArgs),
    /// Print the swarm (round, loss, workers, leaderboard, rejections) from a coordinator's HTTP API.
    Status(hearth_coordinator::status_cmd::StatusArgs),
    /// Copy a round's PEFT adapter (adapter_model.safetensors + adapter_config.json) out of the data dir.
    Export {
        /// Coordinator data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Round (default: the latest committed).
        #[arg(long)]
        round: Option<u64>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Write the base model with the adapter merged in (a Hugging Face safetensors
        /// directory) instead of the PEFT adapter.
        #[arg(long)]
        merged: bool,
    },
}

fn ban(data_dir: &Path, peer_id: &str) -> Result<()> {
    let peer: hearth_net::PeerId = peer_id
        .parse()
        .map_err(|e| anyhow!("{peer_id:?} is not a peer id: {e}"))?;
    if !data_dir.is_dir() {
        return Err(anyhow!(
            "{} is not a coordinator data directory",
            data_dir.display()
        ));
    }
    let path = hearth_coordinator::service::bans_path(data_dir);
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l.trim() == peer.to_base58()) {
        println!("{peer} is already banned");
        return Ok(());
    }
    text.push_str(&format!("{peer}\n"));
    hearth_coordinator::store::write_atomic(&path, text.as_bytes())?;
    println!("banned {peer}");
    Ok(())
}

/// Reads `--swarm-key FILE`.
fn load_swarm_key(path: &Path) -> Result<hearth_net::SwarmKey> {
    hearth_net::SwarmKey::load(path).context("--swarm-key")
}

/// `run`: start the coordinator, print where it listens, serve HTTP, and run until done.
async fn run(
    config: PathBuf,
    listen: Vec<String>,
    http: Option<String>,
    rounds: Option<u64>,
    addr_file: Option<PathBuf>,
    swarm_key: Option<PathBuf>,
) -> Result<()> {
    let swarm_key = swarm_key.as_deref().map(load_swarm_key).transpose()?;
    let listen = listen
        .iter()
        .map(|a| a.parse().with_context(|| format!("listen address {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    let opts = RunOptions {
        listen,
        http,
        rounds,
        addr_file: addr_file.clone(),
        swarm_key,
    };
    let (svc, events) = Service::start(&config, &opts).await?;
    let addrs = svc.dial_addrs().await;
    for a in &addrs {
        println!("listening on {a}");
    }
    if let (Some(f), Some(a)) = (&addr_file, addrs.first()) {
        hearth_coordinator::store::write_atomic(f, a.to_string().as_bytes())?;
    }
    let cfg = hearth_coordinator::config::RunConfig::load(&config)?;
    let http = opts.http.clone().unwrap_or(cfg.coordinator.http);
    if !http.is_empty() {
        let bound = hearth_coordinator::http::serve(
            &http,
            svc.snapshot(),
            svc.metrics(),
            svc.data_dir().to_path_buf(),
        )
        .await?;
        println!("dashboard on http://{bound}/");
    }
    svc.run(events).await?;
    Ok(())
}

/// Write the demo's summary to `--json-out`, print the loss and accuracy lines to stderr and the
/// summary to stdout.
fn report_demo(summary: &serde_json::Value, json_out: Option<&Path>) -> Result<()> {
    if let Some(f) = json_out {
        hearth_coordinator::store::write_atomic(f, format!("{summary}\n").as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    let losses: Vec<f64> = summary["eval_loss"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    if let (Some(b), Some(t)) = (losses.first(), losses.last()) {
        let per_round: Vec<String> = losses.iter().map(|l| format!("{l:.3}")).collect();
        eprintln!("held-out loss per round: {}", per_round.join(" → "));
        eprintln!(
            "held-out loss: base {b:.4} → fine-tuned {t:.4} after {} rounds in {:.0} s of swarm time",
            summary["rounds"],
            summary["swarm_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let em = &summary["exact_match"];
    if let (Some(b), Some(t)) = (em["base"].as_f64(), em["fine_tuned"].as_f64()) {
        eprintln!(
            "exact match on {} fresh demo examples: base {:.0} % → fine-tuned {:.0} %",
            em["examples"],
            b * 100.0,
            t * 100.0
        );
    }
    println!("{summary}");
    Ok(())
}

async fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            preset,
            model,
            lora_targets,
            rank,
            seq_len,
            dataset,
            out,
            shards,
        } => {
            let mut o = InitOptions::new(Preset::resolve(preset, model.as_deref()), out);
            o.model = model;
            o.lora_targets = lora_targets;
            o.rank = rank;
            o.seq_len = seq_len;
            o.dataset = dataset;
            o.shards = shards;
            let path = tokio::task::spawn_blocking(move || init(&o)).await??;
            println!("{}", path.display());
        }
        Command::Run {
            config,
            listen,
            http,
            rounds,
            addr_file,
            swarm_key,
        } => {
            run(config, listen, http, rounds, addr_file, swarm_key).await?;
        }
        Command::Demo {
            preset,
            model,
            workers,
            rounds,
            dir,
            http,
            threads,
            adversaries,
            attack,
            accuracy_examples,
            shards,
            seed,
            worker_metrics_port,
            json_out,
            swarm_key,
            overrides,
        } => {
            if adversaries > workers {
                anyhow::bail!("--adversaries {adversaries} is more than --workers {workers}");
            }
            let preset = Preset::resolve(preset, model.as_deref());
            let summary = demo(&DemoOptions {
                preset,
                model,
                workers,
                rounds: rounds.unwrap_or_else(|| preset.demo_rounds()),
                dir,
                http,
                threads,
                adversaries,
                attack,
                accuracy_examples,
                shards,
                seed,
                overrides,
                worker_metrics_port,
                swarm_key,
            })
            .await?;
            report_demo(&summary, json_out.as_deref())?;
        }
        Command::Keygen { out } => {
            let key = hearth_net::SwarmKey::generate()?;
            key.write_new(&out)?;
            println!(
                "wrote swarm key {} (fingerprint {}); start the coordinator with \
                 `run --swarm-key {0}` and give the file to every worker (`join --swarm-key FILE`)",
                out.display(),
                key.fingerprint()
            );
        }
        Command::Ban { peer_id, data_dir } => ban(&data_dir, &peer_id)?,
        Command::Export {
            data_dir,
            round,
            out,
            merged,
        } => {
            let r = tokio::task::spawn_blocking(move || {
                if merged {
                    hearth_coordinator::export::export_merged(&data_dir, round, &out)
                        .map(|r| (r, out))
                } else {
                    hearth_coordinator::export::export_peft(&data_dir, round, &out)
                        .map(|r| (r, out))
                }
            })
            .await??;
            println!("round {} → {}", r.0, r.1.display());
        }
        Command::Status(args) => {
            tokio::task::spawn_blocking(move || hearth_coordinator::status_cmd::run(&args))
                .await??
        }
        Command::Eval(args) => {
            tokio::task::spawn_blocking(move || hearth_coordinator::eval_cmd::run(args)).await??
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth-coordinator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
