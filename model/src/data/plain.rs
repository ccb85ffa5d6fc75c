//! Plain text datasets: documents separated by blank lines, every token a target.

use super::example::{Example, Record};
use super::{DataError, DatasetLimits};

/// Splits plain text into documents at runs of blank lines (lines that are empty or whitespace).
/// Each document keeps its inner line breaks and records the line it starts on.
pub fn read_plain_text(text: &str, limits: &DatasetLimits) -> Result<Vec<Record>, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut start = 0usize;
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            flush(&mut current, start, &mut records, limits)?;
        } else {
            if current.is_empty() {
                start = i + 1;
            }
            current.push(raw);
        }
    }
    flush(&mut current, start, &mut records, limits)?;
    Ok(records)
}

fn flush(
    current: &mut Vec<&str>,
    line: usize,
    records: &mut Vec<Record>,
    limits: &DatasetLimits,
) -> Result<(), DataError> {
    if current.is_empty() {
        return Ok(());
    }
    if records.len() >= limits.max_examples {
        return Err(DataError::TooManyExamples {
            limit: limits.max_examples,
        });
    }
    records.push(Record {
        line,
        example: Example::Text(current.join("\n")),
    });
    current.clear();
    Ok(())
}
