//! Table 6: share of worker wall time spent training in the demo swarm, and where the rest goes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::demo_run::{start, DemoSpec};
use crate::md::{this_command, Table};
use crate::scrape::{Sampler, Usage, SAMPLE_EVERY};

/// Options of `utilisation`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Markdown file to write.
    #[arg(long, default_value = "docs/bench/6-utilisation.md")]
    pub out: PathBuf,
    /// Scratch directory for the swarms.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Workers in the swarm.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Rounds per swarm.
    #[arg(long, default_value_t = 4)]
    pub rounds: u64,
    /// Local steps per round of each configuration (comma-separated; 20 is the tiny preset's).
    #[arg(long, value_delimiter = ',', default_value = "20,100,400")]
    pub local_steps: Vec<u32>,
    /// Per-round time budgets in seconds (`run.train.time_budget_secs`, comma-separated) of further
    /// configurations in which every worker trains for the same wall time instead of a step count.
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    pub budgets: Vec<u64>,
    /// Seconds one swarm may take.
    #[arg(long, default_value_t = 900)]
    pub run_timeout: u64,
}

/// Local steps of a time-budget configuration: more than any worker reaches in its budget.
const UNREACHED_STEPS: u32 = 1_000_000;
/// DESIGN target for training time ÷ wall time.
const TARGET: f64 = 0.90;

/// Phases reported, in order: (state label, column text).
const PHASES: [(&str, &str); 5] = [
    ("joining", "join"),
    (
        "fetching",
        "startup (model, shards, model load) + checkpoint downloads",
    ),
    ("submitting", "delta encode + sign + upload"),
    ("waiting", "waiting for the round to close"),
    ("stopped", "stopped"),
];

/// A free base port with `n` free ports after it.
fn free_ports(n: usize) -> Result<u16> {
    for base in (20_000u16..60_000)
        .step_by(97)
        .skip((std::process::id() % 200) as usize)
    {
        let ok = (0..n).all(|i| {
            base.checked_add(i as u16)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if ok {
            return Ok(base);
        }
    }
    Err(anyhow!("no {n} consecutive free loopback ports"))
}

/// Seconds between the last accepted delta of a round and the round closing (coordinator side:
/// aggregation, held-out evaluation, checkpoint write), from the demo log.
fn close_seconds(log: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut last_accept: BTreeMap<u64, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let clean = strip_ansi(line);
        let Some(ts) = clean.split_whitespace().next().and_then(parse_ts) else {
            continue;
        };
        let round = clean
            .split_whitespace()
            .find_map(|w| w.strip_prefix("round="))
            .and_then(|r| r.parse::<u64>().ok());
        let Some(round) = round else { continue };
        if clean.contains("delta accepted") {
            last_accept.insert(round, ts);
        } else if clean.contains("round closed") {
            if let Some(a) = last_accept.get(&round) {
                out.push(ts - a);
            }
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_escape = false;
    for ch in s.chars() {
        match (in_escape, ch) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// Seconds of the day from an RFC 3339 timestamp such as `2026-11-27T21:08:05.303979Z`.
fn parse_ts(s: &str) -> Option<f64> {
    let time = s.split_once('T')?.1.trim_end_matches('Z');
    let mut it = time.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let sec: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

fn share(x: f64, wall: f64) -> String {
    if wall > 0.0 {
        format!("{:.1} %", 100.0 * x / wall)
    } else {
        "–".into()
    }
}

/// Sum of several workers' usage.
fn total(us: &[Usage]) -> Usage {
    let mut t = Usage::default();
    for u in us {
        t.wall += u.wall;
        t.step_seconds += u.step_seconds;
        t.steps += u.steps;
        for (k, v) in &u.states {
            *t.states.entry(k.clone()).or_default() += v;
        }
    }
    t
}

/// Run the table and write the markdown.
///
/// Longer than 120 lines on purpose: it is the table's script, read top to bottom as the markdown
/// it writes (runs, then each section in order); cut into pieces, each would need the whole run
/// list and the reader would jump between them.
pub fn main(a: &Args) -> Result<()> {
    let started = Instant::now();
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("hearth-bench-utilisation"));
    let mut rows = Vec::new();
    // (label, local steps, time budget): step counts first, then time budgets with a step count
    // no worker reaches.
    let configs: Vec<(String, u32, Option<u64>)> = a
        .local_steps
        .iter()
        .map(|&h| (format!("H = {h}"), h, None))
        .chain(
            a.budgets
                .iter()
                .map(|&b| (format!("{b} s budget"), UNREACHED_STEPS, Some(b))),
        )
        .collect();
    for (i, (label, h, budget)) in configs.iter().enumerate() {
        let port = free_ports(a.workers)?;
        let mut set = vec!["run.aggregate.deadline_secs=600".to_string()];
        if let Some(b) = budget {
            set.push(format!("run.train.time_budget_secs={b}"));
        }
        let spec = DemoSpec {
            tag: format!("util-{i}"),
            workers: a.workers,
            rounds: a.rounds,
            local_steps: *h,
            lr: 3e-3,
            codec: "topk:1/64:2".into(),
            outer: None,
            shards: 8,
            target_deltas: a.workers as u32,
            seed: 7,
            worker_metrics_port: Some(port),
            set,
            log: "info,libp2p=warn",
            model: None,
        };
        let running = start(&spec, &work)?;
        let samplers: Vec<Sampler> = (0..a.workers)
            .map(|w| Sampler::start(port + w as u16))
            .collect();
        let log = running.log.clone();
        let result = running.finish(Duration::from_secs(a.run_timeout))?;
        let usages: Vec<Usage> = samplers.into_iter().map(Sampler::finish).collect();
        let closes = close_seconds(&log);
        rows.push((label.clone(), spec, result, usages, closes));
    }

    let mut md = String::new();
    let _ = writeln!(md, "# 6. Utilisation\n");
    let _ = writeln!(
        md,
        "Share of worker wall time spent training in the demo swarm (tiny preset, {} workers time-shared on \
this machine's cores, {} rounds), and what the rest goes to. Each worker's `/metrics` (`demo \
--worker-metrics-port`) was sampled every {} ms: wall time runs from the worker's first to its last answer, \
each interval is counted to the state (`hearth_worker_state`) seen at its start, and \"optimizer steps\" is \
`hearth_worker_step_seconds_sum` (the time inside training steps; the rest of the `training` state is loading \
the checkpoint into the model and the trainer hand-off). DESIGN target: at least {:.0} % training. \
Command (run time {{WALL}}):\n",
        a.workers,
        a.rounds,
        SAMPLE_EVERY.as_millis(),
        TARGET * 100.0
    );
    let _ = writeln!(
        md,
        "```\nbash tests/bench/6-utilisation.sh\n# runs: {}\n```\n",
        this_command()
    );
    let mut header = vec![
        "round length".to_string(),
        "worker wall time (sum)".into(),
        "optimizer steps".into(),
        "other training-state time".into(),
    ];
    header.extend(PHASES.iter().map(|(_, name)| name.to_string()));
    header.push("coordinator close per round (last delta → checkpoint)".into());
    header.push("deltas accepted / rejected".into());
    let mut t = Table::new(&header);
    let mut shares = Vec::new();
    for (label, _, result, usages, closes) in &rows {
        let u = total(usages);
        let training_state = u.states.get("training").copied().unwrap_or(0.0);
        let mut row = vec![
            label.clone(),
            format!("{:.1} s", u.wall),
            format!("**{}**", share(u.step_seconds, u.wall)),
            share((training_state - u.step_seconds).max(0.0), u.wall),
        ];
        row.extend(
            PHASES
                .iter()
                .map(|(state, _)| share(u.states.get(*state).copied().unwrap_or(0.0), u.wall)),
        );
        let mean_close = closes.iter().sum::<f64>() / closes.len().max(1) as f64;
        row.push(if closes.is_empty() {
            "–".into()
        } else {
            format!("{mean_close:.2} s")
        });
        row.push(format!(
            "{} / {}",
            result.accepted.iter().sum::<u64>(),
            result.rejected.iter().sum::<u64>()
        ));
        shares.push((
            label.clone(),
            u.step_seconds / u.wall.max(1e-9),
            u,
            mean_close,
        ));
        t.row(row);
    }
    md.push_str(&t.render());

    let _ = writeln!(md, "\n## Reading\n");
    for (h, s, u, close) in &shares {
        let per_round_wait =
            u.states.get("waiting").copied().unwrap_or(0.0) / (a.workers as f64 * a.rounds as f64);
        let _ = writeln!(
            md,
            "- {h}: workers spent {:.1} % of their wall time in optimizer steps ({} the {:.0} % target); \
each waited {per_round_wait:.1} s per round for the round to close, of which the coordinator's own work after \
the last delta took {close:.2} s on average.",
            s * 100.0,
            if *s >= TARGET { "meets" } else { "misses" },
            TARGET * 100.0
        );
    }
    let _ = writeln!(
        md,
        "- Rounds are synchronous: a worker that finishes its H steps waits for the slowest worker, then for the \
coordinator to aggregate, evaluate and publish, then downloads the checkpoint. Time-sharing {} workers on \
this machine's cores makes their step times uneven, and startup (join, model load) is paid once per run, so \
utilisation grows with H and with the run's length.",
        a.workers
    );
    if !a.budgets.is_empty() {
        let _ = writeln!(
            md,
            "- With a time budget (`run.train.time_budget_secs`, the local step count set out of reach) every \
worker trains for the same wall time, so none waits for a slower one: a fast device does more steps \
(the coordinator weights deltas by tokens trained) and what is left is the coordinator's close and the \
checkpoint download. This is the setting for a swarm of uneven devices."
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let md = md.replace("{WALL}", &format!("{wall:.0} s on this machine"));
    crate::write_output(&a.out, &md)?;
    eprintln!("table 6 written to {} in {wall:.0} s", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_times_come_from_the_log() {
        let dir = std::env::temp_dir().join(format!("bench-swarm-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        std::fs::write(
            &log,
            "\u{1b}[2m2026-11-27T21:08:06.665550Z\u{1b}[0m INFO svc: delta accepted \u{1b}[3mround\u{1b}[0m\u{1b}[2m=\u{1b}[0m10 peer=a\n\
2026-11-27T21:08:06.700559Z INFO svc: delta accepted round=10 peer=b\n\
2026-11-27T21:08:11.661529Z INFO svc: round closed round=10 accepted=2\n\
2026-11-27T21:08:12.000000Z INFO svc: round closed round=11 accepted=0\n",
        )
        .unwrap();
        let c = close_seconds(&log);
        assert_eq!(c.len(), 1);
        assert!((c[0] - 4.96097).abs() < 1e-4, "{c:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_ts("2026-11-27T01:00:02.5Z"), Some(3602.5));
        assert_eq!(parse_ts("garbage"), None);
    }
}
