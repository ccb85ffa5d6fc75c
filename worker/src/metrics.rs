//! Prometheus metrics of a worker (`hearth_worker_` prefix), served on `--metrics ADDR`.
//!
//! The session calls [`WorkerMetrics::set_state`], [`WorkerMetrics::step_observer`],
//! [`WorkerMetrics::round_trained`] and [`WorkerMetrics::submitted`]; [`serve`] exposes the
//! registry at `/metrics` for Prometheus.

use std::net::SocketAddr;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hearth_model::{StepInfo, TrainReport};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The content type of the Prometheus text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What the worker is doing (exported one-hot as `hearth_worker_state{state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Connecting and asking to join.
    Joining,
    /// Downloading the model, shards or a checkpoint.
    Fetching,
    /// Local training steps.
    Training,
    /// Sending the delta.
    Submitting,
    /// Waiting for the next checkpoint.
    Waiting,
    /// Left the swarm.
    Stopped,
}

impl WorkerState {
    /// Every state, in lifecycle order.
    pub const ALL: [WorkerState; 6] = [
        WorkerState::Joining,
        WorkerState::Fetching,
        WorkerState::Training,
        WorkerState::Submitting,
        WorkerState::Waiting,
        WorkerState::Stopped,
    ];

    /// The `state` label value.
    pub fn label(self) -> &'static str {
        match self {
            WorkerState::Joining => "joining",
            WorkerState::Fetching => "fetching",
            WorkerState::Training => "training",
            WorkerState::Submitting => "submitting",
            WorkerState::Waiting => "waiting",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// How a delta submission ended (the `outcome` label of `hearth_worker_deltas_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Published by gossip (the coordinator's verdict is not reported back).
    Gossip,
    /// Sent directly and accepted.
    Accepted,
    /// Sent directly and rejected.
    Rejected,
    /// Not delivered.
    Failed,
}

impl SubmitOutcome {
    /// Every outcome.
    pub const ALL: [SubmitOutcome; 4] = [
        SubmitOutcome::Gossip,
        SubmitOutcome::Accepted,
        SubmitOutcome::Rejected,
        SubmitOutcome::Failed,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            SubmitOutcome::Gossip => "gossip",
            SubmitOutcome::Accepted => "accepted",
            SubmitOutcome::Rejected => "rejected",
            SubmitOutcome::Failed => "failed",
        }
    }
}

/// Every worker metric, registered in one registry.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    /// Seconds per optimizer step.
    pub step_seconds: Histogram,
    /// Training throughput: of the step in progress while training, else of the last round.
    pub tokens_per_second: Gauge,
    /// Loss of the last step.
    pub train_loss: Gauge,
    /// Mean loss of the last round.
    pub round_loss: Gauge,
    /// Delta bytes sent.
    pub bytes_sent: IntCounter,
    /// Rounds this worker trained and submitted a delta for.
    pub rounds_contributed: IntCounter,
    /// Tokens trained.
    pub tokens_trained: IntCounter,
    /// Optimizer steps taken.
    pub steps: IntCounter,
    /// Deltas by submission outcome.
    pub deltas: IntCounterVec,
    /// Round being worked on.
    pub round: IntGauge,
    /// One-hot state.
    pub state: IntGaugeVec,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerMetrics")
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: T,
) -> Result<T, prometheus::Error> {
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl WorkerMetrics {
    /// Create and register all metrics; every labelled series exists from the start at 0.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let m = Self {
            step_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("hearth_worker_step_seconds", "Seconds per optimizer step")
                        .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                )?,
            )?,
            tokens_per_second: reg(
                &r,
                Gauge::new(
                    "hearth_worker_tokens_per_second",
                    "Training tokens per second (current round while training, else the last)",
                )?,
            )?,
            train_loss: reg(
                &r,
                Gauge::new("hearth_worker_train_loss", "Training loss of the last step")?,
            )?,
            round_loss: reg(
                &r,
                Gauge::new(
                    "hearth_worker_round_loss",
                    "Mean training loss of the last round",
                )?,
            )?,
            bytes_sent: reg(
                &r,
                IntCounter::new("hearth_worker_bytes_sent_total", "Delta bytes sent")?,
            )?,
            rounds_contributed: reg(
                &r,
                IntCounter::new(
                    "hearth_worker_rounds_contributed_total",
                    "Rounds trained and submitted",
                )?,
            )?,
            tokens_trained: reg(
                &r,
                IntCounter::new("hearth_worker_tokens_trained_total", "Tokens trained")?,
            )?,
            steps: reg(
                &r,
                IntCounter::new("hearth_worker_steps_total", "Optimizer steps taken")?,
            )?,
            deltas: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("hearth_worker_deltas_total", "Deltas submitted, by outcome"),
                    &["outcome"],
                )?,
            )?,
            round: reg(
                &r,
                IntGauge::new("hearth_worker_round", "Round being worked on")?,
            )?,
            state: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("hearth_worker_state", "1 for the worker's current state"),
                    &["state"],
                )?,
            )?,
            registry: r,
        };
        for o in SubmitOutcome::ALL {
            m.deltas.with_label_values(&[o.label()]);
        }
        m.set_state(WorkerState::Joining);
        Ok(m)
    }

    /// Switch the one-hot state gauge.
    pub fn set_state(&self, state: WorkerState) {
        for s in WorkerState::ALL {
            self.state
                .with_label_values(&[s.label()])
                .set(i64::from(s == state));
        }
    }

    /// A training progress callback: step time, live tokens/s, step loss, step count.
    pub fn step_observer(&self) -> impl FnMut(&StepInfo) + Send + 'static {
        let m = self.clone();
        let mut last_seconds = 0.0f64;
        move |info: &StepInfo| {
            if info.step <= 1 {
                last_seconds = 0.0;
            }
            let dt = info.seconds - last_seconds;
            last_seconds = info.seconds;
            if dt.is_finite() && dt >= 0.0 {
                m.step_seconds.observe(dt);
            }
            if info.seconds > 0.0 {
                m.tokens_per_second.set(info.tokens as f64 / info.seconds);
            }
            if info.loss.is_finite() {
                m.train_loss.set(info.loss);
            }
            m.steps.inc();
        }
    }

    /// A round's local training finished.
    pub fn round_trained(&self, round: u64, report: &TrainReport) {
        self.round.set(i64::try_from(round).unwrap_or(i64::MAX));
        self.tokens_trained.inc_by(report.tokens as u64);
        if report.tokens_per_second.is_finite() {
            self.tokens_per_second.set(report.tokens_per_second);
        }
        if report.mean_loss.is_finite() {
            self.round_loss.set(report.mean_loss);
        }
    }

    /// A delta of `bytes` bytes was submitted with `outcome`.
    pub fn submitted(&self, bytes: usize, outcome: SubmitOutcome) {
        self.deltas.with_label_values(&[outcome.label()]).inc();
        if outcome != SubmitOutcome::Failed {
            self.bytes_sent.inc_by(bytes as u64);
            self.rounds_contributed.inc();
        }
    }

    /// Names of every metric family exported (histograms without their suffixes), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Serve `/metrics` on `addr` in the background; returns the bound address.
pub async fn serve(addr: &str, metrics: WorkerMetrics) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], m.render()).into_response() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, seconds: f64, tokens: usize, loss: f64) -> StepInfo {
        StepInfo {
            step,
            loss,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens,
            seconds,
        }
    }

    #[test]
    fn every_family_exists_from_the_start() {
        let m = WorkerMetrics::new().expect("metrics");
        assert_eq!(
            m.names(),
            [
                "hearth_worker_bytes_sent_total",
                "hearth_worker_deltas_total",
                "hearth_worker_round",
                "hearth_worker_round_loss",
                "hearth_worker_rounds_contributed_total",
                "hearth_worker_state",
                "hearth_worker_step_seconds",
                "hearth_worker_steps_total",
                "hearth_worker_tokens_per_second",
                "hearth_worker_tokens_trained_total",
                "hearth_worker_train_loss",
            ]
        );
        let text = m.render();
        assert!(
            text.contains(r#"hearth_worker_state{state="joining"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"hearth_worker_state{state="training"} 0"#));
        assert!(text.contains(r#"hearth_worker_deltas_total{outcome="rejected"} 0"#));
    }

    #[test]
    fn steps_rounds_and_submissions_are_counted() {
        let m = WorkerMetrics::new().expect("metrics");
        m.set_state(WorkerState::Training);
        let mut obs = m.step_observer();
        obs(&step(1, 0.5, 100, 3.0));
        obs(&step(2, 1.5, 200, 2.5));
        // A new round restarts the clock.
        obs(&step(1, 0.25, 100, 2.4));
        assert_eq!(m.steps.get(), 3);
        assert_eq!(m.step_seconds.get_sample_count(), 3);
        assert!((m.step_seconds.get_sample_sum() - 1.75).abs() < 1e-12);
        assert_eq!(m.train_loss.get(), 2.4);
        assert_eq!(m.tokens_per_second.get(), 400.0);

        let report = TrainReport {
            steps: 2,
            tokens: 200,
            target_tokens: 150,
            mean_loss: 2.75,
            last_loss: 2.5,
            seconds: 1.5,
            tokens_per_second: 133.0,
            skipped_steps: 0,
            stopped_by: hearth_model::train::StopReason::Steps,
        };
        m.round_trained(4, &report);
        m.submitted(1234, SubmitOutcome::Accepted);
        m.submitted(99, SubmitOutcome::Failed);
        assert_eq!(m.round.get(), 4);
        assert_eq!(m.tokens_trained.get(), 200);
        assert_eq!(m.round_loss.get(), 2.75);
        assert_eq!(m.tokens_per_second.get(), 133.0);
        assert_eq!(m.bytes_sent.get(), 1234);
        assert_eq!(m.rounds_contributed.get(), 1);
        assert_eq!(m.deltas.with_label_values(&["failed"]).get(), 1);
        m.set_state(WorkerState::Waiting);
        let text = m.render();
        assert!(text.contains(r#"hearth_worker_state{state="waiting"} 1"#));
        assert!(text.contains(r#"hearth_worker_state{state="training"} 0"#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = WorkerMetrics::new().expect("metrics");
        m.bytes_sent.inc_by(42);
        let addr = serve("127.0.0.1:0", m).await.expect("serve");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains("content-type: text/plain; version=0.0.4"));
        assert!(resp.contains("hearth_worker_bytes_sent_total 42"));
        assert!(serve("256.0.0.1:1", WorkerMetrics::new().expect("m"))
            .await
            .is_err());
    }
}
