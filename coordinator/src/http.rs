//! HTTP on the coordinator: dashboard, JSON API, checkpoint downloads and /metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::Metrics;
use crate::status::Snapshot;

/// Files of a round's checkpoint directory that may be downloaded.
const CHECKPOINT_FILES: &[&str] = &[
    "adapter_model.safetensors",
    "adapter_config.json",
    "manifest.json",
];

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

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Json<serde_json::Value> {
    let sn = snap(&s);
    let latest = sn.checkpoints.last();
    Json(json!({
        "run_id": sn.run_id,
        "run_name": sn.run_name,
        "base_model": sn.base_model,
        "peer_id": sn.peer_id,
        "round": sn.round,
        "committed_round": sn.committed_round,
        "phase": sn.phase,
        "deadline_unix_ms": sn.deadline_unix_ms,
        "now_unix_ms": sn.now_unix_ms,
        "pending_deltas": sn.pending_deltas,
        "workers_connected": sn.workers_connected,
        "eval_loss": latest.and_then(|c| c.manifest.eval_loss),
        "latest_checkpoint": latest.map(|c| c.id.to_hex()),
        "recent_rejections": sn.recent_rejections,
    }))
}

async fn workers(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!(snap(&s).workers))
}

async fn rounds(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!(snap(&s).rounds))
}

async fn latest(State(s): State<AppState>) -> Response {
    match snap(&s).checkpoints.last() {
        Some(c) => Json(json!({
            "round": c.manifest.round,
            "id": c.id.to_hex(),
            "eval_loss": c.manifest.eval_loss,
            "train_loss": c.manifest.train_loss,
            "files": CHECKPOINT_FILES.iter().map(|f| format!("/api/checkpoints/{}/{f}", c.manifest.round)).collect::<Vec<_>>(),
        }))
        .into_response(),
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
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("round {round} has no {file}"),
        )
            .into_response(),
    }
}
