//! `hearth-sim`: light simulated workers (real libp2p peers, no training) against a coordinator.
//! Prints one JSON line with deltas sent, accepted, rejected and lost, and round timings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use hearth_tests::sim::{run, SimOptions};

/// Simulate `--peers` workers that join and send one signed delta per round.
#[derive(Debug, Parser)]
#[command(name = "hearth-sim", version)]
struct Args {
    /// Coordinator multiaddr ending in /p2p/<peer id>.
    coordinator: String,
    /// Peers simulated by this process.
    #[arg(long, default_value_t = 10)]
    peers: usize,
    /// Index of this process's first peer (use disjoint ranges across processes).
    #[arg(long, default_value_t = 0)]
    first_peer: usize,
    /// Rounds to contribute to.
    #[arg(long, default_value_t = 2)]
    rounds: u64,
    /// Seed of identities and noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Peers joining at the same time.
    #[arg(long, default_value_t = 32)]
    join_concurrency: usize,
    /// Seconds a delta submission waits for its acknowledgement.
    #[arg(long, default_value_t = 120)]
    request_timeout: u64,
    /// Seconds to wait for a round's checkpoint.
    #[arg(long, default_value_t = 300)]
    round_timeout: u64,
    /// Scratch directory (downloaded shards and checkpoint).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hearth_tests=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = main_inner().await {
        eprintln!("hearth-sim: {e:#}");
        std::process::exit(1);
    }
}

async fn main_inner() -> Result<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let opts = SimOptions {
        coordinator: a.coordinator.parse().context("coordinator address")?,
        peers: a.peers,
        first_peer: a.first_peer,
        rounds: a.rounds,
        seed: a.seed,
        join_concurrency: a.join_concurrency,
        request_timeout: Duration::from_secs(a.request_timeout),
        round_timeout: Duration::from_secs(a.round_timeout),
        work_dir: a.work_dir.unwrap_or_else(|| tmp.path().to_path_buf()),
    };
    let summary = run(opts).await?;
    println!("{}", summary.to_json());
    Ok(())
}
