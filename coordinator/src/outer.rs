//! The outer optimizer applied to the averaged adapter delta (DiLoCo, arXiv 2311.08105).

use serde::{Deserialize, Serialize};

/// Outer optimizer state: Nesterov momentum buffer over the flattened trainable adapter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OuterState {
    /// Momentum buffer, same length as the flattened adapter (empty until the first step).
    pub momentum: Vec<f32>,
}

/// Which outer update to apply: the run spec's own enum (`Nesterov` as in DiLoCo: lr 0.7,
/// momentum 0.9; `Average`: `params += lr * delta`).
pub use hearth_proto::OuterOptimizer as Outer;

/// The outer update of an [`Outer`] optimizer.
pub trait OuterStep {
    /// Apply the update for the averaged `delta` (local minus global parameters) to `params`.
    ///
    /// Nesterov with pseudo-gradient `g = -delta`: `m ← μ·m + g`, `θ ← θ − lr·(g + μ·m)`.
    fn step(&self, params: &mut [f32], delta: &[f32], state: &mut OuterState);
}

impl OuterStep for Outer {
    fn step(&self, params: &mut [f32], delta: &[f32], state: &mut OuterState) {
        debug_assert_eq!(params.len(), delta.len());
        match *self {
            Outer::Average { lr } => {
                for (p, d) in params.iter_mut().zip(delta) {
                    *p += lr * d;
                }
            }
            Outer::Nesterov { lr, momentum } => {
                if state.momentum.len() != params.len() {
                    state.momentum = vec![0.0; params.len()];
                }
                for ((p, d), m) in params.iter_mut().zip(delta).zip(state.momentum.iter_mut()) {
                    let g = -d;
                    *m = momentum * *m + g;
                    *p -= lr * (g + momentum * *m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_with_lr_one_takes_the_delta() {
        let mut p = vec![1.0, 2.0];
        Outer::Average { lr: 1.0 }.step(&mut p, &[0.5, -1.0], &mut OuterState::default());
        assert_eq!(p, vec![1.5, 1.0]);
    }

    #[test]
    fn nesterov_first_and_second_step() {
        let opt = Outer::Nesterov {
            lr: 0.7,
            momentum: 0.9,
        };
        let mut st = OuterState::default();
        let mut p = vec![0.0];
        opt.step(&mut p, &[1.0], &mut st);
        // m = -1, θ = 0 - 0.7 * (-1 + 0.9 * -1) = 1.33
        assert!((p[0] - 1.33).abs() < 1e-6, "{}", p[0]);
        assert!((st.momentum[0] + 1.0).abs() < 1e-6);
        opt.step(&mut p, &[1.0], &mut st);
        // m = 0.9 * -1 - 1 = -1.9, θ = 1.33 - 0.7 * (-1 - 1.71) = 1.33 + 1.897
        assert!((p[0] - 3.227).abs() < 1e-5, "{}", p[0]);
    }
}
