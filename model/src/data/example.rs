//! Dataset examples before tokenization: plain text or a chat.

use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Speaker role, e.g. `system`, `user` or `assistant`.
    pub role: String,
    /// Message text.
    pub content: String,
}

impl Message {
    /// Builds a message from a role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The role name whose messages are trained on.
pub const ASSISTANT: &str = "assistant";

/// One dataset example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// Raw text; every token is a training target.
    Text(String),
    /// A conversation rendered with the chat template; only assistant tokens are targets.
    Chat(Vec<Message>),
}

impl Example {
    /// An instruction example as a two-turn chat: user = instruction (plus `extra` after a blank
    /// line when non-empty), assistant = response.
    pub fn instruction(instruction: &str, extra: Option<&str>, response: &str) -> Self {
        let user = match extra.map(str::trim).filter(|e| !e.is_empty()) {
            Some(extra) => format!("{instruction}\n\n{extra}"),
            None => instruction.to_string(),
        };
        Example::Chat(vec![
            Message::new("user", user),
            Message::new(ASSISTANT, response),
        ])
    }
}

/// An example with the 1-based line of the file it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line number of the example's start in its file (0 when not from a file).
    pub line: usize,
    /// The example.
    pub example: Example,
}
