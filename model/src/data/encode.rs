//! Tokenizing examples into token ids with loss masks.
//!
//! Special tokens are never added implicitly: text is encoded with `add_special_tokens = false`
//! and the only specials present are those the chat template writes out.

use tokenizers::Tokenizer;

use super::example::{Example, Message, Record, ASSISTANT};
use super::template::ChatTemplate;
use super::DataError;

/// One tokenized example: ids and per-token target flags, not yet packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// `loss_mask[i]` says whether `tokens[i]` is a training target.
    pub loss_mask: Vec<bool>,
}

impl EncodedExample {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of target tokens.
    pub fn target_count(&self) -> usize {
        self.loss_mask.iter().filter(|m| **m).count()
    }
}

/// The id of a special token's text, or an error naming it.
pub fn special_id(tokenizer: &Tokenizer, token: &str) -> Result<u32, DataError> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| DataError::UnknownSpecialToken {
            token: token.to_string(),
        })
}

/// Encodes text without adding special tokens.
pub fn encode_text(tokenizer: &Tokenizer, text: &str, line: usize) -> Result<Vec<u32>, DataError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| DataError::Tokenize {
            line,
            message: e.to_string(),
        })
}

/// Tokenizes a record: text gets a target on every token; a chat is rendered with the template
/// and only assistant turns (through their end-of-turn token) are targets.
pub fn encode_record(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    record: &Record,
) -> Result<EncodedExample, DataError> {
    match &record.example {
        Example::Text(text) => {
            let tokens = encode_text(tokenizer, text, record.line)?;
            let loss_mask = vec![true; tokens.len()];
            Ok(EncodedExample { tokens, loss_mask })
        }
        Example::Chat(messages) => encode_chat(tokenizer, template, messages, record.line),
    }
}

/// Tokenizes a conversation with assistant-only targets.
///
/// The template is rendered once per message prefix; the text each message adds is tokenized on
/// its own, so a prompt encodes exactly as [`encode_prompt`] encodes it at inference time. Before
/// each assistant message the prefix is rendered with `add_generation_prompt = true` so the
/// assistant header is not a target. Within an assistant segment tokens are targets up to and
/// including the first end-of-turn token; what follows it (e.g. a newline) is not.
pub fn encode_chat(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    line: usize,
) -> Result<EncodedExample, DataError> {
    encode_turns(tokenizer, template, messages, line).map(|(example, _)| example)
}

/// Encodes the prompt for generating the next assistant turn after `messages`, segmented exactly
/// as [`encode_chat`] segments a conversation, so training and inference see identical ids.
pub fn encode_prompt(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
) -> Result<Vec<u32>, DataError> {
    let (mut out, prev) = encode_turns(tokenizer, template, messages, 0)?;
    let with_prompt = template.render(messages, true, 0)?;
    let header = suffix(&prev, &with_prompt, 0, messages.len())?;
    out.tokens.extend(encode_text(tokenizer, header, 0)?);
    Ok(out.tokens)
}

/// Encodes all turns; also returns the full rendering so far.
fn encode_turns(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    line: usize,
) -> Result<(EncodedExample, String), DataError> {
    let end_of_turn = special_id(tokenizer, template.end_of_turn())?;
    let mut out = EncodedExample {
        tokens: Vec::new(),
        loss_mask: Vec::new(),
    };
    let mut prev = String::new();
    for i in 0..messages.len() {
        let head = messages.get(..i).unwrap_or_default();
        let upto = messages.get(..=i).unwrap_or_default();
        let is_assistant = upto.last().is_some_and(|m| m.role == ASSISTANT);
        if is_assistant {
            let with_prompt = template.render(head, true, line)?;
            let header = suffix(&prev, &with_prompt, line, i)?;
            push(&mut out, &encode_text(tokenizer, header, line)?, |_| false);
            let full = template.render(upto, false, line)?;
            let body = suffix(&with_prompt, &full, line, i)?;
            let ids = encode_text(tokenizer, body, line)?;
            let stop = ids.iter().position(|t| *t == end_of_turn);
            push(&mut out, &ids, |k| stop.is_none_or(|s| k <= s));
            prev = full;
        } else {
            let full = template.render(upto, false, line)?;
            let seg = suffix(&prev, &full, line, i)?;
            push(&mut out, &encode_text(tokenizer, seg, line)?, |_| false);
            prev = full;
        }
    }
    Ok((out, prev))
}

/// The part of `full` after `prefix`, or an error if `prefix` is not a prefix of it.
fn suffix<'a>(
    prefix: &str,
    full: &'a str,
    line: usize,
    messages: usize,
) -> Result<&'a str, DataError> {
    full.strip_prefix(prefix)
        .ok_or(DataError::TemplateNotIncremental { line, messages })
}

fn push(out: &mut EncodedExample, ids: &[u32], target: impl Fn(usize) -> bool) {
    out.tokens.extend_from_slice(ids);
    out.loss_mask.extend((0..ids.len()).map(target));
}
