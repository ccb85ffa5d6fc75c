//! Greedy generation (no kv-cache: the context is re-run each step).

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::llama::Model;

/// Greedily extends `prompt` by up to `max_new` tokens, stopping after `eos`. Returns the new tokens.
pub fn generate_greedy(
    model: &Model,
    prompt: &[u32],
    max_new: usize,
    eos: Option<u32>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::Input("empty prompt".into()));
    }
    let max_ctx = model.config().max_position;
    let mut ctx = prompt.to_vec();
    let mut out = Vec::with_capacity(max_new);
    for _ in 0..max_new {
        let window = ctx.get(ctx.len().saturating_sub(max_ctx)..).unwrap_or(&ctx);
        let ids = Tensor::from_slice(window, (1, window.len()), model.device())?;
        let logits = model.last_logits(&ids)?.squeeze(0)?;
        let next = logits.argmax(0)?.to_scalar::<u32>()?;
        out.push(next);
        ctx.push(next);
        if Some(next) == eos {
            break;
        }
    }
    Ok(out)
}
