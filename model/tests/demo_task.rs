//! The generated Vesk translation task.

use std::collections::HashSet;

use hearth_model::data::{read_dataset, DatasetLimits, Example, Message};
use hearth_model::demo::{self, exact_match, generate, translate, DemoExample};

#[test]
fn generation_is_deterministic_distinct_and_bounded() {
    let a = generate(500, 3);
    assert_eq!(a, generate(500, 3));
    assert_ne!(a, generate(500, 4));
    assert_eq!(a.len(), 500);
    let distinct: HashSet<&str> = a.iter().map(|e| e.instruction.as_str()).collect();
    assert_eq!(distinct.len(), 500);
    // A prefix of a larger draw with the same seed.
    assert_eq!(generate(100, 3), a[..100]);
    assert_eq!(demo::SENTENCES, 18_816);
    assert_eq!(generate(usize::MAX, 1).len(), demo::SENTENCES);
}

#[test]
fn word_order_rule_and_lexicon() {
    assert_eq!(
        translate("big cat sees small dog").unwrap(),
        "pul kel dra vex vol"
    );
    assert_eq!(translate("wolf eats fish").unwrap(), "dex sab sul");
    assert_eq!(
        translate("happy king helps old child").unwrap(),
        "vor lun wob gor hob"
    );
    assert_eq!(translate("cat sees"), None);
    for ex in generate(200, 9) {
        let english = ex.instruction.strip_prefix("Vesk: ").unwrap();
        assert_eq!(translate(english).unwrap(), ex.answer);
        let n = english.split(' ').count();
        assert_eq!(ex.answer.split(' ').count(), n);
        assert!((3..=5).contains(&n));
    }
    // Every Vesk word is distinct from every other and from every English word.
    let all: Vec<&str> = demo::NOUNS
        .iter()
        .chain(&demo::ADJECTIVES)
        .chain(&demo::VERBS)
        .flat_map(|(e, v)| [*e, *v])
        .collect();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 40);
}

#[test]
fn held_out_sentences_are_new_combinations_of_seen_words() {
    let all = generate(2200, 1);
    let (train, test) = all.split_at(2000);
    let train_set: HashSet<&str> = train.iter().map(|e| e.answer.as_str()).collect();
    let train_words: HashSet<&str> = train.iter().flat_map(|e| e.answer.split(' ')).collect();
    assert_eq!(train_words.len(), 20);
    for e in test {
        assert!(!train_set.contains(e.answer.as_str()));
        assert!(e.answer.split(' ').all(|w| train_words.contains(w)));
    }
}

#[test]
fn jsonl_round_trip_and_exact_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vesk.jsonl");
    demo::write_jsonl(&path, 50, 2).unwrap();
    let records = read_dataset(&path, &DatasetLimits::default()).unwrap();
    let want: Vec<Example> = generate(50, 2)
        .iter()
        .map(DemoExample::to_example)
        .collect();
    let got: Vec<Example> = records.into_iter().map(|r| r.example).collect();
    assert_eq!(got, want);
    let ex = &generate(1, 2)[0];
    assert_eq!(
        ex.prompt(),
        vec![Message::new("user", ex.instruction.clone())]
    );

    assert!(exact_match(
        "  pul kel dra vex vol\n",
        "pul kel dra vex vol"
    ));
    assert!(!exact_match("pul kel dra vex", "pul kel dra vex vol"));
    assert!(!exact_match("pul kel dra vex vol.", "pul kel dra vex vol"));
    assert!(!exact_match("", "pul"));
}
