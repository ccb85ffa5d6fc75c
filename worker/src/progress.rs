//! Terminal progress: download bars, a training bar per round, one summary line per round.
//!
//! Bars are drawn only when stderr is a terminal and the output is neither `--quiet` nor
//! `--log-format json`; otherwise the same facts go to the log. Log lines written while bars are
//! shown go through [`Progress::writer`], which lifts the bars out of the way first.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How the worker reports progress (cheap to clone).
#[derive(Debug, Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars on stderr when `bars` is wanted and stderr is a terminal.
    pub fn new(bars: bool) -> Self {
        let multi = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Self { multi }
    }

    /// No bars at all.
    pub fn hidden() -> Self {
        Self { multi: None }
    }

    /// Whether bars are drawn.
    pub fn bars(&self) -> bool {
        self.multi.is_some()
    }

    /// A stderr writer for log lines that keeps the bars intact.
    pub fn writer(&self) -> BarSafeStderr {
        BarSafeStderr {
            multi: self.multi.clone(),
        }
    }

    fn add(&self, bar: ProgressBar) -> ProgressBar {
        match &self.multi {
            Some(m) => m.add(bar),
            None => {
                bar.set_draw_target(ProgressDrawTarget::hidden());
                bar
            }
        }
    }

    /// A download bar: `label`, bytes done of `total`, rate and ETA.
    pub fn download(&self, label: &str, total: u64) -> ProgressBar {
        let bar = self.add(ProgressBar::new(total));
        bar.set_style(style(
            "{msg:>22} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ));
        bar.set_message(label.to_string());
        bar
    }

    /// A training bar for `round`: steps of `steps`, with loss and tokens/s in its message.
    pub fn training(&self, round: u64, steps: u64) -> ProgressBar {
        let bar = self.add(ProgressBar::new(steps));
        bar.set_style(style(
            "round {prefix:>4} [{bar:30.green/white}] step {pos}/{len} {msg} ETA {eta}",
        ));
        bar.set_prefix(round.to_string());
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    }

    /// Print a line above the bars (or to stderr without them).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The message of a training bar.
pub fn training_message(loss: f64, tokens_per_second: f64) -> String {
    format!("loss {loss:.4} · {tokens_per_second:.0} tok/s")
}

/// stderr that suspends the progress bars around each write (one log line per write).
#[derive(Debug, Clone)]
pub struct BarSafeStderr {
    multi: Option<MultiProgress>,
}

impl Write for BarSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.multi {
            Some(m) => m.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Progress {
    type Writer = BarSafeStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bars_still_count() {
        let p = Progress::hidden();
        assert!(!p.bars());
        let b = p.download("model", 1000);
        b.set_position(500);
        assert_eq!(b.position(), 500);
        assert_eq!(b.length(), Some(1000));
        assert_eq!(training_message(1.23456, 250.4), "loss 1.2346 · 250 tok/s");
    }
}
