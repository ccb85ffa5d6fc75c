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

/// Write `text` to `path` (creating its directory) via a temporary file and a rename.
pub fn write_output(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
