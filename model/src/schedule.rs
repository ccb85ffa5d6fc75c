//! Learning-rate schedule (linear warmup, cosine decay) and global-norm gradient clipping.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::error::Result;

/// Learning rate at 0-based `step`: linear warmup over `warmup` steps to `peak`, then cosine
/// decay to `peak * min_ratio` at `total`; `peak * min_ratio` after that.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    let floor = peak * min_ratio;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    if step >= total || total <= warmup {
        return floor;
    }
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Global L2 norm of the gradients of `vars` (missing gradients count as zero).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}

/// Scales all gradients so their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads, vars)?;
    if norm.is_finite() && norm > max_norm {
        let factor = max_norm / (norm + 1e-12);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * factor)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn schedule_shape() {
        assert!((lr_at(0, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 1.0, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 1.0, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, 1.0, 10, 110, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_at(110, 1.0, 10, 110, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(5, 1.0, 0, 0, 0.0)).abs() < 1e-12);
    }

    #[test]
    fn clipping_rescales_to_max_norm() {
        let a = Var::from_tensor(&Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[3f32], &Device::Cpu).unwrap()).unwrap();
        // loss = 3a0 + 4a1 + 12 b  →  grads (3, 4) and (12): norm 13
        let w = Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap();
        let loss = ((a.as_tensor() * &w).unwrap().sum_all().unwrap()
            + (b.as_tensor() * 12.).unwrap().sum_all().unwrap())
        .unwrap();
        let mut g = loss.backward().unwrap();
        let vars = vec![a.clone(), b.clone()];
        let n = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
        assert!((n - 13.0).abs() < 1e-5);
        assert!((grad_norm(&g, &vars).unwrap() - 1.0).abs() < 1e-5);
        let ga = g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!((ga[0] - 3.0 / 13.0).abs() < 1e-5);
    }
}
