//! `hearth-bench-swarm`: benchmark tables 2 (communication), 3 (convergence) and 6 (utilisation),
//! measured with real `hearth-coordinator demo` swarms on loopback. Each subcommand writes one
//! markdown file under docs/bench/ (table 3 also its SVG plots).

mod communication;
mod convergence;
mod demo_run;
mod md;
mod scrape;
mod sizes;
mod speedup;
mod svg;
mod utilisation;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Benchmarks of the swarm: communication, convergence, utilisation.
#[derive(Debug, Parser)]
#[command(name = "hearth-bench-swarm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Table 2: bytes per delta and per round for each codec, and the held-out loss it reaches.
    Communication(communication::Args),
    /// Table 3: N workers vs one worker doing the same total steps; outer optimizer and H.
    Convergence(convergence::Args),
    /// Table 3b: time to a target loss with N workers, each N with its best learning rates.
    Speedup(speedup::Args),
    /// Table 6: share of worker wall time spent training, and where the rest goes.
    Utilisation(utilisation::Args),
}

/// Write `text` to `path` atomically (creating its directory), with the one atomic writer.
pub fn write_output(path: &Path, text: &str) -> Result<()> {
    hearth_proto::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Communication(a) => communication::main(a),
        Command::Convergence(a) => convergence::main(a),
        Command::Speedup(a) => speedup::main(a),
        Command::Utilisation(a) => utilisation::main(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-bench-swarm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
