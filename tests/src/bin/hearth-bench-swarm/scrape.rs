//! Samples a worker's `/metrics` while it runs and integrates the time spent in each state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a worker is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Which `hearth_worker_state` is 1.
    pub state: String,
    /// `hearth_worker_step_seconds_sum`: seconds inside optimizer steps so far.
    pub step_seconds: f64,
    /// `hearth_worker_steps_total`.
    pub steps: f64,
}

/// Reads the fields of [`Sample`] from Prometheus text; None when the state is missing.
pub fn parse_sample(text: &str) -> Option<Sample> {
    let mut state = None;
    let mut step_seconds = 0.0;
    let mut steps = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = match value.trim().parse() {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(rest) = name.strip_prefix("hearth_worker_state{state=\"") {
            if value == 1.0 {
                state = rest.strip_suffix("\"}").map(str::to_string);
            }
        } else if name == "hearth_worker_step_seconds_sum" {
            step_seconds = value;
        } else if name == "hearth_worker_steps_total" {
            steps = value;
        }
    }
    Some(Sample {
        state: state?,
        step_seconds,
        steps,
    })
}

/// Where one worker's wall time went.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Seconds from the first to the last successful scrape.
    pub wall: f64,
    /// Seconds per state (each interval counted to the state seen at its start).
    pub states: BTreeMap<String, f64>,
    /// Seconds inside optimizer steps.
    pub step_seconds: f64,
    /// Optimizer steps.
    pub steps: f64,
}

/// Integrate timed samples into a [`Usage`].
pub fn integrate(samples: &[(Instant, Sample)]) -> Usage {
    let mut u = Usage::default();
    for w in samples.windows(2) {
        let dt = w[1].0.duration_since(w[0].0).as_secs_f64();
        *u.states.entry(w[0].1.state.clone()).or_default() += dt;
        u.wall += dt;
    }
    if let Some((_, last)) = samples.last() {
        u.step_seconds = last.step_seconds;
        u.steps = last.steps;
    }
    u
}

/// A background sampler of one worker's metrics endpoint.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(Instant, Sample)>>,
}

impl Sampler {
    /// Start sampling `http://127.0.0.1:port/metrics`; it ends by itself once the worker is gone.
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build(),
            );
            let url = format!("http://127.0.0.1:{port}/metrics");
            let mut samples = Vec::new();
            let mut failures_after_first = 0;
            while !flag.load(Ordering::Relaxed) {
                let body = agent
                    .get(&url)
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok());
                match body.as_deref().and_then(parse_sample) {
                    Some(s) => {
                        failures_after_first = 0;
                        samples.push((Instant::now(), s));
                    }
                    None if !samples.is_empty() => {
                        failures_after_first += 1;
                        if failures_after_first >= 10 {
                            break;
                        }
                    }
                    None => {}
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            samples
        });
        Self { stop, handle }
    }

    /// Stop (if still running) and integrate.
    pub fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        integrate(&self.handle.join().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP hearth_worker_state 1 for the worker's current state\n\
hearth_worker_state{state=\"fetching\"} 0\n\
hearth_worker_state{state=\"training\"} 1\n\
hearth_worker_step_seconds_sum 12.5\n\
hearth_worker_step_seconds_count 40\n\
hearth_worker_steps_total 40\n";

    #[test]
    fn parses_state_and_step_time() {
        let s = parse_sample(TEXT).unwrap();
        assert_eq!(s.state, "training");
        assert_eq!(s.step_seconds, 12.5);
        assert_eq!(s.steps, 40.0);
        assert!(parse_sample("hearth_worker_steps_total 3\n").is_none());
    }

    #[test]
    fn integrates_intervals_to_the_earlier_state() {
        let t0 = Instant::now();
        let s = |state: &str, secs: f64| Sample {
            state: state.into(),
            step_seconds: secs,
            steps: 0.0,
        };
        let samples = vec![
            (t0, s("joining", 0.0)),
            (t0 + Duration::from_millis(500), s("training", 0.0)),
            (t0 + Duration::from_millis(2500), s("waiting", 1.8)),
            (t0 + Duration::from_millis(3000), s("waiting", 1.8)),
        ];
        let u = integrate(&samples);
        assert!((u.wall - 3.0).abs() < 1e-9);
        assert!((u.states["joining"] - 0.5).abs() < 1e-9);
        assert!((u.states["training"] - 2.0).abs() < 1e-9);
        assert!((u.states["waiting"] - 0.5).abs() < 1e-9);
        assert_eq!(u.step_seconds, 1.8);
    }
}
