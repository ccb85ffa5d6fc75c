//! `hearth-coordinator status --api URL`: the swarm as a terminal table, or as JSON with `--json`.
//!
//! Reads the coordinator's JSON API over plain HTTP with `ureq` (blocking, no TLS, no async
//! runtime needed), with a timeout and a cap on every response body.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::state::RoundRecord;
use crate::status::{CheckpointView, LeaderRow, StatusView, WorkerView};

/// Largest API response read.
pub const MAX_API_BYTES: u64 = 32 << 20;
/// Rounds shown in the table.
const SHOWN_ROUNDS: usize = 10;
/// Rejections shown in the table.
const SHOWN_REJECTIONS: usize = 5;
/// Widest name or device cell.
const CELL_CHARS: usize = 24;

/// Arguments of `status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The coordinator's HTTP address, e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Worker rows to show (biggest contributors first).
    #[arg(long, default_value_t = 20)]
    pub workers: usize,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// Why the swarm could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The URL is not plain `http://`.
    #[error("API URL {0:?} must start with http:// (this client speaks plain HTTP)")]
    Url(String),
    /// Connection, timeout or body-size failure.
    #[error("GET {url}: {error}")]
    Http {
        /// What was asked.
        url: String,
        /// What went wrong (in the message, not as a chained source, so it prints once).
        error: Box<ureq::Error>,
    },
    /// A status other than 200 (or 404 where absence is allowed).
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// What was asked.
        url: String,
        /// The answer's status code.
        status: u16,
    },
    /// The body was not the JSON expected.
    #[error("GET {url}: not the JSON expected: {source}")]
    Json {
        /// What was asked.
        url: String,
        /// Parser message.
        source: serde_json::Error,
    },
}

/// Everything `status` shows, as read from the API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Swarm {
    /// `/api/status`.
    pub status: StatusView,
    /// The biggest contributors first, at most `--workers` rows.
    pub workers: Vec<WorkerView>,
    /// Workers the coordinator knows.
    pub workers_total: usize,
    /// `/api/leaderboard`.
    pub leaderboard: Vec<LeaderRow>,
    /// `/api/checkpoints/latest` (none before checkpoint 0).
    pub checkpoint: Option<CheckpointView>,
    /// `/api/rounds`, oldest first.
    pub rounds: Vec<RoundRecord>,
}

/// A blocking client of the coordinator's JSON API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`, a trailing `/` is fine).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, StatusError> {
        let trimmed = base.trim().trim_end_matches('/');
        if !trimmed.starts_with("http://") || trimmed.len() <= "http://".len() {
            return Err(StatusError::Url(base.to_string()));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            base: trimmed.to_string(),
        })
    }

    /// GET `path` as text, capped at [`MAX_API_BYTES`]; `None` on 404.
    pub fn get_text(&self, path: &str) -> Result<Option<String>, StatusError> {
        let url = format!("{}{path}", self.base);
        let http = |e: ureq::Error| StatusError::Http {
            url: url.clone(),
            error: Box::new(e),
        };
        let mut resp = self.agent.get(&url).call().map_err(http)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(StatusError::Status { url, status }),
        }
        resp.body_mut()
            .with_config()
            .limit(MAX_API_BYTES)
            .read_to_string()
            .map(Some)
            .map_err(http)
    }

    /// GET `path` as JSON; `None` on 404.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, StatusError> {
        match self.get_text(path)? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|source| StatusError::Json {
                        url: format!("{}{path}", self.base),
                        source,
                    })
            }
        }
    }

    fn require<T: DeserializeOwned>(&self, path: &str) -> Result<T, StatusError> {
        self.get_json(path)?.ok_or_else(|| StatusError::Status {
            url: format!("{}{path}", self.base),
            status: 404,
        })
    }

    /// Read the whole swarm view, with at most `max_workers` worker rows.
    pub fn fetch(&self, max_workers: usize) -> Result<Swarm, StatusError> {
        let status: StatusView = self.require("/api/status")?;
        let workers: Vec<WorkerView> = if max_workers == 0 {
            Vec::new()
        } else {
            self.require(&format!("/api/workers?sort=tokens&limit={max_workers}"))?
        };
        Ok(Swarm {
            workers_total: status.workers_known,
            workers,
            leaderboard: self.require("/api/leaderboard?limit=10")?,
            checkpoint: self.get_json("/api/checkpoints/latest")?,
            rounds: self.require("/api/rounds")?,
            status,
        })
    }
}

/// Printable form of an untrusted string: no control characters, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).count() > max {
        out.pop();
        out.push('…');
    }
    out
}

fn loss(v: Option<f32>) -> String {
    v.filter(|l| l.is_finite())
        .map(|l| format!("{l:.4}"))
        .unwrap_or_else(|| "-".into())
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        "never".into()
    } else {
        format!("{} ago", duration(now_ms.saturating_sub(then_ms)))
    }
}

fn short(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return clean(id, 16);
    }
    let head: String = chars.iter().take(8).collect();
    let tail: String = chars.iter().skip(chars.len() - 6).collect();
    clean(&format!("{head}…{tail}"), 16)
}

/// Columns laid out by character width; columns in `right` are right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w.saturating_sub(c.chars().count());
                if right.contains(&i) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The swarm as text tables.
pub fn render(sw: &Swarm) -> String {
    let mut out = render_header(sw);
    out.push_str(&render_rounds(sw));
    out.push_str(&render_workers(sw));
    out.push_str(&render_leaderboard(sw));
    out.push_str(&render_rejections(sw));
    out
}

/// The run, the open round, the losses and the latest checkpoint.
fn render_header(sw: &Swarm) -> String {
    let s = &sw.status;
    let mut out = String::new();
    out.push_str(&format!(
        "run {} ({}) · base model {} · coordinator {}\n",
        clean(&s.run_name, 64),
        clean(&s.run_id, 64),
        clean(&s.base_model, 64),
        short(&s.peer_id)
    ));
    out.push_str(&format!(
        "round {} · {} · {} left · {} deltas this round · workers {} connected / {} known\n",
        s.round,
        clean(&s.phase, 32),
        duration(s.time_left_ms),
        s.pending_deltas,
        s.workers_connected,
        s.workers_known
    ));
    out.push_str(&format!(
        "held-out loss {} (round 0: {}) · train loss {} · swarm {:.1} tokens/s · {} tokens in {} rounds\n",
        loss(s.eval_loss),
        loss(s.base_eval_loss),
        loss(s.train_loss),
        s.tokens_per_second,
        s.tokens_total,
        s.rounds_closed
    ));
    match &sw.checkpoint {
        Some(c) => out.push_str(&format!(
            "latest checkpoint: round {} · id {} · files {}\n",
            c.round,
            short(&c.id),
            c.files
                .iter()
                .map(|f| clean(f, 128))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        None => out.push_str("latest checkpoint: none yet\n"),
    }
    out
}

/// The last closed rounds.
fn render_rounds(sw: &Swarm) -> String {
    let mut out = String::new();
    let start = sw.rounds.len().saturating_sub(SHOWN_ROUNDS);
    let rounds: Vec<Vec<String>> = sw
        .rounds
        .get(start..)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                r.round.to_string(),
                loss(r.eval_loss),
                loss(r.train_loss),
                r.accepted.to_string(),
                r.rejected.to_string(),
                r.tokens.to_string(),
                format!("{:.1}", r.seconds),
                clean(&r.outcome, 16),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nROUNDS (last {} of {})\n",
        rounds.len(),
        sw.rounds.len()
    ));
    if rounds.is_empty() {
        out.push_str("no closed rounds yet\n");
    } else {
        out.push_str(&table(
            &[
                "round", "held-out", "train", "accepted", "rejected", "tokens", "seconds",
                "outcome",
            ],
            &rounds,
            &[0, 1, 2, 3, 4, 5, 6],
        ));
        out.push('\n');
    }
    out
}

/// The workers, most tokens first.
fn render_workers(sw: &Swarm) -> String {
    let mut out = String::new();
    let now = sw.status.now_unix_ms;
    let workers: Vec<Vec<String>> = sw
        .workers
        .iter()
        .map(|w| {
            vec![
                clean(&w.name, CELL_CHARS),
                short(&w.peer_id),
                clean(&w.device, CELL_CHARS),
                if w.banned {
                    "banned"
                } else if w.connected {
                    "connected"
                } else {
                    "away"
                }
                .to_string(),
                ago(w.last_seen_unix_ms, now),
                w.tokens.to_string(),
                w.accepted.to_string(),
                w.rejected.to_string(),
                format!("{:.1}", w.recent_credit),
            ]
        })
        .collect();
    out.push_str(&format!(
        "\nWORKERS ({} of {}, most tokens first)\n",
        workers.len(),
        sw.workers_total
    ));
    if workers.is_empty() {
        out.push_str("no workers yet\n");
    } else {
        out.push_str(&table(
            &[
                "name",
                "peer id",
                "device",
                "state",
                "last seen",
                "tokens",
                "accepted",
                "rejected",
                "credit",
            ],
            &workers,
            &[5, 6, 7, 8],
        ));
        out.push('\n');
    }
    out
}

/// The leaderboard, when there is one.
fn render_leaderboard(sw: &Swarm) -> String {
    let mut out = String::new();
    if !sw.leaderboard.is_empty() {
        let rows: Vec<Vec<String>> = sw
            .leaderboard
            .iter()
            .map(|r| {
                vec![
                    r.rank.to_string(),
                    clean(&r.name, CELL_CHARS),
                    r.tokens.to_string(),
                    format!("{:.1} %", 100.0 * r.share),
                ]
            })
            .collect();
        out.push_str("\nLEADERBOARD\n");
        out.push_str(&table(&["#", "name", "tokens", "share"], &rows, &[0, 2, 3]));
        out.push('\n');
    }
    out
}

/// The recent rejections.
fn render_rejections(sw: &Swarm) -> String {
    let mut out = String::new();
    let now = sw.status.now_unix_ms;
    let rejections = &sw.status.recent_rejections;
    out.push_str(&format!("\nREJECTIONS ({} recent)\n", rejections.len()));
    if rejections.is_empty() {
        out.push_str("none\n");
    }
    for r in rejections.iter().take(SHOWN_REJECTIONS) {
        let who = if r.name.is_empty() {
            short(&r.peer)
        } else {
            clean(&r.name, CELL_CHARS)
        };
        out.push_str(&format!(
            "{} {who}: {}\n",
            ago(r.time_unix_ms, now),
            clean(&r.reason, 200)
        ));
    }
    out
}

/// Run `status`: print the table (or JSON) to stdout.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api, Duration::from_secs(args.timeout_secs.max(1)))?;
    let swarm = client.fetch(args.workers)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&swarm)?);
    } else {
        print!("{}", render(&swarm));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixtures::sample;

    fn swarm(workers: usize, rounds: u64) -> Swarm {
        let s = sample(workers, rounds);
        Swarm {
            status: s.status_view(),
            workers: s.workers_page(&crate::status::WorkerQuery {
                sort: crate::status::WorkerSort::Tokens,
                offset: 0,
                limit: 20,
            }),
            workers_total: s.workers.len(),
            leaderboard: s.leaderboard(10),
            checkpoint: s.latest_checkpoint(),
            rounds: s.rounds.clone(),
        }
    }

    #[test]
    fn render_shows_round_workers_and_rejections() {
        let text = render(&swarm(500, 12));
        assert!(text.contains("round 13 · training · 30s left"), "{text}");
        assert!(
            text.contains("WORKERS (20 of 500, most tokens first)"),
            "{text}"
        );
        assert!(text.contains("worker-0499"));
        assert!(!text.contains("worker-0479"), "only the top 20 rows");
        assert!(text.contains("ROUNDS (last 10 of 12)"));
        assert!(text.contains("signature: forged"));
        assert!(text.contains("latest checkpoint: round 12"));
        // Columns line up: every worker row has the header's width or less.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("name "))
            .expect("worker header");
        let peer_col = lines[header].find("peer id").expect("peer id column");
        assert_eq!(lines[header + 1].find("12D3"), Some(peer_col));
    }

    #[test]
    fn render_is_readable_with_nothing() {
        let text = render(&Swarm::default());
        assert!(text.contains("no workers yet"));
        assert!(text.contains("no closed rounds yet"));
        assert!(text.contains("latest checkpoint: none yet"));
    }

    #[test]
    fn untrusted_text_is_cleaned_and_capped() {
        assert_eq!(clean("a\u{1b}[31mb\n", 10), "a[31mb");
        assert_eq!(clean("abcdefgh", 4), "abc…");
        assert_eq!(clean("abcd", 4), "abcd");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["a", "n"],
            &[
                vec!["xyz".into(), "5".into()],
                vec!["q".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "a      n\nxyz    5\nq    100");
    }

    #[test]
    fn bad_urls_and_dead_servers_are_errors() {
        assert!(matches!(
            ApiClient::new("https://x", Duration::from_secs(1)),
            Err(StatusError::Url(_))
        ));
        assert!(ApiClient::new("http://", Duration::from_secs(1)).is_err());
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let c = ApiClient::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2))
            .expect("client");
        let err = c.fetch(5).unwrap_err();
        assert!(matches!(err, StatusError::Http { .. }), "{err}");
        assert!(err.to_string().contains("/api/status"), "{err}");
    }
}
