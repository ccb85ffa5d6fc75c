//! Unit tests of the screen: scores, judgements, copies, weights and evidence.

use super::*;

fn peer(seed: u8) -> PeerId {
    libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
        .map(|k| k.public().to_peer_id())
        .unwrap_or(PeerId::random())
}

use super::test_gaussian as gaussian;

fn mix(a: &[f32], wa: f32, b: &[f32], wb: f32) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
}

const D: usize = 20_000;

fn screen_with(g: &[f32]) -> Screen {
    let mut s = Screen::new(g.len(), 42);
    s.set_reference(Reference::from_gradient(1, g).unwrap());
    s
}

#[test]
fn random_deltas_score_standard_normal_and_pass_about_once_in_a_thousand() {
    let g = gaussian(D, 1);
    let s = screen_with(&g);
    let zs: Vec<f64> = (0..400)
        .map(|i| s.score(&gaussian(D, 100 + i), 1000).unwrap().z)
        .collect();
    let mean = zs.iter().sum::<f64>() / zs.len() as f64;
    let var = zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / zs.len() as f64;
    assert!(mean.abs() < 0.2, "mean z {mean}");
    assert!((var - 1.0).abs() < 0.2, "variance of z {var}");
    let passed = zs.iter().filter(|z| **z >= Z_PASS).count();
    assert!(passed <= 2, "{passed} of 400 random deltas passed");
}

fn scored(s: &mut Screen, p: u8, delta: &[f32]) -> (PeerId, Score) {
    match s.check(peer(p), delta, 100) {
        Some(Finding::Pass(sc)) => (peer(p), sc),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_round_with_signal_passes_descent_and_fails_sign_flips_and_records_of_noise() {
    let g = gaussian(D, 1);
    let honest = |seed| mix(&gaussian(D, seed), 1.0, &g, -0.23); // cos ≈ 0.22, z ≈ 31
    let mut s = screen_with(&g);
    let mut scores: Vec<(PeerId, Score)> = (0..3)
        .map(|i| scored(&mut s, i, &honest(10 + u64::from(i))))
        .collect();
    let flipped: Vec<f32> = honest(20).iter().map(|x| -x).collect();
    scores.push(scored(&mut s, 7, &flipped));
    scores.push(scored(&mut s, 8, &gaussian(D, 3))); // noise, new peer
    let j = s.judge(&scores);
    assert!(j.strong && j.signal.is_some_and(|m| m > 20.0), "{j:?}");
    for v in &j.verdicts[..3] {
        assert!(matches!(v, Verdict::Weight(w) if *w > 0.9), "{v:?}");
    }
    assert!(matches!(&j.verdicts[3], Verdict::Fail(Finding::Misaligned(sc)) if sc.z < -20.0));
    assert!(
        matches!(&j.verdicts[4], Verdict::HeldBack(_)),
        "new noise is held back"
    );
    // With a record of noise, the same peer's noise fails.
    for round in 0..RECORD_MIN as u64 {
        s.round_opened(None);
        s.set_reference(Reference::from_gradient(2 + round, &g).unwrap());
        let mut sc: Vec<(PeerId, Score)> = (0..3)
            .map(|i| scored(&mut s, i, &honest(30 + round * 3 + u64::from(i))))
            .collect();
        sc.push(scored(&mut s, 8, &gaussian(D, 40 + round)));
        let j = s.judge(&sc);
        let last = &j.verdicts[3];
        if round + 1 < RECORD_MIN as u64 {
            assert!(matches!(last, Verdict::HeldBack(_)), "{last:?}");
        } else {
            assert!(
                matches!(last, Verdict::Fail(Finding::Misaligned(x)) if x.record < Z_PASS && x.earlier >= RECORD_MIN),
                "{last:?}"
            );
        }
    }
    // A weakly aligned delta from a peer with a strong record passes, at a low weight.
    s.round_opened(None);
    s.set_reference(Reference::from_gradient(9, &g).unwrap());
    // as much progress along −g as the others, buried in 20× the noise: z ≈ 1.6
    let weak = mix(&gaussian(D, 50), 20.0, &g, -0.23);
    let mut sc: Vec<(PeerId, Score)> = (1..3)
        .map(|i| scored(&mut s, i, &honest(60 + u64::from(i))))
        .collect();
    sc.push(scored(&mut s, 0, &weak));
    let j = s.judge(&sc);
    assert!(
        matches!(j.verdicts[2], Verdict::Weight(w) if w > 0.0 && w < 0.5),
        "{j:?}"
    );
    assert!(Finding::Misaligned(sc[2].1).explain().contains("3.09"));
}

#[test]
fn an_established_peer_s_contrary_delta_costs_its_weight_not_a_failure() {
    let g = gaussian(D, 1);
    let honest = |seed| mix(&gaussian(D, seed), 1.0, &g, -0.23);
    let mut s = screen_with(&g);
    for round in 0..3u64 {
        s.round_opened(None);
        s.set_reference(Reference::from_gradient(round, &g).unwrap());
        let sc: Vec<(PeerId, Score)> = (0..3)
            .map(|i| scored(&mut s, i, &honest(100 + round * 3 + u64::from(i))))
            .collect();
        assert!(s
            .judge(&sc)
            .verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Weight(w) if *w > 0.9)));
    }
    s.round_opened(None);
    s.set_reference(Reference::from_gradient(9, &g).unwrap());
    let mut sc: Vec<(PeerId, Score)> = (1..3)
        .map(|i| scored(&mut s, i, &honest(200 + u64::from(i))))
        .collect();
    let contrary: Vec<f32> = honest(300).iter().map(|x| -x).collect();
    sc.push(scored(&mut s, 0, &contrary));
    let j = s.judge(&sc);
    assert_eq!(j.verdicts[2], Verdict::Weight(0.0), "{j:?}");
}

#[test]
fn a_round_without_signal_abstains() {
    // A reference that points nowhere (converged training, or an unlucky batch): every honest
    // delta scores about N(0, 1). Nothing fails, nothing is held back.
    let g = gaussian(D, 1);
    let mut s = screen_with(&g);
    let scores: Vec<(PeerId, Score)> = (0..4)
        .map(|i| scored(&mut s, i, &gaussian(D, 70 + u64::from(i))))
        .collect();
    let j = s.judge(&scores);
    assert!(!j.strong, "{j:?}");
    assert!(
        j.verdicts.iter().all(|v| *v == Verdict::Weight(1.0)),
        "{j:?}"
    );
}

#[test]
fn a_perturbed_copy_of_an_earlier_delta_or_of_the_last_change_is_caught() {
    let g = gaussian(D, 1);
    let a = mix(&gaussian(D, 10), 1.0, &g, -0.3);
    let b = mix(&gaussian(D, 11), 1.0, &g, -0.3); // honest, same task: cos ≈ 0.08
    let copy = mix(&a, 1.0, &gaussian(D, 12), 0.1); // 1 % of the energy is new
    let mut s = screen_with(&g);
    assert!(matches!(s.check(peer(1), &a, 100), Some(Finding::Pass(_))));
    assert!(matches!(s.check(peer(2), &b, 100), Some(Finding::Pass(_))));
    match s.check(peer(3), &copy, 100) {
        Some(Finding::CopiesPeer { peer: p, cosine }) => {
            assert_eq!(p, peer(1));
            assert!(cosine > 0.95, "{cosine}");
        }
        other => panic!("copy not caught: {other:?}"),
    }
    // The next round: the last checkpoint's change, scaled down, is a copy too.
    let change = mix(&a, 0.5, &b, 0.5);
    s.round_opened(Some(&change));
    assert!(s.check(peer(4), &a, 100).is_none(), "no reference yet");
    s.set_reference(Reference::from_gradient(2, &g).unwrap());
    let tiny: Vec<f32> = change.iter().map(|x| x * 0.01).collect();
    assert!(matches!(
        s.check(peer(4), &tiny, 100),
        Some(Finding::CopiesCheckpoint { .. })
    ));
    // Honest deltas of the new round are not copies of each other or of the change.
    let c = mix(&gaussian(D, 13), 1.0, &g, -0.3);
    assert!(matches!(s.check(peer(1), &c, 100), Some(Finding::Pass(_))));
}

#[test]
fn weights_follow_alignment_and_the_work_a_delta_shows() {
    let g = gaussian(D, 1);
    let mut s = screen_with(&g);
    let honest: Vec<Vec<f32>> = (0..4)
        .map(|i| mix(&gaussian(D, 20 + i), 1.0, &g, -0.3))
        .collect();
    let mut scores: Vec<(PeerId, Score)> = honest
        .iter()
        .enumerate()
        .map(|(i, h)| scored(&mut s, i as u8, h))
        .collect();
    // A lazy peer: a quarter of the steps, the full token count claimed.
    let lazy: Vec<f32> = mix(&gaussian(D, 30), 0.5, &g, -0.075);
    scores.push(scored(&mut s, 9, &lazy));
    // A free rider: a hundredth of its own delta, same alignment.
    let free: Vec<f32> = honest[0].iter().map(|x| x * 0.01).collect();
    scores.push((peer(10), s.score(&free, 100).unwrap()));
    let j = s.judge(&scores);
    for v in &j.verdicts[..4] {
        assert!(matches!(v, Verdict::Weight(w) if *w > 0.85), "honest {v:?}");
    }
    assert!(
        matches!(j.verdicts[4], Verdict::Weight(w) if w < 0.3),
        "lazy {:?}",
        j.verdicts[4]
    );
    assert!(
        matches!(j.verdicts[5], Verdict::Unpaid { share } if share < WORK_FLOOR),
        "free ride {:?}",
        j.verdicts[5]
    );
}

#[test]
fn evidence_bans_after_five_straight_failures_and_one_pass_clears_most_of_it() {
    let mut e = 0.0;
    for i in 1..=4 {
        e = update_evidence(e, true);
        assert!(e < BAN_EVIDENCE, "banned after {i} failures");
    }
    assert!(update_evidence(e, true) >= BAN_EVIDENCE);
    let pass = ((1.0 - FAIL_BAD) / (1.0 - FAIL_HONEST)).ln();
    assert!((pass + 6.8565).abs() < 1e-3, "{pass}");
    assert!((update_evidence(e, false) - (e + pass).max(0.0)).abs() < 1e-12);
    // An honest peer failing one delta in five never gets near the mark.
    let mut e = 0.0;
    let mut worst: f64 = 0.0;
    for i in 0..10_000 {
        e = update_evidence(e, i % 5 == 0);
        worst = worst.max(e);
    }
    assert!(worst < 3.0, "worst evidence {worst}");
}

#[test]
fn a_round_that_closes_on_a_majority_of_scaled_down_copies_pays_them_nothing() {
    let g = gaussian(D, 1);
    let mut s = screen_with(&g);
    let honest = |seed| mix(&gaussian(D, seed), 1.0, &g, -0.3);
    // The run's first judged round: two free riders and one honest delta (the other honest
    // deltas arrive after the close). The round's median is a free rider's size.
    free_riders_close_a_round_unpaid(&mut s, 40, "first round");
    // Rounds of honest work fill the window...
    for round in 0..3u64 {
        let full: Vec<(PeerId, Score)> = (0..5)
            .map(|i| scored(&mut s, 3 + i, &honest(50 + 10 * round + u64::from(i))))
            .collect();
        let j = s.judge(&full);
        assert!(
            j.verdicts.iter().all(|v| matches!(v, Verdict::Weight(_))),
            "{j:?}"
        );
    }
    // ...and a later round that again closes on two free riders and one honest delta.
    free_riders_close_a_round_unpaid(&mut s, 90, "later round");
}

/// When training converges every delta of a round shrinks together: a round of honest deltas at
/// 5 % of the window's sizes is paid, and a free rider at 1/100 of them is still not.
#[test]
fn a_round_whose_deltas_all_shrank_is_paid_and_its_free_riders_are_not() {
    let g = gaussian(D, 1);
    let mut s = screen_with(&g);
    let honest = |seed| mix(&gaussian(D, seed), 1.0, &g, -0.3);
    for round in 0..4u64 {
        let full: Vec<(PeerId, Score)> = (0..3)
            .map(|i| scored(&mut s, 3 + i, &honest(50 + 10 * round + u64::from(i))))
            .collect();
        let j = s.judge(&full);
        assert!(j.verdicts.iter().all(|v| matches!(v, Verdict::Weight(_))));
    }
    let shrunk = |seed| -> Vec<f32> { honest(seed).iter().map(|x| x * 0.05).collect() };
    let converged: Vec<(PeerId, Score)> = (0..3)
        .map(|i| scored(&mut s, 3 + i, &shrunk(100 + u64::from(i))))
        .collect();
    let j = s.judge(&converged);
    for v in &j.verdicts {
        assert!(
            matches!(v, Verdict::Weight(w) if *w > 0.85),
            "converged {v:?}"
        );
    }
    let free: Vec<f32> = shrunk(110).iter().map(|x| x * 0.01).collect();
    let mixed = vec![
        scored(&mut s, 3, &shrunk(111)),
        scored(&mut s, 4, &shrunk(112)),
        scored(&mut s, 9, &free),
    ];
    let j = s.judge(&mixed);
    assert!(
        matches!(j.verdicts[2], Verdict::Unpaid { share } if share < WORK_FLOOR),
        "{j:?}"
    );
    for v in &j.verdicts[..2] {
        assert!(
            matches!(v, Verdict::Weight(w) if *w > 0.85),
            "converged {v:?}"
        );
    }
}

/// Two deltas at 1/100 of an honest one and one honest delta close a round: the two are unpaid,
/// the honest one keeps its weight.
fn free_riders_close_a_round_unpaid(s: &mut Screen, seed: u64, label: &str) {
    let g = gaussian(D, 1);
    let honest = |seed| mix(&gaussian(D, seed), 1.0, &g, -0.3);
    let small: Vec<Vec<f32>> = [seed, seed + 1]
        .iter()
        .map(|&k| honest(k).iter().map(|x| x * 0.01).collect())
        .collect();
    let closing = vec![
        scored(s, 1, &small[0]),
        scored(s, 2, &small[1]),
        scored(s, 3, &honest(seed + 2)),
    ];
    let j = s.judge(&closing);
    assert!(j.strong, "{label}: {j:?}");
    for v in &j.verdicts[..2] {
        assert!(
            matches!(v, Verdict::Unpaid { share } if *share < WORK_FLOOR),
            "{label}, free ride {v:?}"
        );
    }
    assert!(
        matches!(j.verdicts[2], Verdict::Weight(w) if w > 0.85),
        "{label}: {j:?}"
    );
}
