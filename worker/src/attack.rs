//! Misbehaviour for testing the coordinator's defences (`join --attack KIND`, `demo --adversaries`).
//!
//! Each attack turns an honest round's delta or message into a malicious one, as a Byzantine
//! volunteer would. Never used unless asked for.

use hearth_proto::{DeltaMessage, NamedTensor, SignedEnvelope};

/// A way to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// Send the negated delta.
    SignFlip,
    /// Send the delta times 100.
    Scale,
    /// Send a delta whose values decode to NaN.
    Nan,
    /// Send Gaussian noise instead of a trained delta.
    Noise,
    /// Re-send the previous round's signed delta verbatim.
    Replay,
    /// Claim to build on a checkpoint older than the staleness bound allows.
    Stale,
    /// Send tensors of the wrong shape (a layout that is not the run's).
    WrongShape,
    /// Send a delta whose signature does not verify.
    Forged,
    /// "A little is enough" (Baruch et al. 2019): shift every coordinate by z standard deviations.
    Alie,
    /// Free-rider: a copy of the last checkpoint's change (from its second round; a hundredth of
    /// its own delta before that), claiming a full round of work.
    FreeRide,
    /// Trains a quarter of the assigned steps and claims them all.
    Lazy,
    /// Copycat (a Sybil pair): submits its honest delta, then a lightly perturbed copy of it
    /// under a second identity that joined too, to take the credit twice.
    Copycat,
}

/// Relative size (of the values' RMS) of the noise a copycat adds to the delta it copies.
pub const COPYCAT_NOISE: f32 = 0.02;

/// Fraction of the assigned steps a lazy worker trains.
pub const LAZY_FRACTION: f64 = 0.25;

/// The free-rider's delta: `last_change` when known, else `own` scaled by 1/100.
pub fn free_ride(own: &mut [NamedTensor], last_change: Option<&[NamedTensor]>) {
    match last_change {
        Some(change) if change.len() == own.len() => {
            for (t, c) in own.iter_mut().zip(change) {
                t.data.clone_from(&c.data);
            }
        }
        _ => own
            .iter_mut()
            .for_each(|t| t.data.iter_mut().for_each(|x| *x *= 0.01)),
    }
}

/// Tampers with the numbers of a delta before it is encoded (sign-flip, scale, noise, ALIE).
pub fn tamper_values(attack: Attack, delta: &mut [NamedTensor], round: u64) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ round;
    let mut gaussian = move || {
        // Box–Muller over a xorshift generator: deterministic, no extra dependency.
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u1, u2) = (uniform(), uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    for t in delta.iter_mut() {
        let rms = (t.data.iter().map(|x| x * x).sum::<f32>() / t.data.len().max(1) as f32).sqrt();
        match attack {
            Attack::SignFlip => t.data.iter_mut().for_each(|x| *x = -*x),
            Attack::Scale => t.data.iter_mut().for_each(|x| *x *= 100.0),
            Attack::Noise => t.data.iter_mut().for_each(|x| *x = gaussian() * 0.05),
            Attack::Alie => t.data.iter_mut().for_each(|x| *x -= 1.5 * rms * x.signum()),
            Attack::Copycat => t
                .data
                .iter_mut()
                .for_each(|x| *x += gaussian() * COPYCAT_NOISE * rms),
            _ => {}
        }
    }
}

/// Tampers with the message before it is signed (NaN values, stale base).
pub fn tamper_message(attack: Attack, msg: &mut DeltaMessage, max_staleness: u32) {
    match attack {
        Attack::Nan => {
            // The first value (or chunk scale) of the first tensor becomes NaN in every codec.
            if let Some(b) = msg.delta.tensors.first_mut().and_then(|t| t.get_mut(..4)) {
                b.copy_from_slice(&[0xFF; 4]);
            }
        }
        Attack::Stale => {
            msg.base_round = msg.base_round.saturating_sub(u64::from(max_staleness) + 1)
        }
        _ => {}
    }
}

/// Tampers with the signed envelope (a forged signature).
pub fn tamper_envelope(attack: Attack, env: &mut SignedEnvelope) {
    if attack == Attack::Forged {
        if let Some(b) = env.signature.first_mut() {
            *b ^= 0x55;
        }
    }
}
