//! Fitted composition: an affine map from the mean of a token's piece rows to its own row,
//! fitted by ridge regression on the source's own multi-piece tokens. Pure: no I/O.
//!
//! With x the mean of the pieces and y the true row, both centred on their means over the fit
//! set, W minimises |Y - X W|^2 + lambda |W - I|^2: the penalty pulls towards the identity, so a
//! large lambda gives back plain mean composition (shifted by the mean difference) rather than
//! a map to the average row. lambda = alpha * trace(X^T X) / dim, with alpha picked from
//! [`ALPHAS`] by the mean cosine on a seeded fifth of the pairs held out from the fit; the map
//! is then refitted on all pairs with that alpha. When plain mean composition beats every alpha
//! on that fifth, the map is the identity (`identity`): compose-fit never does worse than compose
//! on the source's own validation tokens. Deterministic for a seed.

use crate::error::{Error, Result};
use crate::linalg::{cosine, matmul_t, matmul_tn};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Candidate regularisation strengths, relative to the mean eigenvalue of X^T X.
pub const ALPHAS: [f64; 8] = [1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 10.0];

/// A fitted map: y = y_mean + (x - x_mean) W.
#[derive(Debug, Clone)]
pub struct LinearMap {
    pub dim: usize,
    /// dim x dim, row-major: input i, output j.
    w: Vec<f32>,
    x_mean: Vec<f32>,
    y_mean: Vec<f32>,
    pub alpha: f64,
    pub lambda: f64,
    /// Plain mean composition won the validation: the map changes nothing.
    pub identity: bool,
    /// Pairs the final map was fitted on.
    pub fit_size: usize,
    /// Mean cosine on the held-out fifth, for the chosen alpha and for plain mean composition.
    pub heldout_cosine: f64,
    pub heldout_cosine_plain: f64,
    /// The L2 norm every mapped row is scaled to (set by the engine: the median norm of the
    /// source's vocabulary rows). Ridge shrinks mapped rows to about 0.4 of the true rows' norm;
    /// scaled, they sit closer to how the model reads its own rows (docs/score.md).
    pub target_norm: Option<f32>,
}

impl LinearMap {
    /// Maps one mean-of-pieces row in place, then scales it to [`LinearMap::target_norm`]
    /// (an identity map changes nothing: the row stays the plain mean).
    pub fn apply(&self, x: &mut [f32], tmp: &mut [f32]) {
        if self.identity {
            return;
        }
        let d = self.dim;
        tmp.copy_from_slice(&self.y_mean);
        for ((xi, mi), w) in x.iter().zip(&self.x_mean).zip(self.w.chunks_exact(d)) {
            let xi = xi - mi;
            if xi != 0.0 {
                for (t, w) in tmp.iter_mut().zip(w) {
                    *t += xi * w;
                }
            }
        }
        x.copy_from_slice(tmp);
        let n = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        if let Some(t) = self.target_norm.filter(|_| n > 0.0 && n.is_finite()) {
            x.iter_mut().for_each(|v| *v *= t / n);
        }
    }

    /// Maps many rows (n x dim, row-major) with one matrix product, without the scaling (for
    /// cosines, which do not see it).
    pub fn apply_all(&self, xs: &[f32]) -> Result<Vec<f32>> {
        if self.identity {
            return Ok(xs.to_vec());
        }
        let d = self.dim;
        let centred: Vec<f32> = xs
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(&self.x_mean).map(|(a, m)| a - m))
            .collect();
        // matmul_t multiplies by the transpose: hand it W^T.
        let wt = transpose(&self.w, d);
        let mut out = matmul_t(&centred, &wt, d)?;
        for r in out.chunks_exact_mut(d) {
            r.iter_mut().zip(&self.y_mean).for_each(|(a, m)| *a += m);
        }
        Ok(out)
    }
}

fn transpose(w: &[f32], d: usize) -> Vec<f32> {
    let mut t = vec![0f32; d * d];
    for i in 0..d {
        for j in 0..d {
            t[j * d + i] = w[i * d + j];
        }
    }
    t
}

/// Means, X^T X and X^T Y (in f64) of the centred pairs `idx`.
struct Moments {
    x_mean: Vec<f32>,
    y_mean: Vec<f32>,
    xtx: Vec<f64>,
    xty: Vec<f64>,
}

fn moments(x: &[f32], y: &[f32], d: usize, idx: &[usize]) -> Result<Moments> {
    let mean = |m: &[f32]| {
        let mut acc = vec![0f64; d];
        for &i in idx {
            for (a, v) in acc.iter_mut().zip(&m[i * d..(i + 1) * d]) {
                *a += *v as f64;
            }
        }
        acc.into_iter()
            .map(|a| (a / idx.len().max(1) as f64) as f32)
            .collect::<Vec<f32>>()
    };
    let (x_mean, y_mean) = (mean(x), mean(y));
    let centred = |m: &[f32], mu: &[f32]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| m[i * d..(i + 1) * d].iter().zip(mu).map(|(a, b)| a - b))
            .collect()
    };
    let (xc, yc) = (centred(x, &x_mean), centred(y, &y_mean));
    let to64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    Ok(Moments {
        xtx: to64(matmul_tn(&xc, d, &xc, d)?),
        xty: to64(matmul_tn(&xc, d, &yc, d)?),
        x_mean,
        y_mean,
    })
}

/// Solves (X^T X + lambda I) W = X^T Y + lambda I by Cholesky; None if not positive definite.
fn solve(m: &Moments, d: usize, lambda: f64) -> Option<Vec<f32>> {
    let mut a = m.xtx.clone();
    for i in 0..d {
        a[i * d + i] += lambda;
    }
    // Lower-triangular Cholesky factor in place.
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        let l = s.sqrt();
        a[j * d + j] = l;
        let (head, tail) = a.split_at_mut((j + 1) * d);
        let row_j = &head[j * d..j * d + j];
        tail.par_chunks_mut(d).for_each(|row_i| {
            let mut s = row_i[j];
            for k in 0..j {
                s -= row_i[k] * row_j[k];
            }
            row_i[j] = s / l;
        });
    }
    // One right-hand side per output column, in parallel.
    let cols: Vec<Vec<f64>> = (0..d)
        .into_par_iter()
        .map(|c| {
            let mut z: Vec<f64> = (0..d)
                .map(|i| m.xty[i * d + c] + if i == c { lambda } else { 0.0 })
                .collect();
            for i in 0..d {
                let mut s = z[i];
                for k in 0..i {
                    s -= a[i * d + k] * z[k];
                }
                z[i] = s / a[i * d + i];
            }
            for i in (0..d).rev() {
                let mut s = z[i];
                for k in i + 1..d {
                    s -= a[k * d + i] * z[k];
                }
                z[i] = s / a[i * d + i];
            }
            z
        })
        .collect();
    let mut w = vec![0f32; d * d];
    for (c, col) in cols.iter().enumerate() {
        for (i, v) in col.iter().enumerate() {
            w[i * d + c] = *v as f32;
        }
    }
    Some(w)
}

fn mean_trace(m: &Moments, d: usize) -> f64 {
    (0..d).map(|i| m.xtx[i * d + i]).sum::<f64>() / d.max(1) as f64
}

/// Fits the map on pairs (x = mean of pieces, y = true row), n x d each, row-major.
pub fn fit(x: &[f32], y: &[f32], d: usize, seed: u64) -> Result<LinearMap> {
    let n = x.len() / d.max(1);
    if d == 0 || n < 10 || y.len() != x.len() {
        return Err(Error::NoEvidence(format!(
            "compose-fit: {n} multi-piece source tokens to fit on; at least 10 are needed"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (val, train) = order.split_at(n / 5);
    let mut train = train.to_vec();
    train.sort_unstable();
    let m = moments(x, y, d, &train)?;
    let scale = mean_trace(&m, d).max(f64::MIN_POSITIVE);
    let xv: Vec<f32> = val
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect();
    let val_cos = |map: &LinearMap| -> Result<f64> {
        let pred = map.apply_all(&xv)?;
        Ok(val
            .iter()
            .zip(pred.chunks_exact(d))
            .map(|(&i, p)| cosine(p, &y[i * d..(i + 1) * d]) as f64)
            .sum::<f64>()
            / val.len().max(1) as f64)
    };
    let plain = val
        .iter()
        .map(|&i| cosine(&x[i * d..(i + 1) * d], &y[i * d..(i + 1) * d]) as f64)
        .sum::<f64>()
        / val.len().max(1) as f64;
    let mut best: Option<(f64, f64)> = None;
    for alpha in ALPHAS {
        let Some(w) = solve(&m, d, alpha * scale) else {
            continue;
        };
        let map = LinearMap {
            dim: d,
            w,
            x_mean: m.x_mean.clone(),
            y_mean: m.y_mean.clone(),
            alpha,
            lambda: alpha * scale,
            identity: false,
            fit_size: train.len(),
            heldout_cosine: 0.0,
            heldout_cosine_plain: plain,
            target_norm: None,
        };
        let c = val_cos(&map)?;
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((alpha, c));
        }
    }
    let (alpha, heldout) = best.ok_or_else(|| {
        Error::NoEvidence("compose-fit: the regression is singular for every lambda".into())
    })?;
    if heldout <= plain {
        return Ok(LinearMap {
            dim: d,
            w: Vec::new(),
            x_mean: Vec::new(),
            y_mean: Vec::new(),
            alpha: 0.0,
            lambda: 0.0,
            identity: true,
            fit_size: n,
            heldout_cosine: plain,
            heldout_cosine_plain: plain,
            target_norm: None,
        });
    }
    let m = moments(x, y, d, &order)?;
    let lambda = alpha * mean_trace(&m, d).max(f64::MIN_POSITIVE);
    let w = solve(&m, d, lambda).ok_or_else(|| {
        Error::NoEvidence("compose-fit: the regression is singular on the full fit set".into())
    })?;
    Ok(LinearMap {
        dim: d,
        w,
        x_mean: m.x_mean,
        y_mean: m.y_mean,
        alpha,
        lambda,
        identity: false,
        fit_size: n,
        heldout_cosine: heldout,
        heldout_cosine_plain: plain,
        target_norm: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn recovers_a_known_linear_distortion() {
        // y = A x + b; the fitted map must beat plain x by far on new points.
        let d = 6;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let g = Normal::new(0.0f32, 1.0).unwrap();
        let a: Vec<f32> = (0..d * d).map(|_| g.sample(&mut rng)).collect();
        let b: Vec<f32> = (0..d).map(|_| g.sample(&mut rng)).collect();
        let make = |rng: &mut ChaCha8Rng, n: usize| {
            let x: Vec<f32> = (0..n * d).map(|_| g.sample(rng)).collect();
            let y: Vec<f32> = x
                .chunks_exact(d)
                .flat_map(|r| {
                    (0..d)
                        .map(|j| (0..d).map(|i| r[i] * a[i * d + j]).sum::<f32>() + b[j])
                        .collect::<Vec<_>>()
                })
                .collect();
            (x, y)
        };
        let (x, y) = make(&mut rng, 400);
        let map = fit(&x, &y, d, 0).unwrap();
        assert!(map.heldout_cosine > 0.99, "{}", map.heldout_cosine);
        assert!(map.alpha <= 1e-2, "{}", map.alpha);
        let (xt, yt) = make(&mut rng, 50);
        let pred = map.apply_all(&xt).unwrap();
        let mut tmp = vec![0f32; d];
        for k in 0..50 {
            let c = cosine(&pred[k * d..(k + 1) * d], &yt[k * d..(k + 1) * d]);
            assert!(c > 0.99, "{c}");
            let mut one = xt[k * d..(k + 1) * d].to_vec();
            map.apply(&mut one, &mut tmp);
            for (p, q) in one.iter().zip(&pred[k * d..(k + 1) * d]) {
                assert!((p - q).abs() < 1e-3, "{p} {q}");
            }
        }
        // Same inputs, same seed: the same map.
        assert_eq!(fit(&x, &y, d, 0).unwrap().w, map.w);
        // With a target norm, a mapped row keeps its direction and takes that norm.
        let mut scaled = map.clone();
        scaled.target_norm = Some(3.0);
        let mut one = xt[..d].to_vec();
        scaled.apply(&mut one, &mut tmp);
        let n = one.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 3.0).abs() < 1e-4, "{n}");
        assert!(cosine(&one, &pred[..d]) > 0.9999);
    }

    #[test]
    fn falls_back_to_the_identity_when_the_mean_is_already_right() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let g = Normal::new(0.0f32, 1.0).unwrap();
        let x: Vec<f32> = (0..200 * 4).map(|_| g.sample(&mut rng)).collect();
        let mut map = fit(&x, &x, 4, 0).unwrap();
        // An identity map leaves the plain mean as it is, target norm or not.
        map.target_norm = Some(100.0);
        assert!(map.identity);
        assert_eq!(map.apply_all(&x[..8]).unwrap(), x[..8].to_vec());
        let (mut one, mut tmp) = (x[..4].to_vec(), vec![0f32; 4]);
        map.apply(&mut one, &mut tmp);
        assert_eq!(one, x[..4].to_vec());
    }

    #[test]
    fn too_few_pairs_is_an_error() {
        let e = fit(&[0.0; 8], &[0.0; 8], 2, 0).unwrap_err().to_string();
        assert!(e.contains("at least 10"), "{e}");
    }
}
