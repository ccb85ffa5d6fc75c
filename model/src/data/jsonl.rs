//! JSONL dataset rows: `text`, `instruction`/`input`/`output`, `instruction`/`context`/`response`
//! and chat `messages`, one JSON object per line.

use std::io::{BufRead, Read};

use serde_json::{Map, Value};

use super::example::{Example, Message, Record, ASSISTANT};
use super::{DataError, DatasetLimits};

/// Reads every row of a JSONL stream. Blank lines are skipped; any other bad line is an error
/// naming its 1-based line number. Lines longer than `limits.max_line_bytes` are rejected without
/// being buffered whole.
pub fn read_jsonl<R: BufRead>(
    mut reader: R,
    limits: &DatasetLimits,
) -> Result<Vec<Record>, DataError> {
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        line += 1;
        buf.clear();
        let cap = u64::try_from(limits.max_line_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(2);
        let n = (&mut reader)
            .take(cap)
            .read_until(b'\n', &mut buf)
            .map_err(|source| DataError::ReadLine { line, source })?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n as u64 == cap {
            return Err(DataError::LineTooLong {
                line,
                limit: limits.max_line_bytes,
            });
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.len() > limits.max_line_bytes {
            return Err(DataError::LineTooLong {
                line,
                limit: limits.max_line_bytes,
            });
        }
        let mut bytes = buf.as_slice();
        if line == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if records.len() >= limits.max_examples {
            return Err(DataError::TooManyExamples {
                limit: limits.max_examples,
            });
        }
        let example = parse_row(bytes, line, limits)?;
        records.push(Record { line, example });
    }
    Ok(records)
}

/// Parses one JSONL line into an example.
pub fn parse_row(bytes: &[u8], line: usize, limits: &DatasetLimits) -> Result<Example, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::InvalidUtf8 {
        line,
        message: e.to_string(),
    })?;
    let value: Value = serde_json::from_str(text).map_err(|e| DataError::Json {
        line,
        message: e.to_string(),
    })?;
    let Value::Object(obj) = value else {
        return Err(DataError::NotAnObject {
            line,
            found: kind(&value),
        });
    };
    if obj.contains_key("messages") {
        return parse_messages(&obj, line, limits);
    }
    if obj.contains_key("instruction") {
        let instruction = required(&obj, line, "instruction")?;
        return if obj.contains_key("output") {
            let input = optional(&obj, line, "input")?;
            let output = required(&obj, line, "output")?;
            Ok(Example::instruction(instruction, input, output))
        } else if obj.contains_key("response") {
            let context = optional(&obj, line, "context")?;
            let response = required(&obj, line, "response")?;
            Ok(Example::instruction(instruction, context, response))
        } else {
            Err(DataError::MissingField {
                line,
                field: "output",
            })
        };
    }
    if obj.contains_key("text") {
        return Ok(Example::Text(required(&obj, line, "text")?.to_string()));
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).take(16).collect();
    Err(DataError::UnrecognisedRow {
        line,
        keys: keys.join(", "),
    })
}

fn parse_messages(
    obj: &Map<String, Value>,
    line: usize,
    limits: &DatasetLimits,
) -> Result<Example, DataError> {
    let list = match obj.get("messages") {
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(DataError::FieldType {
                line,
                field: "messages".into(),
                expected: "an array",
                found: kind(other),
            })
        }
        None => {
            return Err(DataError::MissingField {
                line,
                field: "messages",
            })
        }
    };
    if list.len() > limits.max_messages {
        return Err(DataError::TooManyMessages {
            line,
            count: list.len(),
            limit: limits.max_messages,
        });
    }
    let mut messages = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(msg) = item else {
            return Err(DataError::FieldType {
                line,
                field: format!("messages[{i}]"),
                expected: "an object",
                found: kind(item),
            });
        };
        let role = message_str(msg, line, i, "role")?;
        if role.trim().is_empty() {
            return Err(DataError::EmptyField {
                line,
                field: format!("messages[{i}].role"),
            });
        }
        let content = message_str(msg, line, i, "content")?;
        messages.push(Message::new(role, content));
    }
    if !messages
        .iter()
        .any(|m| m.role == ASSISTANT && !m.content.trim().is_empty())
    {
        return Err(DataError::NoAssistant { line });
    }
    Ok(Example::Chat(messages))
}

fn message_str<'a>(
    msg: &'a Map<String, Value>,
    line: usize,
    index: usize,
    field: &str,
) -> Result<&'a str, DataError> {
    match msg.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(DataError::FieldType {
            line,
            field: format!("messages[{index}].{field}"),
            expected: "a string",
            found: kind(other),
        }),
        None => Err(DataError::FieldType {
            line,
            field: format!("messages[{index}].{field}"),
            expected: "a string",
            found: "nothing",
        }),
    }
}

/// A field that must be a non-blank string.
fn required<'a>(
    obj: &'a Map<String, Value>,
    line: usize,
    field: &'static str,
) -> Result<&'a str, DataError> {
    match optional(obj, line, field)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(DataError::EmptyField {
            line,
            field: field.into(),
        }),
        None => Err(DataError::MissingField { line, field }),
    }
}

/// A field that may be absent or null, and otherwise must be a string.
fn optional<'a>(
    obj: &'a Map<String, Value>,
    line: usize,
    field: &'static str,
) -> Result<Option<&'a str>, DataError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DataError::FieldType {
            line,
            field: field.into(),
            expected: "a string",
            found: kind(other),
        }),
    }
}

/// The JSON type name of a value, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
