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
    data: &'a [T],
    /// Row stride (at most `isize::MAX`).
    rs: usize,
    /// Column stride (at most `isize::MAX`).
    cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A view of `data` with row stride `rs` and column stride `cs`; `None` when a stride does
    /// not fit an `isize` (gemm takes signed strides). Which shapes fit is checked per use.
    pub fn new(data: &'a [T], rs: usize, cs: usize) -> Option<Self> {
        (isize::try_from(rs).is_ok() && isize::try_from(cs).is_ok()).then_some(Self {
            data,
            rs,
            cs,
        })
    }

    /// Row-major `[.., cols]` view of `data` (a stride too large for `isize` gives an empty view,
    /// which no non-empty shape fits).
    pub fn rows(data: &'a [T], cols: usize) -> Self {
        Self::new(data, cols, 1).unwrap_or(Self {
            data: &[],
            rs: 0,
            cs: 0,
        })
    }

    /// The transpose of this view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element `(i, j)`, `i < rows`, `j < cols`, lies inside `data`: the last one,
    /// `(rows-1)·rs + (cols-1)·cs`, computed without overflow.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        (rows - 1)
            .checked_mul(self.rs)
            .zip((cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b))
            .is_some_and(|last| last < self.data.len())
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
    if !a.fits(m, k) || !b.fits(k, n) || m.checked_mul(n).is_none_or(|mn| c.len() < mn) {
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
    // SAFETY: `fits` checked, without overflow, that every element (i, l) of `a` for i < m, l < k,
    // and (l, j) of `b` for l < k, j < n, lies inside its slice, and `c` holds the m·n row-major
    // outputs (m·n checked); every stride is at most isize::MAX (private fields, set only by
    // `View::new`, which checks it), and `n` is at most `c.len()`, so the casts are exact. `c` is a
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
    fn views_whose_last_element_overflows_or_lies_outside_are_refused() {
        let data = [1f32; 4];
        assert!(View::new(&data, usize::MAX, 1).is_none());
        let huge = View::new(&data, isize::MAX as usize, 1).unwrap();
        // (3 - 1) · isize::MAX overflows nothing in usize but lies far outside the slice.
        assert!(!huge.fits(3, 1));
        let wide = View::new(&data, 1, isize::MAX as usize).unwrap();
        assert!(!wide.fits(1, 4));
        let mut c = [0f32; 9];
        assert!(matmul((3, 3, 1), huge, View::rows(&data, 3), &mut c, false).is_err());
        assert!(View::rows(&data, 2).fits(2, 2));
        assert!(!View::rows(&data, 2).fits(3, 2));
    }

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
