//! Chat templates (Hugging Face Jinja) rendered with minijinja.

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use super::example::Message;
use super::DataError;

const NAME: &str = "chat";

/// ChatML, the format SmolLM2 uses (without its default system prompt).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A compiled chat template plus the special tokens it refers to.
///
/// Rendering follows Hugging Face's conventions: `trim_blocks` and `lstrip_blocks` on, variables
/// `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and a `raise_exception` function.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    end_of_turn: String,
}

#[derive(Serialize)]
struct Context<'a> {
    messages: &'a [Message],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template. `eos_token` is the model's end-of-sequence token text; it
    /// also separates packed examples and ends each assistant turn unless
    /// [`ChatTemplate::with_end_of_turn`] says otherwise.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, DataError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| DataError::TemplateSyntax {
                message: e.to_string(),
            })?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            end_of_turn: eos_token.to_string(),
        })
    }

    /// ChatML with `<|im_start|>` as BOS and `<|im_end|>` as EOS and end of turn.
    pub fn chatml() -> Result<Self, DataError> {
        Self::new(CHATML, "<|im_start|>", "<|im_end|>")
    }

    /// Sets the token text that ends an assistant turn (targets stop after it).
    pub fn with_end_of_turn(mut self, token: &str) -> Self {
        self.end_of_turn = token.to_string();
        self
    }

    /// The end-of-sequence token text.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The beginning-of-sequence token text.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The token text that ends an assistant turn.
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    /// Renders `messages`, appending the assistant header when `add_generation_prompt`.
    /// `line` only labels errors.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        line: usize,
    ) -> Result<String, DataError> {
        let err = |e: minijinja::Error| DataError::TemplateRender {
            line,
            message: e.to_string(),
        };
        let template = self.env.get_template(NAME).map_err(err)?;
        template
            .render(Context {
                messages,
                add_generation_prompt,
                bos_token: &self.bos_token,
                eos_token: &self.eos_token,
            })
            .map_err(err)
    }
}
