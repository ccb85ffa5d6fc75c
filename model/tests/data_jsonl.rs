//! Dataset readers: every row format, error messages with line numbers, and size limits.

use std::io::Cursor;

use hearth_model::data::jsonl::read_jsonl;
use hearth_model::data::plain::read_plain_text;
use hearth_model::data::{read_dataset, DataError, DatasetLimits, Example, Message};

fn rows(text: &str) -> Result<Vec<Example>, DataError> {
    read_jsonl(Cursor::new(text.as_bytes()), &DatasetLimits::default())
        .map(|r| r.into_iter().map(|r| r.example).collect())
}

#[test]
fn every_row_format_is_recognised() {
    let text = concat!(
        "{\"text\": \"plain words\"}\n",
        "\n",
        "{\"instruction\": \"Add\", \"input\": \"2 and 3\", \"output\": \"5\"}\n",
        "{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"}\r\n",
        "{\"instruction\": \"Summarise\", \"context\": \"A long story.\", \"response\": \"Story.\"}\n",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}",
    );
    let got = rows(text).unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0], Example::Text("plain words".into()));
    assert_eq!(
        got[1],
        Example::Chat(vec![
            Message::new("user", "Add\n\n2 and 3"),
            Message::new("assistant", "5")
        ])
    );
    assert_eq!(
        got[2],
        Example::Chat(vec![
            Message::new("user", "Say hi"),
            Message::new("assistant", "hi")
        ])
    );
    assert_eq!(
        got[3],
        Example::Chat(vec![
            Message::new("user", "Summarise\n\nA long story."),
            Message::new("assistant", "Story.")
        ])
    );
    match &got[4] {
        Example::Chat(m) => {
            assert_eq!(m.len(), 3);
            assert_eq!(m[0], Message::new("system", "Be brief."));
        }
        other => panic!("expected chat, got {other:?}"),
    }
}

#[test]
fn line_numbers_count_blank_lines() {
    let text = "{\"text\": \"a\"}\n\n\n{\"text\": \"b\"}\n";
    let recs = read_jsonl(Cursor::new(text.as_bytes()), &DatasetLimits::default()).unwrap();
    assert_eq!(recs.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 4]);
}

fn error_of(text: &str) -> String {
    rows(text).unwrap_err().to_string()
}

#[test]
fn bad_lines_are_errors_that_name_the_line_and_field() {
    let ok = "{\"text\": \"fine\"}\n";
    let cases: &[(&str, &str)] = &[
        ("{\"text\": \"a\"", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, found an array"),
        (
            "{\"text\": 5}",
            "line 2: field `text` must be a string, found a number",
        ),
        ("{\"text\": \"  \"}", "line 2: field `text` is empty"),
        ("{\"instruction\": \"x\"}", "line 2: missing field `output`"),
        (
            "{\"instruction\": \"x\", \"output\": null}",
            "line 2: missing field `output`",
        ),
        (
            "{\"instruction\": \"x\", \"input\": [], \"output\": \"y\"}",
            "line 2: field `input` must be a string, found an array",
        ),
        (
            "{\"prompt\": \"x\", \"completion\": \"y\"}",
            "line 2: no recognised fields",
        ),
        (
            "{\"messages\": {}}",
            "line 2: field `messages` must be an array, found an object",
        ),
        (
            "{\"messages\": [{\"role\": \"user\"}]}",
            "line 2: field `messages[0].content` must be a string, found nothing",
        ),
        (
            "{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}",
            "line 2: field `messages[0].role` must be a string, found a number",
        ),
        (
            "{\"messages\": [\"hi\"]}",
            "line 2: field `messages[0]` must be an object, found a string",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
            "line 2: chat has no non-empty `assistant` message",
        ),
    ];
    for (bad, want) in cases {
        let msg = error_of(&format!("{ok}{bad}\n{ok}"));
        assert!(
            msg.contains(want),
            "input {bad:?}: got {msg:?}, want {want:?}"
        );
    }
    let invalid_utf8 = [ok.as_bytes(), b"{\"text\": \"\xff\"}\n"].concat();
    let err = read_jsonl(Cursor::new(invalid_utf8), &DatasetLimits::default()).unwrap_err();
    assert!(
        matches!(err, DataError::InvalidUtf8 { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn limits_are_enforced() {
    let limits = DatasetLimits {
        max_line_bytes: 32,
        max_examples: 2,
        max_messages: 2,
        ..DatasetLimits::default()
    };
    let long = format!("{{\"text\": \"{}\"}}\n", "x".repeat(100));
    let err = read_jsonl(Cursor::new(long.as_bytes()), &limits).unwrap_err();
    assert!(
        matches!(err, DataError::LineTooLong { line: 1, limit: 32 }),
        "{err}"
    );
    // A line of exactly the limit (without its newline) is accepted.
    let exact = format!("{{\"text\": \"{}\"}}", "y".repeat(32 - 12));
    assert_eq!(exact.len(), 32);
    assert_eq!(
        read_jsonl(Cursor::new(exact.as_bytes()), &limits)
            .unwrap()
            .len(),
        1
    );

    let three = "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"}\n";
    let err = read_jsonl(Cursor::new(three.as_bytes()), &limits).unwrap_err();
    assert!(
        matches!(err, DataError::TooManyExamples { limit: 2 }),
        "{err}"
    );

    let chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}, {\"role\": \"user\", \"content\": \"c\"}]}";
    let limits = DatasetLimits {
        max_messages: 2,
        ..DatasetLimits::default()
    };
    let err = read_jsonl(Cursor::new(chat.as_bytes()), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooManyMessages {
                line: 1,
                count: 3,
                limit: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn plain_text_splits_documents_at_blank_lines() {
    let text = "\u{feff}First para\nstill first\n\n\n  \nSecond\n\nThird\n";
    let recs = read_plain_text(text, &DatasetLimits::default()).unwrap();
    let got: Vec<(usize, Example)> = recs.into_iter().map(|r| (r.line, r.example)).collect();
    assert_eq!(
        got,
        vec![
            (1, Example::Text("First para\nstill first".into())),
            (6, Example::Text("Second".into())),
            (8, Example::Text("Third".into())),
        ]
    );
}

#[test]
fn files_dispatch_on_extension_and_reject_empty_or_oversized() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("d.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"a\"}\n").unwrap();
    assert_eq!(
        read_dataset(&jsonl, &DatasetLimits::default())
            .unwrap()
            .len(),
        1
    );

    let txt = dir.path().join("d.txt");
    std::fs::write(&txt, "one\n\ntwo\n").unwrap();
    assert_eq!(
        read_dataset(&txt, &DatasetLimits::default()).unwrap().len(),
        2
    );

    let empty = dir.path().join("e.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let err = read_dataset(&empty, &DatasetLimits::default()).unwrap_err();
    assert!(matches!(err, DataError::EmptyDataset { .. }), "{err}");

    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "a,b\n").unwrap();
    let err = read_dataset(&csv, &DatasetLimits::default()).unwrap_err();
    assert!(err.to_string().contains("unknown dataset format"), "{err}");

    let limits = DatasetLimits {
        max_file_bytes: 5,
        ..DatasetLimits::default()
    };
    let err = read_dataset(&jsonl, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::FileTooLarge {
                size: 14,
                limit: 5,
                ..
            }
        ),
        "{err}"
    );

    let missing = dir.path().join("missing.jsonl");
    let err = read_dataset(&missing, &DatasetLimits::default()).unwrap_err();
    assert!(err.to_string().contains("missing.jsonl"), "{err}");

    let bad_txt = dir.path().join("bad.txt");
    std::fs::write(&bad_txt, b"ok\nok\n\xc3\x28\n").unwrap();
    let err = read_dataset(&bad_txt, &DatasetLimits::default()).unwrap_err();
    assert!(
        matches!(err, DataError::InvalidUtf8 { line: 3, .. }),
        "{err}"
    );
}
