//! The bottom layer: a source matrix viewed in place ([`Matrix`]), and the few dense operations
//! the rest needs (matrix products through candle, norms and cosines, the mean row and the std).
//! Pure: no I/O, nothing from the rest of the crate but dtypes and errors.

use crate::dtype::DType;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::collections::HashSet;

/// A source matrix: `rows` x `cols` little-endian elements of `dtype`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl Matrix<'_> {
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let w = self.cols * self.dtype.size();
        &self.data[i * w..(i + 1) * w]
    }

    pub fn row_f32(&self, i: usize, out: &mut [f32]) {
        self.dtype.decode(self.row_bytes(i), out);
    }

    /// True when an f64 row holds finite values beyond f32's range.
    pub fn row_overflows_f32(&self, i: usize) -> bool {
        self.dtype == DType::F64
            && self.row_bytes(i).chunks_exact(8).any(|b| {
                let v = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                v.is_finite() && (v as f32).is_infinite()
            })
    }

    /// Indices of rows holding NaN or infinity in the source type itself (rows scanned in
    /// parallel). Finite f64 values beyond f32 are not counted here: they are a conversion issue.
    pub fn nonfinite_rows(&self) -> Vec<usize> {
        (0..self.rows)
            .into_par_iter()
            .with_min_len(1024)
            .filter(|&i| !self.dtype.all_finite(self.row_bytes(i)))
            .collect()
    }
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::Invalid(format!("matrix product: {e}"))
}

/// `a` (n x d) times `b` (m x d) transposed: n x m, row-major.
pub fn matmul_t(a: &[f32], b: &[f32], d: usize) -> Result<Vec<f32>> {
    let (n, m) = (a.len() / d.max(1), b.len() / d.max(1));
    if n == 0 || m == 0 || d == 0 {
        return Ok(vec![0.0; n * m]);
    }
    let ta = Tensor::from_slice(a, (n, d), &Device::Cpu).map_err(candle_err)?;
    let tb = Tensor::from_slice(b, (m, d), &Device::Cpu).map_err(candle_err)?;
    ta.matmul(&tb.t().map_err(candle_err)?)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err)
}

/// `a` (n x p) transposed times `b` (n x q): p x q, row-major.
pub fn matmul_tn(a: &[f32], p: usize, b: &[f32], q: usize) -> Result<Vec<f32>> {
    let n = a.len() / p.max(1);
    if n == 0 || p == 0 || q == 0 {
        return Ok(vec![0.0; p * q]);
    }
    let ta = Tensor::from_slice(a, (n, p), &Device::Cpu).map_err(candle_err)?;
    let tb = Tensor::from_slice(b, (n, q), &Device::Cpu).map_err(candle_err)?;
    ta.t()
        .and_then(|t| t.contiguous())
        .and_then(|t| t.matmul(&tb))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err)
}

pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (na * nb)
}

/// Mean of rows 0..n of the source but `skip`, accumulated in f64.
pub fn mean_row(src: Matrix<'_>, n: usize, skip: &HashSet<u32>) -> Vec<f32> {
    let n = n.min(src.rows).max(1);
    let mut acc = vec![0f64; src.cols];
    let mut tmp = vec![0f32; src.cols];
    let mut count = 0usize;
    for i in (0..n).filter(|&i| !skip.contains(&(i as u32))) {
        src.row_f32(i, &mut tmp);
        for (a, t) in acc.iter_mut().zip(&tmp) {
            *a += *t as f64;
        }
        count += 1;
    }
    let count = count.max(1) as f64;
    acc.into_iter().map(|a| (a / count) as f32).collect()
}

/// Standard deviation of all elements of rows 0..n but `skip`, skipping non-finite values.
pub fn std_of(src: Matrix<'_>, n: usize, skip: &HashSet<u32>) -> f32 {
    let n = n.min(src.rows);
    let (mut s, mut s2, mut k) = (0f64, 0f64, 0f64);
    let mut tmp = vec![0f32; src.cols];
    for i in (0..n).filter(|&i| !skip.contains(&(i as u32))) {
        src.row_f32(i, &mut tmp);
        for &v in tmp.iter().filter(|v| v.is_finite()) {
            s += v as f64;
            s2 += (v as f64) * (v as f64);
            k += 1.0;
        }
    }
    if k < 2.0 {
        return 0.0;
    }
    let mean = s / k;
    ((s2 / k - mean * mean).max(0.0)).sqrt() as f32
}

/// The median L2 norm of rows 0..n but `skip` (non-finite norms left out; None when none is
/// left). Of an even count, the mean of the middle two.
pub fn median_norm(src: Matrix<'_>, n: usize, skip: &HashSet<u32>) -> Option<f32> {
    let n = n.min(src.rows);
    let mut norms: Vec<f32> = (0..n)
        .into_par_iter()
        .filter(|&i| !skip.contains(&(i as u32)))
        .map_init(
            || vec![0f32; src.cols],
            |tmp, i| {
                src.row_f32(i, tmp);
                norm(tmp)
            },
        )
        .filter(|v| v.is_finite())
        .collect();
    if norms.is_empty() {
        return None;
    }
    norms.sort_by(|a, b| a.total_cmp(b));
    let m = norms.len() / 2;
    Some(if norms.len() % 2 == 1 {
        norms[m]
    } else {
        (norms[m - 1] + norms[m]) / 2.0
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 5x4 f32 source whose element (r, c) is r*10 + c (also [`crate::init::build`]'s tests).
    pub(crate) fn src_bytes() -> Vec<u8> {
        (0..5)
            .flat_map(|r| (0..4).map(move |c| (r * 10 + c) as f32))
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    pub(crate) fn matrix(b: &[u8]) -> Matrix<'_> {
        Matrix {
            dtype: DType::F32,
            rows: 5,
            cols: 4,
            data: b,
        }
    }

    #[test]
    fn std_and_mean_helpers() {
        let b = src_bytes();
        assert_eq!(
            mean_row(matrix(&b), 2, &HashSet::new()),
            vec![5.0, 6.0, 7.0, 8.0]
        );
        assert_eq!(
            mean_row(matrix(&b), 3, &HashSet::from([1])),
            vec![10.0, 11.0, 12.0, 13.0]
        );
        let s = std_of(matrix(&b), 5, &HashSet::new());
        assert!(s > 10.0 && s < 20.0, "{s}");
    }

    #[test]
    fn products_match_loops() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(matmul_t(&a, &a, 3).unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
        // a as 3x2, b as 2x2 ... a^T (2x3) needs a 3-row b: use a itself.
        assert_eq!(
            matmul_tn(&a, 2, &a, 2).unwrap(),
            vec![35.0, 44.0, 44.0, 56.0]
        );
        assert_eq!(matmul_t(&b, &b, 2).unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
    }
}
