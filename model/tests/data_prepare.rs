//! End to end: file → examples → split → packed sequences → content-addressed shards.

use std::collections::HashSet;

use hearth_model::data::{
    byte_level_tokenizer, encode_record, holdout_split, prepare_dataset, read_dataset,
    ChatTemplate, DataError, DatasetLimits, Example, Shard,
};
use hearth_model::demo;
use tokenizers::Tokenizer;

fn tok() -> Tokenizer {
    byte_level_tokenizer(&["<|endoftext|>", "<|im_start|>", "<|im_end|>"]).unwrap()
}

#[test]
fn holdout_split_is_deterministic_disjoint_and_sized() {
    let items: Vec<u32> = (0..1000).collect();
    let (train, held) = holdout_split(items.clone(), 0.1, 5).unwrap();
    assert_eq!(held.len(), 100);
    assert_eq!(train.len(), 900);
    let mut all: Vec<u32> = train.iter().chain(&held).copied().collect();
    all.sort_unstable();
    assert_eq!(all, items);
    assert_eq!(
        holdout_split(items.clone(), 0.1, 5).unwrap(),
        (train.clone(), held.clone())
    );
    let (_, other) = holdout_split(items.clone(), 0.1, 6).unwrap();
    assert_ne!(other, held);
    // A tiny positive fraction still holds out one example; zero holds out none.
    assert_eq!(holdout_split(items.clone(), 0.0001, 1).unwrap().1.len(), 1);
    assert_eq!(holdout_split(items.clone(), 0.0, 1).unwrap().1.len(), 0);
    for bad in [1.0, -0.1, f64::NAN] {
        assert!(holdout_split(items.clone(), bad, 1).is_err(), "{bad}");
    }
    assert!(holdout_split(vec![1u32], 0.5, 1).is_err());
}

#[test]
fn same_input_and_seed_give_byte_identical_shards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.jsonl");
    demo::write_jsonl(&path, 300, 11).unwrap();
    let t = tok();
    let template = ChatTemplate::chatml().unwrap();

    let a = prepare_dataset(&path, &t, &template, 128, 0.1, 4, 99).unwrap();
    let b = prepare_dataset(&path, &t, &template, 128, 0.1, 4, 99).unwrap();
    let cids = |p: &hearth_model::data::PreparedDataset| -> Vec<String> {
        p.train_shards.iter().map(Shard::cid_hex).collect()
    };
    assert_eq!(cids(&a), cids(&b));
    for (x, y) in a.train_shards.iter().zip(&b.train_shards) {
        assert_eq!(x.to_bytes(), y.to_bytes());
    }
    assert_eq!(a.validation, b.validation);
    println!("shard cids: {:?}", cids(&a));

    let c = prepare_dataset(&path, &t, &template, 128, 0.1, 4, 100).unwrap();
    assert_ne!(cids(&a), cids(&c));
    assert_ne!(a.validation_examples, c.validation_examples);

    // Shapes and figures.
    assert_eq!(a.train_shards.len(), 4);
    let sizes: Vec<usize> = a.train_shards.iter().map(Shard::len).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
    assert_eq!(a.stats.examples, 300);
    assert_eq!(a.validation_examples.len(), 30);
    assert_eq!(a.stats.train.examples, 270);
    assert_eq!(a.stats.validation.examples, 30);
    assert_eq!(sizes.iter().sum::<usize>(), a.stats.train.sequences);
    assert_eq!(a.validation.len(), a.stats.validation.sequences);
    assert!(a.train_shards.iter().all(|s| s.seq_len() == 128));
    assert_eq!(a.stats.train.split_examples, 0);

    // Every assistant target lands in exactly one split: targets are conserved.
    let records = read_dataset(&path, &DatasetLimits::default()).unwrap();
    let total: usize = records
        .iter()
        .map(|r| encode_record(&t, &template, r).unwrap().target_count())
        .sum();
    let train: usize = a.train_shards.iter().map(Shard::target_count).sum();
    let val: usize = a.validation.iter().map(|s| s.target_count()).sum();
    assert_eq!(train + val, total);
    assert_eq!(train, a.stats.train.targets);
    println!(
        "300 demo examples: {} train sequences (fill {:.3}), {} validation sequences, {} target tokens",
        a.stats.train.sequences,
        a.stats.train.fill(),
        a.stats.validation.sequences,
        total
    );

    // Held-out examples are not in the training split.
    let held: HashSet<String> = a
        .validation_examples
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    assert_eq!(held.len(), 30);
    let all: Vec<Example> = records.into_iter().map(|r| r.example).collect();
    assert_eq!(
        all.iter()
            .filter(|e| held.contains(&format!("{e:?}")))
            .count(),
        30
    );
}

#[test]
fn prepare_reports_bad_parameters_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let t = tok();
    let template = ChatTemplate::chatml().unwrap();
    let path = dir.path().join("small.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": \"three\"}\n",
    )
    .unwrap();

    let err = prepare_dataset(&path, &t, &template, 64, 0.0, 2, 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NotEnoughSequences {
                sequences: 1,
                shards: 2
            }
        ),
        "{err}"
    );
    let err = prepare_dataset(&path, &t, &template, 64, 0.0, 0, 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidParameter {
                name: "n_shards",
                ..
            }
        ),
        "{err}"
    );
    let err = prepare_dataset(&path, &t, &template, 1, 0.0, 1, 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::InvalidParameter {
                name: "seq_len",
                ..
            }
        ),
        "{err}"
    );
    let ok = prepare_dataset(&path, &t, &template, 64, 0.0, 1, 0).unwrap();
    assert!(ok.validation.is_empty());
    // Text: every token and each separator is a target (position 0 is never scored).
    assert_eq!(ok.stats.train.targets, (3 + 1) + (3 + 1) + (5 + 1) - 1);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"txet\": \"typo\"}\n",
    )
    .unwrap();
    let err = prepare_dataset(&bad, &t, &template, 64, 0.0, 1, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3: no recognised fields (expected `text`, `instruction`+`output`, `instruction`+`response` or `messages`), found keys [txet]"
    );

    let txt = dir.path().join("book.txt");
    let long = "word ".repeat(40);
    std::fs::write(&txt, format!("{long}\n\nshort one\n")).unwrap();
    let p = prepare_dataset(&txt, &t, &template, 64, 0.0, 1, 0).unwrap();
    assert_eq!(p.stats.train.split_examples, 1);
    assert_eq!(p.stats.train.tokens, 200 + 1 + 9 + 1);
}
