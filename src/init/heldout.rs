//! How good re-initialised rows are, measured against rows we know: for held-out source tokens,
//! the cosine of each predicted row to the true one, where the true row ranks among all source
//! rows by cosine to the prediction (top-1, top-10, median rank), and the norm ratio. Pure: no I/O.

use crate::error::Result;
use crate::linalg::{cosine, matmul_t, norm, Matrix};
use crate::report::MethodScore;
use rayon::prelude::*;

/// Source rows compared per matrix product (bounds memory: 8192 x samples similarities).
const BLOCK: usize = 8192;

fn normalized(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Scores predictions (`truth.len()` rows of `src.cols`, row-major) of the source rows `truth`,
/// ranking each true row among source rows 0..vocab_rows. A zero prediction has no direction:
/// cosine 0, ranked last.
pub fn score(
    method: &str,
    src: Matrix<'_>,
    vocab_rows: usize,
    truth: &[u32],
    preds: &[f32],
) -> Result<MethodScore> {
    let d = src.cols;
    let n = truth.len();
    let rows = vocab_rows.min(src.rows);
    let mut p = preds.to_vec();
    let mut cos = vec![0f32; n];
    let mut ratio = vec![0f64; n];
    let mut zero = vec![false; n];
    let mut t = vec![0f32; d];
    for i in 0..n {
        let pr = &mut p[i * d..(i + 1) * d];
        src.row_f32(truth[i] as usize, &mut t);
        let (np, nt) = (norm(pr), norm(&t));
        zero[i] = np == 0.0 || !np.is_finite();
        ratio[i] = if nt > 0.0 { (np / nt) as f64 } else { 0.0 };
        cos[i] = cosine(pr, &t);
        normalized(pr);
    }
    // Rank = 1 + the number of other source rows closer to the prediction than the true row.
    let mut above = vec![0usize; n];
    let mut block = vec![0f32; BLOCK.min(rows.max(1)) * d];
    for start in (0..rows).step_by(BLOCK) {
        let end = (start + BLOCK).min(rows);
        let b = &mut block[..(end - start) * d];
        b.par_chunks_mut(d.max(1)).enumerate().for_each(|(k, r)| {
            src.row_f32(start + k, r);
            normalized(r);
        });
        let sims = matmul_t(&p, b, d)?;
        above.par_iter_mut().enumerate().for_each(|(i, count)| {
            let row = &sims[i * (end - start)..(i + 1) * (end - start)];
            *count += row
                .iter()
                .enumerate()
                .filter(|&(k, s)| start + k != truth[i] as usize && *s > cos[i])
                .count();
        });
    }
    let ranks: Vec<f64> = (0..n)
        .map(|i| {
            if zero[i] {
                rows as f64
            } else {
                (above[i] + 1) as f64
            }
        })
        .collect();
    let share = |k: f64| {
        if n == 0 {
            0.0
        } else {
            ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64
        }
    };
    Ok(MethodScore {
        method: method.to_string(),
        tokens: n,
        mean_cosine: if n == 0 {
            0.0
        } else {
            cos.iter().map(|&c| c as f64).sum::<f64>() / n as f64
        },
        top1: share(1.0),
        top10: share(10.0),
        median_rank: median(ranks),
        norm_ratio: median(ratio),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn perfect_predictions_rank_first_and_noise_ranks_lower() {
        // Four orthogonal-ish rows in 3-D.
        let rows = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.0];
        let b = bytes(&rows);
        let m = Matrix {
            dtype: DType::F32,
            rows: 4,
            cols: 3,
            data: &b,
        };
        let s = score("exact", m, 4, &[0, 3], &[2.0, 0.0, 0.0, 0.7, 0.7, 0.0]).unwrap();
        assert!((s.mean_cosine - 1.0).abs() < 1e-6);
        assert_eq!((s.top1, s.top10, s.median_rank), (1.0, 1.0, 1.0));
        assert!((s.norm_ratio - 1.5).abs() < 1e-6);
        // Predicting row 1 for token 0: rank of row 0 is 3 (rows 1 and 3 are closer).
        let s = score("off", m, 4, &[0], &[0.0, 1.0, 0.0]).unwrap();
        assert_eq!((s.top1, s.median_rank), (0.0, 3.0));
        let s = score("zeros", m, 4, &[0], &[0.0, 0.0, 0.0]).unwrap();
        assert_eq!((s.mean_cosine, s.median_rank), (0.0, 4.0));
    }
}
