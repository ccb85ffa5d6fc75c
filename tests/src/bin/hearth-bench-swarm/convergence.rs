//! Table 3: held-out loss per round with N = 1, 2, 4, 8 workers against one worker doing the same
//! total steps; outer optimizer (Nesterov vs plain averaging) and local steps H.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::demo_run::{run, DemoResult, DemoSpec};
use crate::md::{pct, this_command, Table};
use crate::svg::{line_chart, Series};

/// Options of `convergence`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Markdown file to write.
    #[arg(long, default_value = "docs/bench/3-convergence.md")]
    pub out: PathBuf,
    /// SVG plot of the worker counts (a second plot, `-settings.svg`, shows the outer/H variants).
    #[arg(long, default_value = "docs/bench/3-convergence.svg")]
    pub svg: PathBuf,
    /// Scratch directory for the swarms.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Worker counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Worker count of the outer-optimizer and H variants.
    #[arg(long, default_value_t = 4)]
    pub variant_workers: usize,
    /// Rounds per swarm.
    #[arg(long, default_value_t = 6)]
    pub rounds: u64,
    /// Local steps per round (H).
    #[arg(long, default_value_t = 20)]
    pub local_steps: u32,
    /// Inner learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f32,
    /// Codec of the swarms (f32 isolates the algorithm from compression, which table 2 measures).
    #[arg(long, default_value = "f32")]
    pub codec: String,
    /// Codec of one more `variant_workers` run (the default codec; empty = skip).
    #[arg(long, default_value = "topk:1/64:2")]
    pub variant_codec: String,
    /// Seconds one swarm may take.
    #[arg(long, default_value_t = 900)]
    pub run_timeout: u64,
}

/// DESIGN target: N workers within this of one worker doing the same total steps.
const TARGET: f64 = 0.02;

#[derive(Debug, Clone)]
struct Config {
    name: String,
    workers: usize,
    local_steps: u32,
    outer: Option<String>,
    codec: String,
    baseline: bool,
    /// Micro-batches per optimizer step (the large-batch baseline).
    accum: usize,
}

impl Config {
    fn steps_per_round(&self) -> u64 {
        self.workers as u64 * u64::from(self.local_steps)
    }

    /// The single-worker baseline with the same optimizer steps per round (batch 4).
    fn same_steps(&self, other: &Config) -> bool {
        other.baseline && other.accum == 1 && other.steps_per_round() == self.steps_per_round()
    }

    /// The single-worker baseline with the same tokens per round in H steps of N× the batch.
    fn same_tokens(&self, other: &Config) -> bool {
        other.baseline && other.accum == self.workers && other.local_steps == self.local_steps
    }
}

fn spec(a: &Args, i: usize, c: &Config) -> DemoSpec {
    DemoSpec {
        tag: format!("conv-{i}"),
        workers: c.workers,
        rounds: a.rounds,
        local_steps: c.local_steps,
        lr: a.lr,
        codec: c.codec.clone(),
        outer: c.outer.clone(),
        shards: c.workers,
        target_deltas: c.workers as u32,
        seed: 7,
        worker_metrics_port: None,
        set: {
            let mut s = vec!["run.aggregate.deadline_secs=300".to_string()];
            if c.accum > 1 {
                s.push(format!("run.train.grad_accum={}", c.accum));
            }
            s
        },
        log: "warn",
        model: None,
    }
}

/// One worker, all data, f32 deltas and `average:1`: the checkpoint after each round is exactly
/// the worker's own weights, so this is plain AdamW for `steps` steps per round.
fn single(steps: u32) -> Config {
    Config {
        name: format!("1 worker × {steps} steps (baseline)"),
        workers: 1,
        local_steps: steps,
        outer: Some("average:1".into()),
        codec: "f32".into(),
        baseline: true,
        accum: 1,
    }
}

/// One worker taking `steps` steps per round of `n`× the batch: the tokens of `n` workers, as
/// synchronous data-parallel training would take them.
fn large_batch(steps: u32, n: usize) -> Config {
    Config {
        name: format!("1 worker × {steps} steps of batch ×{n} (baseline)"),
        accum: n,
        ..single(steps)
    }
}

/// Add the two baselines of swarm `c` unless already there.
fn add_baselines(configs: &mut Vec<Config>, c: &Config) {
    if !configs.iter().any(|b| c.same_steps(b)) {
        configs.push(single(c.workers as u32 * c.local_steps));
    }
    if c.workers > 1 && !configs.iter().any(|b| c.same_tokens(b)) {
        configs.push(large_batch(c.local_steps, c.workers));
    }
}

/// Run the table and write the markdown and SVGs.
///
/// Longer than 120 lines on purpose: it is the table's script, read top to bottom as the markdown
/// it writes (runs, then each section in order); cut into pieces, each would need the whole run
/// list and the reader would jump between them.
pub fn main(a: &Args) -> Result<()> {
    let started = Instant::now();
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-bench-convergence"));
    let h = a.local_steps;
    let mut configs = Vec::new();
    for &n in &a.workers {
        configs.push(Config {
            name: format!("{n} worker{} × H={h}", if n == 1 { "" } else { "s" }),
            workers: n,
            local_steps: h,
            outer: None,
            codec: a.codec.clone(),
            baseline: false,
            accum: 1,
        });
        let c = configs[configs.len() - 1].clone();
        add_baselines(&mut configs, &c);
    }
    let v = a.variant_workers;
    configs.push(Config {
        name: format!("{v} workers × H={h}, plain averaging"),
        workers: v,
        local_steps: h,
        outer: Some("average:1".into()),
        codec: a.codec.clone(),
        baseline: false,
        accum: 1,
    });
    if !a.variant_codec.is_empty() && a.variant_codec != a.codec {
        configs.push(Config {
            name: format!("{v} workers × H={h}, codec {}", a.variant_codec),
            workers: v,
            local_steps: h,
            outer: None,
            codec: a.variant_codec.clone(),
            baseline: false,
            accum: 1,
        });
    }
    for hv in [h / 2, h * 2] {
        if hv == 0 {
            continue;
        }
        configs.push(Config {
            name: format!("{v} workers × H={hv}"),
            workers: v,
            local_steps: hv,
            outer: None,
            codec: a.codec.clone(),
            baseline: false,
            accum: 1,
        });
        let c = configs[configs.len() - 1].clone();
        add_baselines(&mut configs, &c);
    }

    let timeout = Duration::from_secs(a.run_timeout);
    let mut results: Vec<(Config, DemoResult)> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        results.push((c.clone(), run(&spec(a, i, c), &work, timeout)?));
    }
    let baseline_for = |c: &Config, pick: fn(&Config, &Config) -> bool| {
        results
            .iter()
            .find(|(b, _)| pick(c, b))
            .map(|(_, r)| r.final_loss())
    };

    let mut md = String::new();
    let _ = writeln!(md, "# 3. Convergence\n");
    let first = &results[0].1;
    let _ = writeln!(
        md,
        "Held-out loss per round of the demo task (tiny preset) with N workers, each training H local AdamW \
steps (lr {}) per round on its own shard (the data is cut into N shards, so every run sees all of it), \
against one worker doing the same total steps per round on all the data (f32 deltas, outer `average:1`: \
exactly sequential AdamW). Swarms use the {} codec and the default outer optimizer ({}) unless the row \
says otherwise. Workers are time-shared on this machine's cores. DESIGN target: within {:.0} % of the \
single worker after R rounds. Base-model held-out loss {:.4}. Command (run time {{WALL}}):\n",
        a.lr,
        a.codec,
        first.outer,
        TARGET * 100.0,
        first.eval_loss[0]
    );
    let _ = writeln!(
        md,
        "```\nbash tests/bench/3-convergence.sh\n# runs: {}\n```\n",
        this_command()
    );
    let mut header = vec!["run".to_string(), "steps per round (all workers)".into()];
    header.extend((1..=a.rounds).map(|r| format!("round {r}")));
    header.extend([
        "vs 1 worker, same steps".to_string(),
        "vs 1 worker, same tokens (H steps, batch ×N)".into(),
        "within 2 % (steps / tokens)".into(),
        "deltas accepted".into(),
    ]);
    let mut t = Table::new(&header);
    let mut verdicts = Vec::new();
    let mut tokens_verdicts = Vec::new();
    for (c, r) in &results {
        let mut row = vec![c.name.clone(), c.steps_per_round().to_string()];
        row.extend((1..=a.rounds as usize).map(|i| {
            r.eval_loss
                .get(i)
                .map(|l| format!("{l:.3}"))
                .unwrap_or_default()
        }));
        if c.baseline {
            row.extend(["–".to_string(), "–".into(), "–".into()]);
        } else {
            let gap = |pick| baseline_for(c, pick).map(|b| (r.final_loss() - b) / b);
            let steps = gap(Config::same_steps);
            let tokens = if c.workers == 1 {
                steps
            } else {
                gap(Config::same_tokens)
            };
            let ok = |g: Option<f64>| match g {
                Some(g) if g <= TARGET => "yes",
                Some(_) => "no",
                None => "–",
            };
            verdicts.push((c.clone(), steps, steps.map(|g| g <= TARGET)));
            tokens_verdicts.push((c.clone(), tokens, tokens.map(|g| g <= TARGET)));
            row.push(steps.map(pct).unwrap_or_else(|| "–".into()));
            row.push(tokens.map(pct).unwrap_or_else(|| "–".into()));
            row.push(format!("{} / {}", ok(steps), ok(tokens)));
        }
        row.push(format!(
            "{}{}",
            r.accepted.iter().sum::<u64>(),
            match r.outcomes.iter().filter(|o| *o != "committed").count() {
                0 => String::new(),
                k => format!(" ({k} rounds gated or carried)"),
            }
        ));
        t.row(row);
    }
    md.push_str(&t.render());

    // Plots.
    let series = |pick: &dyn Fn(&Config) -> bool| -> Vec<Series> {
        results
            .iter()
            .filter(|(c, _)| pick(c))
            .map(|(c, r)| Series {
                label: c.name.replace(" (baseline)", ""),
                points: r
                    .eval_loss
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as f64, *l))
                    .collect(),
                dashed: c.baseline,
            })
            .collect()
    };
    let main_svg = line_chart(
        "Held-out loss: N workers (solid) vs 1 worker (dashed)",
        "round",
        "held-out loss",
        &series(&|c: &Config| {
            let main_run =
                !c.baseline && c.local_steps == h && c.outer.is_none() && c.codec == a.codec;
            let steps_base =
                c.accum == 1 && a.workers.iter().any(|n| *n as u32 * h == c.local_steps);
            let tokens_base = c.accum > 1 && c.local_steps == h;
            main_run || c.baseline && (steps_base || tokens_base)
        }),
    );
    crate::write_output(&a.svg, &main_svg)?;
    let settings_path = a.svg.with_file_name(format!(
        "{}-settings.svg",
        a.svg
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "convergence".into())
    ));
    let settings_svg = line_chart(
        &format!("{v} workers: outer optimizer and local steps H"),
        "round",
        "held-out loss",
        &series(&|c: &Config| !c.baseline && c.workers == v),
    );
    crate::write_output(&settings_path, &settings_svg)?;
    let file = |p: &PathBuf| {
        p.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let _ = writeln!(
        md,
        "\n![held-out loss per round, N workers vs one worker]({})\n\n![outer optimizer and H]({})\n",
        file(&a.svg),
        file(&settings_path)
    );

    let _ = writeln!(md, "## Reading\n");
    for (what, vs) in [
        ("one worker doing the same total steps", &verdicts),
        (
            "one worker taking the same tokens in H steps of N× the batch (synchronous data parallel)",
            &tokens_verdicts,
        ),
    ] {
        let held: Vec<_> = vs.iter().filter(|v| v.2 == Some(true)).collect();
        let missed: Vec<_> = vs.iter().filter(|v| v.2 == Some(false)).collect();
        let _ = writeln!(
            md,
            "- Against {what}, the {:.0} % target holds for {} of {} swarm configurations{}.",
            TARGET * 100.0,
            held.len(),
            held.len() + missed.len(),
            if missed.is_empty() {
                String::new()
            } else {
                format!(
                    "; missed by {}",
                    missed
                        .iter()
                        .map(|(c, g, _)| format!("{} ({})", c.name, g.map(pct).unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let _ = writeln!(
        md,
        "- Averaging N deltas trained from the same checkpoint on data of one distribution lowers their noise \
but does not add up their progress: per round, N workers × H steps move about as far as one worker taking \
H steps of N× the batch (the same tokens), not as far as one worker taking N·H sequential steps. The \
same-tokens comparison is the one DiLoCo makes; the same-steps target of DESIGN.md cannot hold for N > 1 \
until the single worker's loss flattens."
    );
    let final_of = |pred: &dyn Fn(&Config) -> bool| {
        results
            .iter()
            .find(|(c, _)| pred(c))
            .map(|(_, r)| r.final_loss())
    };
    if let (Some(nest), Some(avg)) = (
        final_of(&|c: &Config| {
            !c.baseline
                && c.workers == v
                && c.local_steps == h
                && c.outer.is_none()
                && c.codec == a.codec
        }),
        final_of(&|c: &Config| {
            !c.baseline && c.workers == v && c.outer.as_deref() == Some("average:1")
        }),
    ) {
        let _ = writeln!(
            md,
            "- Outer optimizer, {v} workers, H={h}: Nesterov {nest:.4} vs plain averaging (lr 1) {avg:.4} \
after {} rounds ({} for averaging); the lower one is the better default on this task.",
            a.rounds,
            pct((avg - nest) / nest)
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let md = md.replace("{WALL}", &format!("{wall:.0} s on this machine"));
    crate::write_output(&a.out, &md)?;
    eprintln!("table 3 written to {} in {wall:.0} s", a.out.display());
    Ok(())
}
