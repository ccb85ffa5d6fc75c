//! The round state machine: when a round closes, extends or carries its deltas over.
//!
//! No I/O and no clocks inside: callers pass the current time in milliseconds, so the policy is
//! unit-tested with plain values.

/// When a round closes (DESIGN.md "Round closing").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundPolicy {
    /// Close once this many deltas are accepted (and the grace period has passed).
    pub target_deltas: usize,
    /// Fewer accepted deltas than this at the deadline: extend once, then carry them over.
    pub min_deltas: usize,
    /// Time to wait after the target is reached for stragglers, in ms.
    pub grace_ms: u64,
    /// Time from opening to the deadline, in ms.
    pub deadline_ms: u64,
}

/// What the coordinator should do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep collecting.
    Wait,
    /// Close now and aggregate what was accepted.
    Close,
    /// The deadline passed with too few deltas: the deadline moved once, to the given time.
    Extended {
        /// The new deadline, in ms.
        deadline_unix_ms: u64,
    },
    /// The extended deadline passed with too few deltas: keep the accepted deltas for the next
    /// round without producing a checkpoint.
    CarryOver,
}

/// One round in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Round number (checkpoint `number - 1` is what it trains on).
    pub number: u64,
    /// When it opened, ms since the Unix epoch.
    pub opened_unix_ms: u64,
    /// Current deadline, ms since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// Whether the deadline was already extended once.
    pub extended: bool,
    /// When the effective target was first met, if it was.
    target_met_unix_ms: Option<u64>,
    policy: RoundPolicy,
}

impl Round {
    /// Open round `number` at time `now`.
    pub fn open(number: u64, now: u64, policy: RoundPolicy) -> Self {
        Self {
            number,
            opened_unix_ms: now,
            deadline_unix_ms: now.saturating_add(policy.deadline_ms),
            extended: false,
            target_met_unix_ms: None,
            policy,
        }
    }

    /// The number of deltas that closes the round: the target, but never more than the number of
    /// live workers that can still send one (a dead peer is never waited on), and at least one.
    pub fn effective_target(&self, live_contributors: usize) -> usize {
        self.policy.target_deltas.min(live_contributors).max(1)
    }

    /// Decide what to do at time `now`, with `accepted` deltas in hand, `responded` live workers
    /// that sent something this round (accepted or rejected) and `live_contributors` connected workers.
    pub fn tick(
        &mut self,
        now: u64,
        accepted: usize,
        responded: usize,
        live_contributors: usize,
    ) -> Decision {
        let target = self.effective_target(live_contributors);
        if accepted >= target && accepted >= self.policy.min_deltas.max(1) {
            let met = *self.target_met_unix_ms.get_or_insert(now);
            // Everyone who could send has sent: no reason to wait out the grace period.
            if accepted.max(responded) >= live_contributors
                || now >= met.saturating_add(self.policy.grace_ms)
            {
                return Decision::Close;
            }
        }
        // Every live worker answered (some were rejected): nothing more will come this round.
        let all_answered = live_contributors > 0 && responded >= live_contributors;
        if now < self.deadline_unix_ms
            && !(all_answered && accepted >= self.policy.min_deltas.max(1))
        {
            return Decision::Wait;
        }
        if accepted >= self.policy.min_deltas.max(1) {
            return Decision::Close;
        }
        if !self.extended {
            self.extended = true;
            self.deadline_unix_ms = now.saturating_add(self.policy.deadline_ms);
            return Decision::Extended {
                deadline_unix_ms: self.deadline_unix_ms,
            };
        }
        Decision::CarryOver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RoundPolicy {
        RoundPolicy {
            target_deltas: 3,
            min_deltas: 2,
            grace_ms: 1_000,
            deadline_ms: 10_000,
        }
    }

    #[test]
    fn waits_until_target_then_grace() {
        let mut r = Round::open(1, 0, policy());
        assert_eq!(r.tick(100, 2, 2, 5), Decision::Wait);
        assert_eq!(r.tick(200, 3, 3, 5), Decision::Wait, "grace not over");
        assert_eq!(
            r.tick(1_100, 3, 3, 5),
            Decision::Wait,
            "grace counts from when the target was met"
        );
        assert_eq!(r.tick(1_200, 3, 3, 5), Decision::Close);
    }

    #[test]
    fn closes_at_once_when_every_live_worker_sent() {
        let mut r = Round::open(1, 0, policy());
        assert_eq!(r.tick(100, 3, 3, 3), Decision::Close);
    }

    #[test]
    fn dead_peer_is_not_waited_on() {
        // Target 3 but only 2 workers are alive: close when both sent, without waiting for the deadline.
        let mut r = Round::open(1, 0, policy());
        assert_eq!(r.effective_target(2), 2);
        assert_eq!(r.tick(500, 2, 2, 2), Decision::Close);
    }

    #[test]
    fn deadline_closes_with_enough_deltas() {
        let mut r = Round::open(
            1,
            0,
            RoundPolicy {
                target_deltas: 10,
                ..policy()
            },
        );
        assert_eq!(r.tick(9_999, 2, 2, 10), Decision::Wait);
        assert_eq!(r.tick(10_000, 2, 2, 10), Decision::Close);
    }

    #[test]
    fn too_few_deltas_extends_once_then_carries_over() {
        let mut r = Round::open(7, 1_000, policy());
        assert_eq!(
            r.tick(11_000, 1, 1, 4),
            Decision::Extended {
                deadline_unix_ms: 21_000
            }
        );
        assert!(r.extended);
        assert_eq!(r.tick(15_000, 1, 1, 4), Decision::Wait);
        assert_eq!(r.tick(21_000, 1, 1, 4), Decision::CarryOver);
    }

    #[test]
    fn rejected_senders_do_not_stall_the_round() {
        // Target 5 with 5 live workers, 2 of them sent bad deltas: close once all 5 answered.
        let mut r = Round::open(
            1,
            0,
            RoundPolicy {
                target_deltas: 5,
                ..policy()
            },
        );
        assert_eq!(r.tick(100, 3, 4, 5), Decision::Wait);
        assert_eq!(r.tick(200, 3, 5, 5), Decision::Close);
    }

    #[test]
    fn extension_can_still_close_normally() {
        let mut r = Round::open(1, 0, policy());
        assert!(matches!(r.tick(10_000, 0, 0, 3), Decision::Extended { .. }));
        assert_eq!(r.tick(12_000, 3, 3, 3), Decision::Close);
    }
}
