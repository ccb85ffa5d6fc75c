//! The loss probe's pass mark: how much a delta must lower the loss on its peer's own shard.
//!
//! A fixed mark fails honest workers late in a run: once the loss levels off, or under a sparse
//! codec that sends a small part of each update, a trained delta lowers the probe loss by far
//! less than it did at the start (0.006 % at round 60 of a tiny run with the default codec, where
//! the old fixed 0.05 % mark banned an honest worker after three strikes). The mark therefore
//! follows the drops that recent passing deltas achieved: a delta must reach a tenth of their
//! lower quartile, never more than [`START_MARGIN`] and never less than [`MIN_MARGIN`], so a delta that
//! does (almost) nothing still fails.

use std::collections::VecDeque;

/// Relative drop required until enough deltas have passed, and the most ever required.
pub const START_MARGIN: f64 = 5e-4;
/// Least relative drop ever required: a near-zero delta (a free rider) fails however low the mark.
pub const MIN_MARGIN: f64 = 1e-5;
/// Share of the lower quartile of recent passing drops a delta must reach.
pub const SHARE: f64 = 0.1;
/// Passing drops remembered.
pub const WINDOW: usize = 32;
/// Passing drops needed before the mark follows them.
pub const MIN_SAMPLES: usize = 4;

/// Recent passing drops and the mark they set.
#[derive(Debug, Clone, Default)]
pub struct ProbeBar {
    drops: VecDeque<f64>,
}

impl ProbeBar {
    /// A bar with no history: the mark is [`START_MARGIN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Relative drop a delta must achieve now.
    pub fn margin(&self) -> f64 {
        if self.drops.len() < MIN_SAMPLES {
            return START_MARGIN;
        }
        let mut sorted: Vec<f64> = self.drops.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let quartile = sorted
            .get(sorted.len() / 4)
            .copied()
            .unwrap_or(START_MARGIN);
        (SHARE * quartile).clamp(MIN_MARGIN, START_MARGIN)
    }

    /// Judges a probe: `Ok` when the loss with the delta is below the loss without it by at least
    /// the mark (and remembers the drop), else `Err(mark)`. Non-finite losses fail.
    pub fn judge(&mut self, without: f64, with: f64) -> Result<(), f64> {
        let mark = self.margin();
        if !(without.is_finite() && with.is_finite()) || without <= 0.0 {
            return Err(mark);
        }
        let drop = (without - with) / without;
        if drop < mark {
            return Err(mark);
        }
        if self.drops.len() == WINDOW {
            self.drops.pop_front();
        }
        self.drops.push_back(drop);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_fixed_mark_and_rejects_a_delta_that_does_nothing() {
        let mut bar = ProbeBar::new();
        assert_eq!(bar.margin(), START_MARGIN);
        assert_eq!(bar.judge(5.0, 5.0), Err(START_MARGIN));
        assert_eq!(bar.judge(5.0, 5.001), Err(START_MARGIN), "a rise fails");
        assert_eq!(bar.judge(5.0, f64::NAN), Err(START_MARGIN));
        assert!(bar.judge(5.0, 4.99).is_ok(), "a 0.2 % drop passes");
    }

    #[test]
    fn follows_shrinking_honest_drops_down_to_the_floor() {
        let mut bar = ProbeBar::new();
        // Early deltas lower the loss by 1 %: the mark stays at its ceiling.
        for _ in 0..8 {
            bar.judge(5.0, 4.95).unwrap();
        }
        assert_eq!(bar.margin(), START_MARGIN);
        // The loss levels off: drops shrink by half each round. Each one still passes, because
        // the mark is a tenth of the recent lower quartile (9 halvings: 1 % → 0.002 %).
        let mut drop = 1e-2;
        for _ in 0..9 {
            drop /= 2.0;
            for _ in 0..3 {
                assert!(
                    bar.judge(4.0, 4.0 * (1.0 - drop)).is_ok(),
                    "honest drop {drop:e} failed at mark {:e}",
                    bar.margin()
                );
            }
        }
        // The round-60 case of the tiny default-codec run: 4.68401 → 4.68374.
        assert!(bar.judge(4.68401, 4.68374).is_ok());
        // However small the recent drops, a delta must still do something.
        for _ in 0..WINDOW {
            bar.judge(4.0, 4.0 * (1.0 - 2e-5)).unwrap();
        }
        assert_eq!(bar.margin(), MIN_MARGIN);
        assert!(bar.judge(4.0, 4.0 * (1.0 - 5e-6)).is_err());
    }

    #[test]
    fn failed_probes_do_not_lower_the_mark() {
        let mut bar = ProbeBar::new();
        for _ in 0..8 {
            bar.judge(5.0, 4.95).unwrap();
        }
        let before = bar.margin();
        for _ in 0..100 {
            assert!(bar.judge(5.0, 5.0).is_err());
        }
        assert_eq!(bar.margin(), before);
    }
}
