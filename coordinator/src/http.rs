//! HTTP on the coordinator: dashboard, JSON API, checkpoint downloads and /metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};
use crate::status::{Snapshot, WorkerQuery, CHECKPOINT_FILES};

/// Leaderboard rows served when the query does not say.
const DEFAULT_LEADERS: usize = 10;
/// Most leaderboard rows served.
const MAX_LEADERS: usize = 100;

/// Query of `/api/leaderboard`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(default)]
struct LeaderQuery {
    limit: Option<usize>,
}

#[derive(Clone)]
struct AppState {
    snapshot: Arc<RwLock<Snapshot>>,
    metrics: Metrics,
    data_dir: PathBuf,
}

fn snap(s: &AppState) -> Snapshot {
    s.snapshot.read().map(|g| g.clone()).unwrap_or_default()
}

/// The router (exposed for tests).
pub fn router(snapshot: Arc<RwLock<Snapshot>>, metrics: Metrics, data_dir: PathBuf) -> Router {
    let state = AppState {
        snapshot,
        metrics,
        data_dir,
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(status))
        .route("/api/workers", get(workers))
        .route("/api/rounds", get(rounds))
        .route("/api/leaderboard", get(leaderboard))
        .route("/api/checkpoints/latest", get(latest))
        .route("/api/checkpoints/{round}/{file}", get(checkpoint_file))
        .with_state(state)
}

/// Serve HTTP on `addr` until the process ends; returns the bound address.
pub async fn serve(
    addr: &str,
    snapshot: Arc<RwLock<Snapshot>>,
    metrics: Metrics,
    data_dir: PathBuf,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(snapshot, metrics, data_dir);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("http server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(include_str!("dashboard.html")),
    )
        .into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!(snap(&s).status_view()))
}

/// Worker rows; `?sort=peer|tokens|name|last_seen&offset=N&limit=N`, total in `x-total-count`.
async fn workers(State(s): State<AppState>, Query(q): Query<WorkerQuery>) -> Response {
    let sn = snap(&s);
    (
        [("x-total-count", sn.workers.len().to_string())],
        Json(json!(sn.workers_page(&q))),
    )
        .into_response()
}

async fn rounds(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!(snap(&s).rounds))
}

/// The biggest contributors; `?limit=N` (default 10, at most 100).
async fn leaderboard(
    State(s): State<AppState>,
    Query(q): Query<LeaderQuery>,
) -> Json<serde_json::Value> {
    let n = q.limit.unwrap_or(DEFAULT_LEADERS).min(MAX_LEADERS);
    Json(json!(snap(&s).leaderboard(n)))
}

async fn latest(State(s): State<AppState>) -> Response {
    match snap(&s).latest_checkpoint() {
        Some(c) => Json(json!(c)).into_response(),
        None => (StatusCode::NOT_FOUND, "no checkpoint yet").into_response(),
    }
}

async fn checkpoint_file(
    State(s): State<AppState>,
    Path((round, file)): Path<(u64, String)>,
) -> Response {
    if !CHECKPOINT_FILES.contains(&file.as_str()) {
        return (StatusCode::NOT_FOUND, "no such checkpoint file").into_response();
    }
    let path = s
        .data_dir
        .join("checkpoints")
        .join(round.to_string())
        .join(&file);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let ct = if file.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            };
            let disposition = format!("attachment; filename=\"round-{round}-{file}\"");
            (
                [
                    (header::CONTENT_TYPE, ct.to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("round {round} has no {file}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::fixtures::sample;
    use crate::status::{LeaderRow, StatusView, WorkerView};
    use crate::status_cmd::ApiClient;

    async fn start(snapshot: Snapshot, dir: &std::path::Path) -> String {
        let bound = serve(
            "127.0.0.1:0",
            Arc::new(RwLock::new(snapshot)),
            Metrics::new().expect("metrics"),
            dir.to_path_buf(),
        )
        .await
        .expect("serve");
        format!("http://{bound}")
    }

    fn client(base: &str) -> ApiClient {
        ApiClient::new(base, Duration::from_secs(5)).expect("client")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_serves_the_snapshot_views() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = sample(30, 3);
        let base = start(snap.clone(), dir.path()).await;
        let expected = snap.status_view();
        tokio::task::spawn_blocking(move || {
            let c = client(&base);
            let status: StatusView = c.get_json("/api/status").unwrap().unwrap();
            assert_eq!(status, expected);
            // deploy/docker/worker-entrypoint.sh reads the coordinator's id from the only "peer_id".
            let raw = c.get_text("/api/status").unwrap().unwrap();
            assert_eq!(raw.matches("\"peer_id\"").count(), 1, "{raw}");
            let w: Vec<WorkerView> = c
                .get_json("/api/workers?sort=tokens&offset=1&limit=3")
                .unwrap()
                .unwrap();
            let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
            assert_eq!(names, ["worker-0028", "worker-0027", "worker-0026"]);
            let all: Vec<WorkerView> = c.get_json("/api/workers").unwrap().unwrap();
            assert_eq!(all.len(), 30);
            let lb: Vec<LeaderRow> = c.get_json("/api/leaderboard?limit=2").unwrap().unwrap();
            assert_eq!(lb.len(), 2);
            assert_eq!(lb[0].name, "worker-0029");
            let rounds: Vec<serde_json::Value> = c.get_json("/api/rounds").unwrap().unwrap();
            assert_eq!(rounds.len(), 3);
            let resp = ureq::get(&format!("{base}/api/workers?limit=1"))
                .call()
                .unwrap();
            assert_eq!(
                resp.headers()
                    .get("x-total-count")
                    .and_then(|v| v.to_str().ok()),
                Some("30")
            );
            // A malformed query is refused, not guessed.
            let err = c.get_text("/api/workers?limit=many").unwrap_err();
            assert!(err.to_string().contains("HTTP 400"), "{err}");
        })
        .await
        .expect("blocking client");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_download_only_listed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ck = dir.path().join("checkpoints").join("2");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join("adapter_config.json"), br#"{"r": 8}"#).unwrap();
        std::fs::write(dir.path().join("state.json"), b"secret").unwrap();
        let base = start(sample(0, 2), dir.path()).await;
        let empty = start(Snapshot::default(), dir.path()).await;
        tokio::task::spawn_blocking(move || {
            let c = client(&base);
            let latest: serde_json::Value = c.get_json("/api/checkpoints/latest").unwrap().unwrap();
            assert_eq!(latest["round"], 2);
            let body = c
                .get_text("/api/checkpoints/2/adapter_config.json")
                .unwrap();
            assert_eq!(body.as_deref(), Some(r#"{"r": 8}"#));
            assert!(c
                .get_text("/api/checkpoints/2/adapter_model.safetensors")
                .unwrap()
                .is_none());
            assert!(c
                .get_text("/api/checkpoints/2/state.json")
                .unwrap()
                .is_none());
            assert!(c
                .get_text("/api/checkpoints/2/..%2F..%2Fstate.json")
                .unwrap()
                .is_none());
            assert!(client(&empty)
                .get_json::<serde_json::Value>("/api/checkpoints/latest")
                .unwrap()
                .is_none());
        })
        .await
        .expect("blocking client");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dashboard_and_metrics_are_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = start(sample(1, 1), dir.path()).await;
        tokio::task::spawn_blocking(move || {
            let page = client(&base).get_text("/").unwrap().unwrap();
            assert!(page.contains(r#"<svg id="chart""#));
            // Everything the page needs is inline: no external scripts, styles or fonts.
            for external in ["src=\"http", "href=\"http", "<link", "@import"] {
                assert!(!page.contains(external), "the page loads {external}…");
            }
            let resp = ureq::get(&format!("{base}/metrics")).call().unwrap();
            assert_eq!(
                resp.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some(TEXT_CONTENT_TYPE)
            );
            let text = client(&base).get_text("/metrics").unwrap().unwrap();
            assert!(text.contains("# TYPE hearth_round gauge"), "{text}");
        })
        .await
        .expect("blocking client");
    }
}
