//! Prometheus metrics of the coordinator (`hearth_` prefix).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The content type of the Prometheus text exposition format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Every coordinator metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Round in progress.
    pub round: IntGauge,
    /// Workers connected and joined.
    pub workers_connected: IntGauge,
    /// Deltas by outcome (accepted/rejected) and reason.
    pub deltas: IntCounterVec,
    /// Held-out loss of the latest checkpoint.
    pub eval_loss: Gauge,
    /// Mean training loss reported in the last closed round.
    pub train_loss: Gauge,
    /// Tokens trained in accepted deltas.
    pub tokens_trained: IntCounter,
    /// Bytes received (deltas, requests).
    pub bytes_received: IntCounter,
    /// Bytes sent (blobs, responses, announcements).
    pub bytes_sent: IntCounter,
    /// Round duration.
    pub round_seconds: Histogram,
    /// Time to verify one delta.
    pub verify_seconds: Histogram,
    /// Time to aggregate, step and evaluate at round close.
    pub aggregate_seconds: Histogram,
    /// Rounds whose update was gated by held-out loss.
    pub gated_rounds: IntCounter,
    /// Rounds in which the screen abstained (its reference carried no signal).
    pub screen_abstained: IntCounter,
    /// Failed writes to the data dir (checkpoint, state file, journal).
    pub storage_errors: IntCounter,
    /// 1 while rounds are halted because a checkpoint could not be written.
    pub halted: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // Registration only fails on duplicate names, which the fixed set below does not have.
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!("metric registration failed: {e}");
    }
    m
}

impl Metrics {
    /// Create and register all metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let buckets = |v: &[f64]| v.to_vec();
        let m = Self {
            round: reg(&r, IntGauge::new("hearth_round", "Round in progress")?),
            workers_connected: reg(
                &r,
                IntGauge::new("hearth_workers_connected", "Workers connected and joined")?,
            ),
            deltas: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "hearth_deltas_total",
                        "Deltas received by outcome and reason",
                    ),
                    &["outcome", "reason"],
                )?,
            ),
            eval_loss: reg(
                &r,
                Gauge::new("hearth_eval_loss", "Held-out loss of the latest checkpoint")?,
            ),
            train_loss: reg(
                &r,
                Gauge::new(
                    "hearth_train_loss",
                    "Mean worker training loss of the last round",
                )?,
            ),
            tokens_trained: reg(
                &r,
                IntCounter::new(
                    "hearth_tokens_trained_total",
                    "Tokens trained in accepted deltas",
                )?,
            ),
            bytes_received: reg(
                &r,
                IntCounter::new("hearth_bytes_received_total", "Bytes received from workers")?,
            ),
            bytes_sent: reg(
                &r,
                IntCounter::new("hearth_bytes_sent_total", "Bytes sent to workers")?,
            ),
            round_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("hearth_round_seconds", "Round duration").buckets(buckets(
                        &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0],
                    )),
                )?,
            ),
            verify_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("hearth_verify_seconds", "Time to verify one delta")
                        .buckets(buckets(&[1e-4, 1e-3, 5e-3, 0.02, 0.1, 0.5, 2.0])),
                )?,
            ),
            aggregate_seconds: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hearth_aggregate_seconds",
                        "Aggregation, outer step and evaluation at round close",
                    )
                    .buckets(buckets(&[0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0])),
                )?,
            ),
            gated_rounds: reg(
                &r,
                IntCounter::new(
                    "hearth_gated_rounds_total",
                    "Rounds whose update was rejected by the held-out gate",
                )?,
            ),
            screen_abstained: reg(
                &r,
                IntCounter::new(
                    "hearth_screen_abstained_rounds_total",
                    "Rounds in which the screen judged no delta: the round's median alignment was below 3.09",
                )?,
            ),
            storage_errors: reg(
                &r,
                IntCounter::new(
                    "hearth_storage_errors_total",
                    "Failed writes to the data dir (checkpoint, state file, journal)",
                )?,
            ),
            halted: reg(
                &r,
                IntGauge::new(
                    "hearth_halted",
                    "1 while no new round opens because a checkpoint could not be written",
                )?,
            ),
            registry: r,
        };
        // Series that exist from the start, so dashboards and scrapers see the family at 0.
        m.deltas.with_label_values(&["accepted", "ok"]);
        Ok(m)
    }

    /// Names of every metric family this registry exports (histograms without their
    /// `_bucket`/`_sum`/`_count` suffixes), sorted.
    pub fn names(&self) -> Vec<String> {
        family_names(&self.registry)
    }

    /// Count a delta outcome.
    pub fn delta(&self, outcome: &str, reason: &str) {
        self.deltas.with_label_values(&[outcome, reason]).inc();
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

/// Names of the metric families `registry` exports now, sorted (a label vector appears once it has
/// a series: pre-create the ones dashboards rely on).
pub fn family_names(registry: &Registry) -> Vec<String> {
    let mut names: Vec<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_from_the_start() {
        let m = Metrics::new().expect("metrics");
        let names = m.names();
        for n in [
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
            "hearth_gated_rounds_total",
            "hearth_screen_abstained_rounds_total",
            "hearth_storage_errors_total",
            "hearth_halted",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert_eq!(names.len(), 15, "{names:?}");
    }

    #[test]
    fn render_shows_values_and_labels() {
        let m = Metrics::new().expect("metrics");
        m.round.set(7);
        m.delta("rejected", "norm");
        m.delta("rejected", "norm");
        m.round_seconds.observe(3.0);
        let text = m.render();
        assert!(text.contains("hearth_round 7\n"), "{text}");
        assert!(text.contains(r#"hearth_deltas_total{outcome="rejected",reason="norm"} 2"#));
        assert!(text.contains(r#"hearth_deltas_total{outcome="accepted",reason="ok"} 0"#));
        assert!(text.contains(r#"hearth_round_seconds_bucket{le="5"} 1"#));
        assert!(text.contains("hearth_round_seconds_count 1\n"));
    }
}
