//! Volunteer controls while running: pause/resume (signals and a local HTTP endpoint), the
//! `--hours` window, stop, and the status the endpoint reports.
//!
//! The training thread calls [`Control::gate`] between optimizer steps: it blocks there while the
//! worker is paused or outside its hours, and returns how long it waited, so a pause never
//! counts against the round's time budget.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tracing::info;

use crate::schedule::{TimeOfDay, Window};

/// How often a paused worker looks at its flags and the clock.
const POLL: Duration = Duration::from_millis(100);

/// What the `/status` endpoint returns.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    /// `joining`, `fetching`, `training`, `submitting`, `waiting`, `paused`, `off-hours`, `stopped`.
    pub state: String,
    /// Paused by the volunteer (SIGUSR1 or POST /pause).
    pub paused: bool,
    /// The `--hours` window, if any.
    pub hours: Option<String>,
    /// Whether now is inside the window (true without one).
    pub in_hours: bool,
    /// Round being worked on (0 before the first).
    pub round: u64,
    /// Optimizer steps taken in this round.
    pub step: u64,
    /// Optimizer steps taken since start.
    pub steps_total: u64,
    /// Rounds contributed.
    pub rounds_done: u64,
    /// Credit: tokens trained in delivered deltas.
    pub credit_tokens: u64,
    /// Deltas the coordinator accepted.
    pub accepted: u64,
    /// Deltas the coordinator rejected.
    pub rejected: u64,
}

#[derive(Debug)]
struct Inner {
    paused: AtomicBool,
    stop: AtomicBool,
    window: Option<Window>,
    status: Mutex<Status>,
}

/// Shared controls of one worker (cheap to clone).
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

/// Why [`Control::gate`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on; the worker waited this long first.
    Go(Duration),
    /// Stop was requested.
    Stop,
}

impl Control {
    /// Controls with an optional daily window.
    pub fn new(window: Option<Window>) -> Self {
        let status = Status {
            state: "joining".into(),
            hours: window.map(|w| w.to_string()),
            in_hours: true,
            ..Status::default()
        };
        Self {
            inner: Arc::new(Inner {
                paused: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                window,
                status: Mutex::new(status),
            }),
        }
    }

    /// Pause after the step in progress.
    pub fn pause(&self) {
        if !self.inner.paused.swap(true, Ordering::SeqCst) {
            info!("paused: training waits after the current step (resume with SIGUSR2 or POST /resume)");
        }
    }

    /// Resume training.
    pub fn resume(&self) {
        if self.inner.paused.swap(false, Ordering::SeqCst) {
            info!("resumed");
        }
    }

    /// Whether the volunteer paused the worker.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Ask everything to stop (Ctrl-C).
    pub fn request_stop(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
    }

    /// Whether stop was requested.
    pub fn stopping(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }

    /// Whether now is inside the `--hours` window (always, without one).
    pub fn in_hours(&self) -> bool {
        self.inner
            .window
            .is_none_or(|w| w.contains(TimeOfDay::now()))
    }

    /// Whether training may proceed now.
    pub fn may_train(&self) -> bool {
        !self.is_paused() && self.in_hours()
    }

    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.inner.status.lock() {
            f(&mut s);
        }
    }

    /// Blocking: wait (on the training thread) until training may proceed or stop is requested.
    pub fn gate(&self) -> Gate {
        let start = Instant::now();
        let mut announced = false;
        loop {
            if self.stopping() {
                return Gate::Stop;
            }
            if self.may_train() {
                return Gate::Go(start.elapsed());
            }
            if !announced {
                announced = true;
                if !self.in_hours() {
                    if let Some(w) = self.inner.window {
                        info!(
                            "outside the training hours {w}; waiting {} min for the window to open",
                            w.minutes_until_open(TimeOfDay::now())
                        );
                    }
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Async: wait until training may proceed; `false` when stop was requested.
    pub async fn wait_until_allowed(&self) -> bool {
        let mut announced = false;
        loop {
            if self.stopping() {
                return false;
            }
            if self.may_train() {
                return true;
            }
            if !announced && !self.in_hours() {
                announced = true;
                if let Some(w) = self.inner.window {
                    info!(
                        "outside the training hours {w}; staying connected, training starts in {} min",
                        w.minutes_until_open(TimeOfDay::now())
                    );
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Record the worker's activity (`training`, `waiting`, ...).
    pub fn set_state(&self, state: &str) {
        self.with_status(|s| s.state = state.to_string());
    }

    /// A new round's training starts.
    pub fn start_round(&self, round: u64) {
        self.with_status(|s| {
            s.round = round;
            s.step = 0;
        });
    }

    /// One optimizer step done.
    pub fn step_done(&self, step: u64) {
        self.with_status(|s| {
            s.step = step;
            s.steps_total += 1;
        });
    }

    /// A delta was handed in: `tokens` of credit if delivered; the coordinator's verdict if known.
    pub fn round_done(&self, tokens: u64, accepted: Option<bool>) {
        self.with_status(|s| {
            s.rounds_done += 1;
            s.credit_tokens += tokens;
            match accepted {
                Some(true) => s.accepted += 1,
                Some(false) => s.rejected += 1,
                None => {}
            }
        });
    }

    /// The status now (the state shows `paused` / `off-hours` when training is held).
    pub fn status(&self) -> Status {
        let mut s = self
            .inner
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        s.paused = self.is_paused();
        s.in_hours = self.in_hours();
        if s.state != "stopped" {
            if s.paused {
                s.state = "paused".into();
            } else if !s.in_hours {
                s.state = "off-hours".into();
            }
        }
        s
    }
}

/// The control endpoint's routes: `POST /pause`, `POST /resume`, `GET /status`.
pub fn router(control: Control) -> Router {
    async fn pause(State(c): State<Control>) -> Json<Status> {
        c.pause();
        Json(c.status())
    }
    async fn resume(State(c): State<Control>) -> Json<Status> {
        c.resume();
        Json(c.status())
    }
    async fn status(State(c): State<Control>) -> Json<Status> {
        Json(c.status())
    }
    Router::new()
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/status", get(status))
        .with_state(control)
}

/// Serve the control endpoint on `addr` (loopback recommended: it has no authentication).
pub async fn serve(addr: &str, control: Control) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("control endpoint {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(control);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("control endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

/// Pause on SIGUSR1, resume on SIGUSR2 (Unix only).
pub fn listen_for_signals(control: Control) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut usr2 = signal(SignalKind::user_defined2())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = usr1.recv() => control.pause(),
                    Some(()) = usr2.recv() => control.resume(),
                    else => break,
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = control;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_and_resume_drive_the_gate_and_the_status() {
        let c = Control::new(None);
        c.set_state("training");
        assert!(matches!(c.gate(), Gate::Go(d) if d < POLL));
        c.pause();
        assert_eq!(c.status().state, "paused");
        let waiter = {
            let c = c.clone();
            std::thread::spawn(move || c.gate())
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !waiter.is_finished(),
            "the gate let a paused worker through"
        );
        c.resume();
        match waiter.join().unwrap() {
            Gate::Go(waited) => assert!(waited >= Duration::from_millis(250), "{waited:?}"),
            Gate::Stop => panic!("stopped"),
        }
        assert_eq!(c.status().state, "training");
        c.pause();
        c.request_stop();
        assert_eq!(c.gate(), Gate::Stop);
    }

    #[test]
    fn credit_and_verdicts_add_up() {
        let c = Control::new(Some("22:00-07:00".parse().unwrap()));
        c.start_round(3);
        c.step_done(1);
        c.step_done(2);
        c.round_done(512, Some(true));
        c.round_done(256, Some(false));
        c.round_done(128, None);
        let s = c.status();
        assert_eq!(
            (s.round, s.step, s.steps_total, s.rounds_done),
            (3, 2, 2, 3)
        );
        assert_eq!((s.credit_tokens, s.accepted, s.rejected), (896, 1, 1));
        assert_eq!(s.hours.as_deref(), Some("22:00-07:00"));
    }
}
