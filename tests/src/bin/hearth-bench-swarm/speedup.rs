//! Table 3b: time to a target held-out loss with N = 1, 2, 4, 8 workers, each N with its best inner
//! learning rate, outer optimizer and local steps per round (H) from a grid, as rounds and as the wall
//! time it would take if every worker had its own device (its measured step time, plus transfers at
//! the stated links).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::demo_run::{run, sibling_bin, DemoResult, DemoSpec};
use crate::md::{this_command, thousands, Table};
use crate::svg::{line_chart, Series};

/// Options of `speedup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Markdown file to write.
    #[arg(long, default_value = "docs/bench/3-speedup.md")]
    pub out: PathBuf,
    /// The table's number in its heading.
    #[arg(long, default_value = "3b")]
    pub table: String,
    /// SVG plots: `<stem>.svg` (held-out loss against estimated wall time) and `<stem>-n.svg`
    /// (speed-up against N).
    #[arg(long, default_value = "docs/bench/3-speedup.svg")]
    pub svg: PathBuf,
    /// Scratch directory for the swarms.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// SmolLM2-135M GGUF file: run the smollm2-135m preset instead of tiny.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Worker counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Rounds per swarm at H = `--local-steps`; every H of `--hs` gets the same budget of local
    /// steps per worker (rounds × local steps), so a smaller H runs more rounds.
    #[arg(long, default_value_t = 30)]
    pub rounds: u64,
    /// Local steps per round (H) that sets the step budget, and the grid's only H without `--hs`.
    #[arg(long, default_value_t = 20)]
    pub local_steps: u32,
    /// Local steps per round (H) of the grid (comma-separated; default: `--local-steps` alone).
    #[arg(long, value_delimiter = ',')]
    pub hs: Vec<u32>,
    /// Inner learning rates of the grid (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.04,0.16,0.32")]
    pub lrs: Vec<f32>,
    /// Outer optimizers of the grid (comma-separated `--outer` values).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "average:1,nesterov:0.5:0.5,nesterov:0.7:0.9"
    )]
    pub outers: Vec<String>,
    /// Delta codec of every swarm (dense 4-bit, the default when table 3b was measured).
    #[arg(long, default_value = "topk:1:4")]
    pub codec: String,
    /// Upload bandwidth of a worker, Mbit/s.
    #[arg(long, default_value_t = 20.0)]
    pub up_mbit: f64,
    /// Download bandwidth of a worker, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    pub down_mbit: f64,
    /// Timed steps of the step-time measurement (`hearth-worker bench`).
    #[arg(long, default_value_t = 10)]
    pub bench_steps: u32,
    /// Seconds one swarm may take.
    #[arg(long, default_value_t = 1800)]
    pub run_timeout: u64,
    /// Reuse the summaries a previous run with the same flags left in the work directory
    /// (only the step time is measured again).
    #[arg(long)]
    pub reuse: bool,
}

/// One point of the grid: inner lr, outer optimizer and local steps per round.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    lr: f32,
    outer: String,
    h: u32,
}

impl Setting {
    fn label(&self) -> String {
        format!("lr {} · {} · H {}", self.lr, self.outer, self.h)
    }

    /// File-name-safe tag of this setting's swarm with `n` workers.
    fn tag(&self, n: usize) -> String {
        let outer: String = self
            .outer
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("speedup-{n}-lr{}-{outer}-h{}", self.lr, self.h)
    }
}

/// Rounds that spend the budget of `rounds_at` rounds of `local_steps` steps at `h` steps a round.
pub fn rounds_for(rounds_at: u64, local_steps: u32, h: u32) -> u64 {
    (rounds_at * u64::from(local_steps)).div_ceil(u64::from(h.max(1)))
}

/// Rounds (fractional) until `losses` (index 0 = base model, i = after round i) first reaches
/// `target`, interpolating linearly inside the round that crosses it; None if it never does.
pub fn rounds_to_target(losses: &[f64], target: f64) -> Option<f64> {
    let first = losses.iter().position(|l| *l <= target)?;
    if first == 0 {
        return Some(0.0);
    }
    let (before, after) = (losses[first - 1], losses[first]);
    let frac = if before > after {
        ((before - target) / (before - after)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Some((first - 1) as f64 + frac)
}

/// Seconds of one round on a worker with its own device: `steps` steps of `step_seconds`, one
/// delta of `up_bytes` up and one checkpoint of `down_bytes` down at the given links.
pub fn round_seconds(
    steps: u32,
    step_seconds: f64,
    up_bytes: f64,
    down_bytes: f64,
    up_mbit: f64,
    down_mbit: f64,
) -> f64 {
    f64::from(steps) * step_seconds
        + up_bytes * 8.0 / (up_mbit * 1e6)
        + down_bytes * 8.0 / (down_mbit * 1e6)
}

/// Seconds per optimizer step of one worker alone on this machine (all its cores: "its own
/// device"), measured by `hearth-worker bench` on the run's model, LoRA, batch and sequence length.
fn step_seconds(a: &Args, work: &Path) -> Result<(f64, Value)> {
    let dir = work.join("bench-run");
    let _ = std::fs::remove_dir_all(&dir);
    let mut init = Command::new(sibling_bin("hearth-coordinator")?);
    init.arg("init").arg("--out").arg(&dir);
    match &a.model {
        Some(m) => init.args(["--preset", "smollm2-135m", "--model"]).arg(m),
        None => init.args(["--preset", "tiny"]),
    };
    let out = init.output().context("running hearth-coordinator init")?;
    if !out.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut bench = Command::new(sibling_bin("hearth-worker")?);
    bench
        .arg("bench")
        .arg("--run")
        .arg(dir.join("run.toml"))
        .args(["--device", "cpu", "--json", "--steps"])
        .arg(a.bench_steps.to_string())
        .arg("--local-steps")
        .arg(a.local_steps.to_string());
    if let Some(m) = &a.model {
        bench.arg("--model").arg(m);
    }
    let out = bench.output().context("running hearth-worker bench")?;
    if !out.status.success() {
        bail!("bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing the bench's JSON")?;
    let s = v["seconds_per_step"]
        .as_f64()
        .context("the bench printed no seconds_per_step")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((s, v))
}

fn spec(a: &Args, tag: String, n: usize, s: &Setting) -> DemoSpec {
    DemoSpec {
        tag,
        workers: n,
        rounds: rounds_for(a.rounds, a.local_steps, s.h),
        local_steps: s.h,
        lr: s.lr,
        codec: a.codec.clone(),
        outer: Some(s.outer.clone()),
        shards: n,
        target_deltas: n as u32,
        seed: 7,
        worker_metrics_port: None,
        set: vec!["run.aggregate.deadline_secs=600".to_string()],
        log: "warn",
        model: a.model.clone(),
    }
}

/// The best run of one worker count: least wall time to the target (`round_s` gives a round's
/// seconds), then the lowest final loss.
struct Best<'a> {
    n: usize,
    setting: &'a Setting,
    result: &'a DemoResult,
    rounds: Option<f64>,
}

fn best_of<'a>(
    runs: &'a [(usize, Setting, DemoResult)],
    n: usize,
    target: f64,
    round_s: impl Fn(&Setting, &DemoResult) -> f64,
) -> Option<Best<'a>> {
    runs.iter()
        .filter(|(k, _, _)| *k == n)
        .map(|(_, s, r)| Best {
            n,
            setting: s,
            result: r,
            rounds: rounds_to_target(&r.eval_loss, target),
        })
        .min_by(|x, y| {
            let key = |b: &Best| {
                let wall = b
                    .rounds
                    .map_or(f64::INFINITY, |r| r * round_s(b.setting, b.result));
                (wall, b.result.final_loss())
            };
            let (kx, ky) = (key(x), key(y));
            kx.0.total_cmp(&ky.0).then(kx.1.total_cmp(&ky.1))
        })
}

/// Run the grid and write the markdown and SVGs.
///
/// Longer than 120 lines on purpose: it is the table's script, read top to bottom as the markdown
/// it writes (runs, then each section in order); cut into pieces, each would need the whole run
/// list and the reader would jump between them.
pub fn main(a: &Args) -> Result<()> {
    let started = Instant::now();
    if !a.workers.contains(&1) {
        bail!("--workers must include 1: the target and the speed-ups are taken from it");
    }
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-bench-speedup"));
    std::fs::create_dir_all(&work)?;
    // Step time first, on an idle machine.
    let (step_s, bench) = step_seconds(a, &work)?;
    eprintln!("  step time of one worker alone: {step_s:.4} s");
    let hs = if a.hs.is_empty() {
        vec![a.local_steps]
    } else {
        a.hs.clone()
    };
    if hs.contains(&0) {
        bail!("--hs: every H must be at least 1");
    }
    let settings: Vec<Setting> = hs
        .iter()
        .flat_map(|&h| {
            a.lrs.iter().flat_map(move |&lr| {
                a.outers.iter().map(move |o| Setting {
                    lr,
                    outer: o.clone(),
                    h,
                })
            })
        })
        .collect();
    let timeout = Duration::from_secs(a.run_timeout);
    let mut runs: Vec<(usize, Setting, DemoResult)> = Vec::new();
    for &n in &a.workers {
        for s in &settings {
            let tag = s.tag(n);
            let r = match DemoResult::saved(&work, &tag).filter(|_| a.reuse) {
                Some(r) => r,
                None => run(&spec(a, tag, n, s), &work, timeout)?,
            };
            runs.push((n, s.clone(), r));
        }
    }

    // The target: the lowest held-out loss one worker reaches in the step budget with its best setting.
    let target = runs
        .iter()
        .filter(|(n, _, _)| *n == 1)
        .map(|(_, _, r)| r.eval_loss.iter().copied().fold(f64::INFINITY, f64::min))
        .fold(f64::INFINITY, f64::min);
    let round_s = |s: &Setting, r: &DemoResult| {
        round_seconds(
            s.h,
            step_s,
            r.bytes_per_delta(),
            r.checkpoint_bytes as f64,
            a.up_mbit,
            a.down_mbit,
        )
    };
    let bests: Vec<Best> = a
        .workers
        .iter()
        .filter_map(|&n| best_of(&runs, n, target, round_s))
        .collect();
    let one = bests
        .iter()
        .find(|b| b.n == 1)
        .and_then(|b| b.rounds.map(|r| r * round_s(b.setting, b.result)));

    let model = if a.model.is_some() {
        "SmolLM2-135M"
    } else {
        "tiny preset"
    };
    let base = runs
        .first()
        .and_then(|(_, _, r)| r.eval_loss.first().copied())
        .unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# {}. Speed-up against N: time to a target loss ({model})\n",
        a.table
    );
    let _ = writeln!(
        md,
        "N workers, each training H local AdamW steps per round on its own shard (the data is cut into \
N shards), codec `{codec}`, for a budget of {budget} local steps per worker ({rounds} rounds of H = {h}), \
with every H in {{{hs}}}, every inner learning rate in {{{lrs}}} and every outer optimizer in {{{outers}}}. \
The target is the lowest held-out loss one worker reaches in that budget with its best setting: \
**{target:.4}** (base model {base:.4}). Each N is then taken with its own best setting (least wall time \
to the target). Rounds to the target are interpolated inside the round that crosses it. \
Wall time is what the rounds would take if every worker had its own device: H steps at the step time of \
one worker alone on this machine ({step:.4} s per step of batch {batch} × {seq} tokens, `hearth-worker \
bench`), plus one delta up at {up} Mbit/s and the checkpoint down at {down} Mbit/s per round; the \
coordinator's own work at the round's close is not counted. Workers are time-shared on this machine's \
cores while the swarms run, which changes no loss. Command (run time {{WALL}}):\n",
        h = a.local_steps,
        budget = a.rounds * u64::from(a.local_steps),
        hs = hs.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", "),
        codec = a.codec,
        rounds = a.rounds,
        lrs = a.lrs.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", "),
        outers = a.outers.join(", "),
        step = step_s,
        batch = bench["batch"].as_u64().unwrap_or(0),
        seq = bench["seq_len"].as_u64().unwrap_or(0),
        up = a.up_mbit,
        down = a.down_mbit,
    );
    let script = if a.model.is_some() {
        "bash tests/bench/3-speedup.sh --model ~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf ..."
    } else {
        "bash tests/bench/3-speedup.sh"
    };
    let _ = writeln!(md, "```\n{script}\n# runs: {}\n```\n", this_command());
    let mut t = Table::new(&[
        "workers",
        "best setting",
        "rounds to target",
        "held-out loss after the last round",
        "round time: compute + up + down",
        "wall time to target",
        "speed-up vs 1 worker",
        "ideal",
    ]);
    let mut speedups = Vec::new();
    for b in &bests {
        let rs = round_s(b.setting, b.result);
        let compute = f64::from(b.setting.h) * step_s;
        let wall = b.rounds.map(|r| r * rs);
        let speedup = match (one, wall) {
            (Some(o), Some(w)) if w > 0.0 => Some(o / w),
            _ => None,
        };
        if let Some(s) = speedup {
            speedups.push((b.n as f64, s));
        }
        t.row(vec![
            b.n.to_string(),
            b.setting.label(),
            b.rounds.map(|r| format!("{r:.1}")).unwrap_or_else(|| {
                format!(
                    "not in {}",
                    rounds_for(a.rounds, a.local_steps, b.setting.h)
                )
            }),
            format!("{:.4}", b.result.final_loss()),
            format!(
                "{:.2} s = {compute:.2} + {:.3} + {:.3}",
                rs,
                b.result.bytes_per_delta() * 8.0 / (a.up_mbit * 1e6),
                b.result.checkpoint_bytes as f64 * 8.0 / (a.down_mbit * 1e6)
            ),
            wall.map(|w| format!("{w:.1} s"))
                .unwrap_or_else(|| "–".into()),
            speedup
                .map(|s| format!("**{s:.2}×**"))
                .unwrap_or_else(|| "–".into()),
            format!("{}×", b.n),
        ]);
    }
    md.push_str(&t.render());

    // Every setting: rounds to the target per N.
    let _ = writeln!(
        md,
        "\nRounds (and wall time) to the target ({target:.4}) for every setting of the grid (– = not reached in the budget \
of {} local steps; held-out loss after the last round in brackets):\n",
        a.rounds * u64::from(a.local_steps)
    );
    let mut header = vec!["setting".to_string()];
    header.extend(
        a.workers
            .iter()
            .map(|n| format!("{n} worker{}", if *n == 1 { "" } else { "s" })),
    );
    let mut g = Table::new(&header);
    for s in &settings {
        let mut row = vec![s.label()];
        for &n in &a.workers {
            let cell = runs
                .iter()
                .find(|(k, x, _)| *k == n && x == s)
                .map(|(_, _, r)| {
                    let rounds = rounds_to_target(&r.eval_loss, target)
                        .map(|x| format!("{x:.1} = {:.1} s", x * round_s(s, r)))
                        .unwrap_or_else(|| "–".into());
                    let gated = r.outcomes.iter().filter(|o| *o != "committed").count();
                    format!(
                        "{rounds} ({:.3}){}",
                        r.final_loss(),
                        if gated > 0 {
                            format!(", {gated} gated")
                        } else {
                            String::new()
                        }
                    )
                })
                .unwrap_or_default();
            row.push(cell);
        }
        g.row(row);
    }
    md.push_str(&g.render());

    // Plots.
    let curves_end = bests
        .iter()
        .map(|b| b.result.eval_loss.len().saturating_sub(1) as f64 * round_s(b.setting, b.result))
        .fold(1.0, f64::max);
    let curves: Vec<Series> = bests
        .iter()
        .map(|b| {
            let rs = round_s(b.setting, b.result);
            Series {
                label: format!("{} × {}", b.n, b.setting.label()),
                points: b
                    .result
                    .eval_loss
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as f64 * rs, *l))
                    .collect(),
                dashed: false,
            }
        })
        .chain(std::iter::once(Series {
            label: format!("target {target:.3}"),
            points: vec![(0.0, target), (curves_end, target)],
            dashed: true,
        }))
        .collect();
    crate::write_output(
        &a.svg,
        &line_chart(
            &format!("Held-out loss against estimated wall time ({model})"),
            "seconds (every worker on its own device)",
            "held-out loss",
            &curves,
        ),
    )?;
    let n_path = a.svg.with_file_name(format!(
        "{}-n.svg",
        a.svg
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "speedup".into())
    ));
    let max_n = a.workers.iter().copied().max().unwrap_or(1) as f64;
    crate::write_output(
        &n_path,
        &line_chart(
            &format!("Speed-up to the target against N ({model})"),
            "workers",
            "speed-up (wall time of 1 / wall time of N)",
            &[
                Series {
                    label: "measured".into(),
                    points: speedups.clone(),
                    dashed: false,
                },
                Series {
                    label: "ideal (N)".into(),
                    points: vec![(1.0, 1.0), (max_n, max_n)],
                    dashed: true,
                },
                Series {
                    label: "target at 4 (2×)".into(),
                    points: vec![(4.0, 2.0), (4.0, 2.0)],
                    dashed: true,
                },
            ],
        ),
    )?;
    let file = |p: &Path| {
        p.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let _ = writeln!(
        md,
        "\n![held-out loss against estimated wall time]({})\n\n![speed-up against N]({})\n",
        file(&a.svg),
        file(&n_path)
    );
    let bytes = bests
        .first()
        .map(|b| {
            format!(
                "{} bytes up and {} bytes down per worker and round",
                thousands(b.result.bytes_per_delta().round() as u64),
                thousands(b.result.checkpoint_bytes)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(md, "Transfers: {bytes}.\n");
    let _ = writeln!(md, "## Reading\n");
    if let Some(s4) = speedups.iter().find(|(n, _)| *n == 4.0).map(|(_, s)| *s) {
        let _ = writeln!(
            md,
            "- 4 workers reach the target in {:.2}× less wall time than 1 worker (target: 2×): {}.",
            s4,
            if s4 >= 2.0 { "met" } else { "missed" }
        );
    }
    // The same setting at N = 1 and at the largest N: what adding workers alone buys.
    if let (Some(b1), Some(top)) = (bests.first(), bests.last()) {
        let at = |n: usize, s: &Setting| {
            runs.iter()
                .find(|(k, x, _)| *k == n && x == s)
                .map(|(_, _, r)| r.final_loss())
        };
        if let (Some(l1), Some(ln)) = (at(1, top.setting), at(top.n, top.setting)) {
            let _ = writeln!(
                md,
                "- With {}'s best setting ({}), one worker ends at {l1:.4} and {} workers at {ln:.4} \
after the budget; one worker's own best ({}) ends at {:.4}.",
                top.n,
                top.setting.label(),
                top.n,
                b1.setting.label(),
                b1.result.final_loss()
            );
        }
    }
    let reached = |outer: &str| {
        a.workers
            .iter()
            .filter(|&&n| {
                runs.iter().any(|(k, s, r)| {
                    *k == n && s.outer == outer && rounds_to_target(&r.eval_loss, target).is_some()
                })
            })
            .count()
    };
    let outers: Vec<String> = a
        .outers
        .iter()
        .map(|o| {
            format!(
                "`{o}` at {} of {} worker counts",
                reached(o),
                a.workers.len()
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "- The target is reached, with some learning rate of the grid, by {}.",
        outers.join(", ")
    );
    let wall = started.elapsed().as_secs_f64();
    let md = md.replace("{WALL}", &format!("{wall:.0} s on this machine"));
    crate::write_output(&a.out, &md)?;
    eprintln!(
        "table {} written to {} in {wall:.0} s",
        a.table,
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_target_interpolates_inside_the_crossing_round() {
        let l = [7.0, 6.0, 5.0, 4.0];
        assert_eq!(rounds_to_target(&l, 7.5), Some(0.0));
        assert_eq!(rounds_to_target(&l, 5.0), Some(2.0));
        assert_eq!(rounds_to_target(&l, 4.5), Some(2.5));
        assert_eq!(rounds_to_target(&l, 3.9), None);
        // The first crossing counts; a loss that rose in between is interpolated from.
        let l = [7.0, 6.0, 6.5, 5.0];
        let r = rounds_to_target(&l, 6.2).unwrap_or(f64::NAN);
        assert!((r - 0.8).abs() < 1e-9, "{r}");
        let r = rounds_to_target(&l, 5.5).unwrap_or(f64::NAN);
        assert!((r - (2.0 + 1.0 / 1.5)).abs() < 1e-9, "{r}");
    }

    #[test]
    fn every_h_gets_the_same_step_budget() {
        assert_eq!(rounds_for(30, 20, 20), 30);
        assert_eq!(rounds_for(30, 20, 10), 60);
        assert_eq!(rounds_for(30, 20, 40), 15);
        // A budget H does not divide is rounded up to a whole round.
        assert_eq!(rounds_for(30, 20, 7), 86);
    }

    #[test]
    fn round_seconds_adds_compute_and_both_transfers() {
        // 10 steps of 0.5 s, 2.5 MB up at 20 Mbit/s (1 s), 12.5 MB down at 100 Mbit/s (1 s).
        let s = round_seconds(10, 0.5, 2.5e6, 12.5e6, 20.0, 100.0);
        assert!((s - 7.0).abs() < 1e-9, "{s}");
    }
}
