//! Tensor layouts: the names and shapes of an adapter's trainable tensors, and their id.

use serde::{Deserialize, Serialize};

use crate::cid::ContentId;

/// Name and shape of one tensor (PEFT naming, row-major).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorLayout {
    /// PEFT tensor name, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight`.
    pub name: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
}

impl TensorLayout {
    /// A layout entry.
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            shape,
        }
    }

    /// Number of elements, or `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// Content id of an ordered list of tensor layouts; a delta carries it instead of tensor names.
pub fn layout_id(layout: &[TensorLayout]) -> ContentId {
    let mut h = blake3::Hasher::new_derive_key("hearth v1 adapter layout");
    h.update(&crate::decode::encode(layout));
    ContentId::from_hasher(&h)
}

/// Total number of elements of a layout, or `None` on overflow.
pub fn total_numel(layout: &[TensorLayout]) -> Option<usize> {
    layout
        .iter()
        .try_fold(0usize, |acc, t| acc.checked_add(t.numel()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_names_shapes_and_order() {
        let a = TensorLayout::new("a", vec![2, 3]);
        let b = TensorLayout::new("b", vec![3, 2]);
        let id = layout_id(&[a.clone(), b.clone()]);
        assert_eq!(id, layout_id(&[a.clone(), b.clone()]));
        assert_ne!(id, layout_id(&[b.clone(), a.clone()]));
        assert_ne!(
            id,
            layout_id(&[a.clone(), TensorLayout::new("b", vec![2, 3])])
        );
        assert_ne!(
            id,
            layout_id(&[a.clone(), TensorLayout::new("c", vec![3, 2])])
        );
        assert_eq!(total_numel(&[a, b]), Some(12));
        assert_eq!(TensorLayout::new("x", vec![usize::MAX, 2]).numel(), None);
    }
}
