//! Activation checkpointing: the loss gradient with one decoder block's activations alive at a
//! time, each block recomputed during the backward pass (Chen et al. 2016, arXiv:1604.06174).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::llama::{causal_mask, Model};

/// The weighted next-token NLL sum of `ids` (as [`Model::head_nll_sum`] scores it) over `divisor`, and
/// its gradient, holding only each block's input `[b*t, hidden]` through the forward pass.
///
/// The backward pass walks the blocks from the top: it recomputes block `i` from its saved input
/// (with the same dropout masks), and back-propagates `Σ block_i(x) · g`, where `g` is the
/// gradient arriving at the block's output, which gives the adapter gradients of block `i` and
/// the gradient at its input exactly (a vector-Jacobian product). Cost: one more forward pass.
/// Peak activations: one block's, plus one `[b*t, hidden]` tensor per block, plus the LM head's.
/// The returned store holds a gradient for every trainable adapter `Var` the loss reaches.
pub fn loss_and_grads(
    model: &Model,
    ids: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    divisor: f64,
    dropout_seed: Option<u64>,
) -> Result<(f64, GradStore)> {
    let (embedded, b, t) = model.embed_ids(ids)?;
    let mask = causal_mask(t, model.dtype(), model.device())?;
    let layers = model.layers();
    let mut inputs = Vec::with_capacity(layers);
    let mut x = embedded.detach();
    for i in 0..layers {
        // `detach` drops the block's graph (and the activations it holds) right away.
        let y = model.block(i, &x, b, t, &mask, dropout_seed)?.detach();
        inputs.push(x);
        x = y;
    }
    let top = Var::from_tensor(&x)?;
    let hidden = model.final_norm(top.as_tensor())?;
    let loss = (model.head_nll_sum(&hidden, targets, weights)? / divisor)?;
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let mut grads = loss.backward()?;
    let mut upstream = grads
        .remove(top.as_tensor())
        .ok_or_else(|| ModelError::Input("the loss does not reach the last block".into()))?;
    let vars = model.trainable_vars();
    for i in (0..layers).rev() {
        let saved = inputs
            .pop()
            .ok_or_else(|| ModelError::Input(format!("no saved input for block {i}")))?;
        let input = Var::from_tensor(&saved)?;
        drop(saved);
        let y = model.block(i, input.as_tensor(), b, t, &mask, dropout_seed)?;
        let mut block_grads = (y * &upstream)?.sum_all()?.backward()?;
        for v in &vars {
            if let Some(g) = block_grads.remove(v.as_tensor()) {
                let sum = match grads.remove(v.as_tensor()) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                grads.insert(v.as_tensor(), sum);
            }
        }
        if i > 0 {
            upstream = block_grads.remove(input.as_tensor()).ok_or_else(|| {
                ModelError::Input(format!("block {i} does not depend on its input"))
            })?;
        }
    }
    Ok((value, grads))
}
