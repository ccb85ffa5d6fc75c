//! Watching the swarm: /metrics and the JSON API of a running swarm, the status command, the
//! dashboard in headless Chromium (live, with 0 and with 500 workers), and the deploy configs
//! (Prometheus, Grafana) checked against the metric names the binaries export.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hearth_coordinator::metrics::Metrics;
use hearth_coordinator::state::{CheckpointRecord, RoundRecord};
use hearth_coordinator::status::{Snapshot, WorkerView};
use hearth_proto::{CheckpointManifest, ContentId};
use hearth_tests::{
    bin, browser_required, chromium, count, dump_dom, element_attr, element_text, free_port,
    http_get, init_tiny, screenshot, set_toml, start_coordinator_http, start_worker_with, state,
    target_dir,
};
use hearth_worker::metrics::WorkerMetrics;
use prometheus_parse::{Scrape, Value};

/// Families the coordinator must export (DESIGN.md and the issue).
const COORDINATOR_FAMILIES: &[&str] = &[
    "hearth_round",
    "hearth_workers_connected",
    "hearth_deltas_total",
    "hearth_eval_loss",
    "hearth_train_loss",
    "hearth_tokens_trained_total",
    "hearth_bytes_received_total",
    "hearth_bytes_sent_total",
    "hearth_round_seconds",
    "hearth_verify_seconds",
    "hearth_aggregate_seconds",
];

/// Families a worker started with `--metrics` must export.
const WORKER_FAMILIES: &[&str] = &[
    "hearth_worker_step_seconds",
    "hearth_worker_tokens_per_second",
    "hearth_worker_train_loss",
    "hearth_worker_bytes_sent_total",
    "hearth_worker_rounds_contributed_total",
    "hearth_worker_state",
];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// Family names in a scrape, with histogram sample suffixes folded into the family.
fn families(s: &Scrape) -> BTreeSet<String> {
    s.samples
        .iter()
        .map(|x| {
            let n = x.metric.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| n.strip_suffix(suf).filter(|b| s.docs.contains_key(*b)))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .and_then(|x| match x.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

fn status_round(api: &str) -> u64 {
    let s: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{api}/api/status")).expect("status"))
            .expect("status JSON");
    s["round"].as_u64().expect("round")
}

/// `true` when a browser test can run; prints "skipped" and returns `false` when it cannot.
fn have_browser(test: &str) -> bool {
    if chromium().is_some() {
        return true;
    }
    assert!(
        !browser_required(),
        "HEARTH_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)"
    );
    println!("{test}: skipped (no chromium; install it with `apt-get install -y chromium`)");
    false
}

/// A coordinator and two workers (one with `--metrics`) run 3 rounds; then, with the swarm quiet:
/// /metrics parses and agrees with /api/status, `status` prints the swarm, the worker's metrics
/// moved, and headless Chromium shows the round, the workers and a drawn loss chart.
#[test]
fn a_running_swarm_can_be_watched() {
    let dir = tempfile::tempdir().unwrap();
    let config = init_tiny(dir.path(), |t| {
        let t = set_toml(t, "target_deltas", "2");
        set_toml(t, "deadline_secs", "60")
    })
    .unwrap();
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let api = format!("http://{http}");
    let log = dir.path().join("coordinator.log");
    let (_coord, addr) =
        start_coordinator_http(&config, "/ip4/127.0.0.1/tcp/0", &http, 0, &log).unwrap();
    let wm = format!("127.0.0.1:{}", free_port().unwrap());
    let mut w0 = start_worker_with(&addr, dir.path(), "w0", 3, &["--metrics", &wm]).unwrap();
    let mut w1 = start_worker_with(&addr, dir.path(), "w1", 3, &[]).unwrap();

    // While the swarm trains, scrape the worker: keep the scrape with the most rounds contributed.
    let started = Instant::now();
    let mut worker_scrape: Option<Scrape> = None;
    let mut worker_rounds = 0.0;
    loop {
        if let Ok(text) = http_get(&format!("http://{wm}/metrics")) {
            let s = parse(&text);
            let r = value(&s, "hearth_worker_rounds_contributed_total", None).unwrap_or(0.0);
            if worker_scrape.is_none() || r > worker_rounds {
                worker_rounds = r;
                worker_scrape = Some(s);
            }
        }
        let committed = state(&config)
            .ok()
            .and_then(|s| s["committed_round"].as_u64())
            .unwrap_or(0);
        let w0_gone = w0.child.try_wait().ok().flatten().is_some();
        if committed >= 3 && (worker_rounds >= 2.0 || w0_gone) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "round 3 not committed in 300 s; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    for w in [&mut w0, &mut w1] {
        let code = w.wait_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(code, 0, "{} failed", w.label);
    }

    // The worker's own metrics moved while it trained.
    let ws = worker_scrape.expect("the worker's /metrics answered at least once");
    let got = families(&ws);
    for f in WORKER_FAMILIES {
        assert!(got.contains(*f), "worker family {f} missing: {got:?}");
    }
    let step_count = value(&ws, "hearth_worker_step_seconds_count", None).unwrap_or(0.0);
    let tps = value(&ws, "hearth_worker_tokens_per_second", None).unwrap_or(0.0);
    let bytes = value(&ws, "hearth_worker_bytes_sent_total", None).unwrap_or(0.0);
    println!(
        "worker metrics: {worker_rounds} rounds contributed, {step_count} steps timed, {tps:.0} tokens/s, {bytes} delta bytes sent"
    );
    assert!(worker_rounds >= 1.0, "no round contributed in any scrape");
    assert!(step_count >= 1.0 && tps > 0.0 && bytes > 0.0);

    // The swarm is quiet now (workers gone, round 4 open): hearth_round equals /api/status's round.
    let mut agreed = None;
    for _ in 0..50 {
        let before = status_round(&api);
        let m = parse(&http_get(&format!("{api}/metrics")).unwrap());
        let after = status_round(&api);
        let metric = value(&m, "hearth_round", None).expect("hearth_round") as u64;
        if before == after && metric == before {
            agreed = Some((metric, m));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (round, m) = agreed.expect("hearth_round never equalled /api/status's round");
    let got = families(&m);
    for f in COORDINATOR_FAMILIES {
        assert!(got.contains(*f), "coordinator family {f} missing: {got:?}");
    }
    let accepted = value(&m, "hearth_deltas_total", Some(("outcome", "accepted"))).unwrap();
    let tokens = value(&m, "hearth_tokens_trained_total", None).unwrap();
    let eval = value(&m, "hearth_eval_loss", None).unwrap();
    println!("coordinator metrics: round {round}, {accepted} deltas accepted, {tokens} tokens, held-out loss {eval:.4}");
    assert!(
        round >= 4,
        "3 rounds committed, so round {round} should be ≥ 4"
    );
    assert!(accepted >= 6.0, "2 workers × 3 rounds, {accepted} accepted");
    assert!(tokens > 0.0 && eval.is_finite());

    // The status command, as JSON and as a table.
    let out = Command::new(bin("hearth-coordinator"))
        .args(["status", "--api", &api, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(j["status"]["round"].as_u64(), Some(round));
    assert_eq!(j["workers_total"].as_u64(), Some(2));
    assert_eq!(j["rounds"].as_array().map(Vec::len), Some(3));
    assert_eq!(j["checkpoint"]["round"].as_u64(), Some(3));
    assert!(j["status"]["tokens_per_second"].as_f64().unwrap_or(0.0) > 0.0);
    let out = Command::new(bin("hearth-coordinator"))
        .args(["status", "--api", &api])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(table.contains(&format!("round {round} ·")), "{table}");
    assert!(table.contains("WORKERS (2 of 2"), "{table}");
    assert!(table.contains("w0") && table.contains("w1"), "{table}");
    let bad = Command::new(bin("hearth-coordinator"))
        .args([
            "status",
            "--api",
            "http://127.0.0.1:1",
            "--timeout-secs",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );

    // A checkpoint file downloads as listed.
    let cfg = http_get(&format!("{api}/api/checkpoints/3/adapter_config.json")).unwrap();
    assert!(cfg.contains("\"peft_type\""), "{cfg}");

    if !have_browser("a_running_swarm_can_be_watched (browser part)") {
        return;
    }
    let dom = dump_dom(&format!("{api}/"), 6000).unwrap();
    assert_eq!(
        element_text(&dom, "round").as_deref(),
        Some(round.to_string().as_str()),
        "round on the page"
    );
    let rows = count(&dom, "<tr class=\"worker\"");
    let points: usize = element_attr(&dom, "eval-line", "data-points")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let path = element_attr(&dom, "eval-line", "d").unwrap_or_default();
    println!(
        "dashboard: round {round}, {rows} worker rows, held-out loss line of {points} points, {} leaderboard rows",
        count(&dom, "<tr class=\"leader\"")
    );
    assert_eq!(rows, 2, "worker rows");
    assert_eq!(points, 4, "rounds 0..=3 on the held-out line");
    assert_eq!(path.matches('L').count(), 3, "a drawn path: {path}");
    assert!(element_attr(&dom, "train-line", "d").is_some());
    assert!(dom.contains("href=\"/api/checkpoints/3/adapter_model.safetensors\""));
    assert_eq!(
        element_text(&dom, "base-model").as_deref(),
        Some("hearth/tiny-llama")
    );
    let shot = target_dir().join("dashboard.png");
    screenshot(&format!("{api}/"), &shot, 1280, 1400).unwrap();
    println!("screenshot: {}", shot.display());
}

fn synthetic(workers: usize, rounds: u64) -> Snapshot {
    let checkpoint = |round: u64| {
        let manifest = CheckpointManifest {
            round,
            parent: None,
            adapter: ContentId::of(&round.to_le_bytes()),
            adapter_bytes: 1,
            outer_state: None,
            eval_loss: Some(3.0 / (1.0 + round as f32)),
            train_loss: None,
            created_unix_ms: 1_700_000_000_000,
        };
        CheckpointRecord {
            id: manifest.id(),
            manifest,
        }
    };
    Snapshot {
        run_id: "synthetic".into(),
        run_name: "Synthetic crowd".into(),
        base_model: "SmolLM2-135M-Instruct".into(),
        peer_id: "12D3KooWcoordinator".into(),
        round: rounds + 1,
        committed_round: rounds,
        phase: "training".into(),
        deadline_unix_ms: 1_700_000_100_000,
        now_unix_ms: 1_700_000_000_000,
        workers_connected: workers,
        workers: (0..workers)
            .map(|i| WorkerView {
                peer_id: format!("12D3KooWsynthetic{i:05}"),
                name: format!("<b>volunteer-{i:03}</b>"),
                device: if i % 2 == 0 { "cpu" } else { "cuda:0" }.into(),
                connected: i % 7 != 0,
                last_seen_unix_ms: 1_700_000_000_000 - i as u64 * 1000,
                tokens: (i as u64 + 1) * 1000,
                accepted: i as u64,
                rejected: (i % 5) as u64,
                recent_credit: i as f64,
                banned: i == 3,
            })
            .collect(),
        rounds: (1..=rounds)
            .map(|r| RoundRecord {
                round: r,
                accepted: 400,
                rejected: 3,
                tokens: 1_000_000,
                train_loss: Some(3.2 / (1.0 + r as f32)),
                eval_loss: Some(3.0 / (1.0 + r as f32)),
                outcome: "committed".into(),
                note: None,
                seconds: 100.0,
                bytes_received: 1 << 20,
                closed_unix_ms: 1_700_000_000_000,
            })
            .collect(),
        checkpoints: (0..=rounds).map(checkpoint).collect(),
        recent_rejections: (0..50)
            .map(|i| {
                (
                    1_699_999_000_000 + i,
                    format!("12D3KooWsynthetic{i:05}"),
                    "norm".into(),
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn serve_snapshot(rt: &tokio::runtime::Runtime, snap: Snapshot) -> String {
    let dir = std::env::temp_dir();
    let bound = rt
        .block_on(hearth_coordinator::http::serve(
            "127.0.0.1:0",
            Arc::new(RwLock::new(snap)),
            Metrics::new().unwrap(),
            dir,
        ))
        .unwrap();
    format!("http://{bound}/")
}

/// The real router serving synthetic snapshots: with 500 workers the table shows one page of 25
/// rows with a pager, the leaderboard 10 rows, 20 rejections; names are shown as text, never as
/// markup. With no workers and no rounds the page says so instead of breaking.
#[test]
fn dashboard_is_readable_with_0_and_500_workers() {
    if !have_browser("dashboard_is_readable_with_0_and_500_workers") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = serve_snapshot(&rt, synthetic(500, 30));
    let dom = dump_dom(&url, 4000).unwrap();
    let rows = count(&dom, "<tr class=\"worker\"");
    let pager = element_text(&dom, "page-info").unwrap_or_default();
    println!(
        "500 workers: {rows} rows shown, pager {pager:?}, {} leaderboard rows, {} rejections",
        count(&dom, "<tr class=\"leader\""),
        count(&dom, "<li class=\"rejection\"")
    );
    assert_eq!(rows, 25);
    assert_eq!(pager, "1–25 of 500");
    assert_eq!(count(&dom, "<tr class=\"leader\""), 10);
    assert_eq!(count(&dom, "<li class=\"rejection\""), 20);
    assert_eq!(element_text(&dom, "nknown").as_deref(), Some("500"));
    // Sorted by tokens: volunteer-499 (500,000 tokens) leads; its name is text, not bold markup.
    assert!(dom.contains("&lt;b&gt;volunteer-499&lt;/b&gt;"));
    assert!(!dom.contains("<b>volunteer-"));
    assert_eq!(
        element_attr(&dom, "eval-line", "data-points").as_deref(),
        Some("31")
    );
    assert_eq!(element_text(&dom, "tps").as_deref(), Some("10,000"));
    screenshot(&url, &target_dir().join("dashboard-500.png"), 1280, 1600).unwrap();

    let empty = Snapshot {
        run_name: "Nobody yet".into(),
        ..synthetic(0, 0)
    };
    let url = serve_snapshot(&rt, empty);
    let dom = dump_dom(&url, 3000).unwrap();
    assert_eq!(count(&dom, "<tr class=\"worker\""), 0);
    assert_eq!(element_text(&dom, "round").as_deref(), Some("1"));
    assert_eq!(
        element_text(&dom, "run-name").as_deref(),
        Some("Nobody yet")
    );
    // The empty-table note is visible (not display: none); checkpoint 0 alone is one point.
    let note = dom
        .split("id=\"workers-empty\"")
        .nth(1)
        .and_then(|t| t.split('>').next())
        .unwrap_or_default();
    assert!(!note.contains("display: none"), "{note}");
    assert_eq!(
        element_attr(&dom, "eval-line", "data-points").as_deref(),
        Some("1")
    );
    assert_eq!(element_text(&dom, "tps").as_deref(), Some("0.0"));
}

/// `hearth_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_braces = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
            continue;
        }
        if !in_braces && cur.starts_with("hearth_") {
            out.push(std::mem::take(&mut cur));
        }
        cur.clear();
        match c {
            '{' => in_braces = true,
            '}' => in_braces = false,
            _ => {}
        }
    }
    out
}

fn grafana_exprs() -> Vec<String> {
    let path = workspace_root().join("deploy/grafana/hearth.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("hearth.json is JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push(e.to_string());
            }
        }
    }
    exprs
}

/// Every metric the Grafana dashboard queries is one the coordinator or worker registry exports
/// (histogram series `_bucket`/`_sum`/`_count` of an exported histogram), and every exported
/// family is charted somewhere. With promtool installed, every query also parses as PromQL.
#[test]
fn grafana_dashboard_uses_only_exported_metrics() {
    let exported: BTreeSet<String> = Metrics::new()
        .unwrap()
        .names()
        .into_iter()
        .chain(WorkerMetrics::new().unwrap().names())
        .collect();
    let known = |n: &str| {
        exported.contains(n)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| n.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    assert_eq!(
        metric_names("rate(hearth_x_bucket{le=\"1\", job=\"hearth_y\"}[5m]) / hearth_z"),
        ["hearth_x_bucket", "hearth_z"]
    );
    assert!(!known("hearth_nonexistent") && known("hearth_round_seconds_bucket"));

    let exprs = grafana_exprs();
    assert!(exprs.len() >= 15, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "query without a hearth metric: {e}");
        for n in names {
            assert!(
                known(&n),
                "{n} (in {e:?}) is not exported; exported: {exported:?}"
            );
            let fam = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(&n)
                .to_string();
            used.insert(fam);
        }
    }
    let unused: Vec<_> = exported.difference(&used).collect();
    println!(
        "grafana: {} queries over {} of {} exported families",
        exprs.len(),
        used.len(),
        exported.len()
    );
    assert!(unused.is_empty(), "exported but not charted: {unused:?}");

    // PromQL syntax: each query as a recording rule, checked by promtool.
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: grafana:panel_query:{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects a Grafana query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/promtool");
    if p.is_file() {
        return Some(p);
    }
    let required = std::env::var("HEARTH_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "HEARTH_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)"
    );
    println!("promtool checks skipped (apt-get install prometheus)");
    None
}

/// deploy/prometheus.yml passes `promtool check config` and scrapes the coordinator and workers.
#[test]
fn prometheus_config_passes_promtool() {
    let path = workspace_root().join("deploy/prometheus.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    for job in ["job_name: hearth-coordinator", "job_name: hearth-worker"] {
        assert!(text.contains(job), "{job} missing");
    }
    let Some(promtool) = promtool() else { return };
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}
