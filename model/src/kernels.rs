//! Small CPU building blocks for the fused ops: a float trait and a bounds-checked `gemm` call.

use candle_core::WithDType;

/// Float types the fused CPU kernels run on (f32 and f64).
pub trait Real: WithDType + Send + Sync {
    /// `e^self`.
    fn exp(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// A strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T> {
    /// Backing slice, starting at element `(0, 0)`.
    pub data: &'a [T],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// Row-major `[.., cols]` view of `data`.
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `c = a·b` (or `c += a·b` with `accumulate`) for `a: [m, k]`, `b: [k, n]`, `c: [m, n]` row-major,
/// single-threaded (callers parallelise over heads).
pub fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    a: View<'_, T>,
    b: View<'_, T>,
    c: &mut [T],
    accumulate: bool,
) -> candle_core::Result<()> {
    if !a.fits(m, k) || !b.fits(k, n) || c.len() < m * n {
        candle_core::bail!("kernels::matmul: views too small for {m}x{k} · {k}x{n}");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::zero());
        }
        return Ok(());
    }
    // SAFETY: `fits` checked that every element (i, l) of `a` for i < m, l < k, and (l, j) of `b`
    // for l < k, j < n, lies inside its slice, and `c` holds the m·n row-major outputs; all
    // strides are non-negative and below isize::MAX since they index existing slices. `c` is a
    // unique borrow, so it does not alias `a` or `b`. T is f32 or f64 (the `Real` impls), which
    // gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_strided_and_accumulating() {
        // a = [[1, 2, 3], [4, 5, 6]], b = aᵀ via strides
        let a = [1f64, 2., 3., 4., 5., 6.];
        let mut c = [1f64; 4];
        matmul(
            (2, 2, 3),
            View::rows(&a, 3),
            View::rows(&a, 3).t(),
            &mut c,
            false,
        )
        .unwrap();
        assert_eq!(c, [14., 32., 32., 77.]);
        matmul(
            (2, 2, 3),
            View::rows(&a, 3),
            View::rows(&a, 3).t(),
            &mut c,
            true,
        )
        .unwrap();
        assert_eq!(c, [28., 64., 64., 154.]);
        assert!(matmul(
            (3, 2, 3),
            View::rows(&a, 3),
            View::rows(&a, 3).t(),
            &mut c,
            false
        )
        .is_err());
    }
}
