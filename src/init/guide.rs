//! An auxiliary space as a guide: a token the source lacks but the auxiliary space knows (a static
//! vector file, FOCUS / WECHSEL style, or a donor model's embedding, `--donor`) gets a combination
//! of the source rows of anchors (tokens in both the source vocabulary and the auxiliary space),
//! by one of two rules ([`Rule`]):
//! - softmax: the weighted mean of its nearest anchors by cosine in the auxiliary space, weighted
//!   by a softmax over the top [`TOP_K`] similarities at temperature [`TEMPERATURE`] (WECHSEL's
//!   choice);
//! - OMP (orthogonal matching pursuit, tokensurgeon's rule): k anchors picked greedily so that
//!   their auxiliary rows, refitted by least squares at each step, reconstruct the token's
//!   auxiliary row; the same coefficients then combine their source rows. Pure: no I/O.
//!
//! (Over 400 lines: the two rules, OMP's incremental Cholesky refit and their tests on small
//! matrices belong together.)

use crate::error::Result;
use crate::linalg::{matmul_t, norm};
use rayon::prelude::*;
use std::collections::HashSet;

/// Anchors per token.
pub const TOP_K: usize = 10;
/// Softmax temperature over cosine similarities.
pub const TEMPERATURE: f32 = 0.1;
/// Queries per matrix product, at most.
const QUERY_BLOCK: usize = 1024;
/// Similarities per matrix product, at most (8 MB of f32; the product's copies hold a few times
/// this): a static file that shares tens of thousands of words with the source vocabulary gives
/// that many anchors, and 1024 queries against them would hold hundreds of MB.
const SIMS_BUDGET: usize = 2 << 20;

/// OMP's anchors per token unless `--guide-k` says otherwise.
pub const DEFAULT_K: usize = 32;
/// The rule unless `--guide` says otherwise, by measurement (docs/score.md): with a donor
/// model, OMP (all-MiniLM-L6-v2 guided by all-mpnet-base-v2: top-1 36% against 1%, top-10 97%
/// against 87%, mean cosine a hair higher); with static vectors, the softmax (GloVe 6B 50d as
/// MiniLM's guide: mean cosine 0.50 against 0.35, top-10 55% against 52%).
pub fn default_rule(donor: bool) -> Rule {
    if donor {
        Rule::Omp { k: DEFAULT_K }
    } else {
        Rule::Softmax
    }
}
/// OMP picks each token's anchors among this many: those with the largest |cosine| to it in the
/// auxiliary space (the first pick is always among them). Their rows (1.5 MB at 768 dims) stay in
/// cache through the k passes; OMP over all 29k anchors of the measured pair took 12 times the
/// CPU time for a lower mean cosine (docs/score.md), and a pool of 2048, 2 times for 0.02 less.
pub const OMP_POOL: usize = 512;
/// An anchor whose auxiliary row is this close to the span of those already picked (its squared
/// distance, rows of unit length) is passed over: near-dependent picks are what makes least
/// squares coefficients, and so row norms, explode.
const OMP_PIVOT: f64 = 1e-4;

/// How a guided row is made from its anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The softmax-weighted mean of the [`TOP_K`] nearest anchors.
    Softmax,
    /// Orthogonal matching pursuit with at most `k` anchors.
    Omp { k: usize },
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Softmax => "softmax",
            Rule::Omp { .. } => "omp",
        }
    }

    /// The rule as applied with `dim`-dimensional auxiliary rows: OMP's k is capped at the
    /// dimension (k >= dim picks reconstruct any row exactly, with exploding coefficients).
    pub fn capped(self, dim: usize) -> Rule {
        match self {
            Rule::Omp { k } => Rule::Omp {
                k: k.min(dim).max(1),
            },
            r => r,
        }
    }

    /// For reports and metadata.
    pub fn describe(self) -> String {
        match self {
            Rule::Softmax => format!("top {TOP_K} softmax, temperature {TEMPERATURE}"),
            Rule::Omp { k } => format!("omp, k {k} (among the {OMP_POOL} nearest anchors)"),
        }
    }
}

/// Tokens in both spaces: their source row and their unit-length auxiliary vector.
pub struct Anchors {
    pub ids: Vec<u32>,
    pub names: Vec<String>,
    pub dim: usize,
    /// ids.len() x dim, each row of unit length.
    vecs: Vec<f32>,
    /// Each auxiliary vector's length before it was made unit (OMP's coefficients are those of
    /// the vectors as they are).
    norms: Vec<f32>,
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Anchors {
    pub fn new(dim: usize) -> Self {
        Anchors {
            ids: Vec::new(),
            names: Vec::new(),
            dim,
            vecs: Vec::new(),
            norms: Vec::new(),
        }
    }

    pub fn push(&mut self, id: u32, name: &str, v: &[f32]) {
        self.ids.push(id);
        self.names.push(name.to_string());
        let start = self.vecs.len();
        self.vecs.extend_from_slice(v);
        self.norms.push(norm(v));
        unit(&mut self.vecs[start..]);
    }

    fn vec(&self, k: usize) -> &[f32] {
        &self.vecs[k * self.dim..(k + 1) * self.dim]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// For each query (auxiliary vectors, n x dim), its anchors and their coefficients by `rule`
    /// (softmax: the top anchors, weights summing to 1; OMP: see [`Anchors::omp`]), anchors in
    /// `exclude` (by source id) left out; ties broken by anchor order. Deterministic.
    pub fn weights(
        &self,
        queries: &[f32],
        exclude: &HashSet<u32>,
        rule: Rule,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let d = self.dim;
        let mut out = Vec::with_capacity(queries.len() / d.max(1));
        let per_block = (SIMS_BUDGET / self.len().max(1)).clamp(1, QUERY_BLOCK);
        for block in queries.chunks(per_block * d.max(1)) {
            let mut q = block.to_vec();
            q.chunks_exact_mut(d.max(1)).for_each(unit);
            let sims = matmul_t(&q, &self.vecs, d)?;
            let a = self.len();
            if let Rule::Omp { k } = rule {
                let open: Vec<bool> = self.ids.iter().map(|i| !exclude.contains(i)).collect();
                out.par_extend(
                    block
                        .par_chunks(d.max(1))
                        .zip(sims.par_chunks(a.max(1)))
                        .map(|(y, s)| self.omp(y, s, &open, k)),
                );
                continue;
            }
            // One scratch list of every anchor's similarity, reused: each query keeps only its
            // top k (a list per query with room for every anchor held GBs at 30k queries).
            let mut best: Vec<(usize, f32)> = Vec::with_capacity(a);
            for row in sims.chunks(a.max(1)).take(block.len() / d.max(1)) {
                best.clear();
                best.extend(
                    row.iter()
                        .enumerate()
                        .filter(|(k, _)| !exclude.contains(&self.ids[*k]))
                        .map(|(k, s)| (k, *s)),
                );
                let k = TOP_K.min(best.len());
                if k == 0 {
                    out.push(Vec::new());
                    continue;
                }
                best.select_nth_unstable_by(k - 1, |x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                best.truncate(k);
                best.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                let top = best[0].1;
                let mut total = 0.0;
                for b in best.iter_mut() {
                    b.1 = ((b.1 - top) / TEMPERATURE).exp();
                    total += b.1;
                }
                best.iter_mut().for_each(|b| b.1 /= total);
                out.push(best.clone());
            }
        }
        Ok(out)
    }
    /// OMP for one query `y` (its auxiliary row as it is) whose cosines to every anchor are
    /// `cos`: at most `k` anchors from the [`OMP_POOL`] nearest, each step picking the one most
    /// correlated with the residual (ties: the lower anchor index), refitting every coefficient
    /// by least squares (an incremental Cholesky factor of the picks' Gram matrix), and stopping
    /// early when the residual vanishes or no usable anchor is left. Returns (anchor, coefficient)
    /// in pick order; the coefficients reconstruct `y` from the anchors' vectors as they are.
    fn omp(&self, y: &[f32], cos: &[f32], open: &[bool], k: usize) -> Vec<(usize, f32)> {
        let d = self.dim;
        let yn = norm(y);
        if !(yn > 0.0 && yn.is_finite()) || d == 0 {
            return Vec::new();
        }
        let mut pool: Vec<(usize, f32)> = cos
            .iter()
            .enumerate()
            .filter(|(j, _)| open[*j])
            .map(|(j, c)| (j, c.abs()))
            .collect();
        if pool.len() > OMP_POOL {
            pool.select_nth_unstable_by(OMP_POOL - 1, |x, y| {
                y.1.total_cmp(&x.1).then(x.0.cmp(&y.0))
            });
            pool.truncate(OMP_POOL);
        }
        pool.sort_unstable_by_key(|p| p.0);
        let m = pool.len();
        let k = k.min(m).min(d);
        if k == 0 {
            return Vec::new();
        }
        // The pool's unit rows side by side (a few MB that stay in cache through the k passes).
        let mut rows: Vec<f32> = Vec::with_capacity(m * d);
        for &(j, _) in &pool {
            rows.extend_from_slice(self.vec(j));
        }
        // Correlation of each pool row with the residual; at first the residual is y.
        let mut corr: Vec<f32> = pool.iter().map(|&(j, _)| cos[j] * yn).collect();
        let mut used = vec![false; m];
        let mut picks: Vec<usize> = Vec::with_capacity(k);
        // Lower-triangular Cholesky factor of the picks' Gram matrix, row by row (packed).
        let mut chol: Vec<f64> = Vec::with_capacity(k * (k + 1) / 2);
        let mut rhs: Vec<f64> = Vec::with_capacity(k);
        let mut coef: Vec<f64> = Vec::new();
        let tol = 1e-6 * yn;
        while picks.len() < k {
            let mut best: Option<(usize, f32)> = None;
            for (p, c) in corr.iter().enumerate() {
                if !used[p] && c.is_finite() && best.is_none_or(|(_, b)| c.abs() > b) {
                    best = Some((p, c.abs()));
                }
            }
            let Some((p, _)) = best.filter(|&(_, c)| c > tol) else {
                break;
            };
            used[p] = true;
            let u = self.vec(pool[p].0);
            // Its row of the Cholesky factor: L w = (u_s . u) over the picks s.
            let mut w: Vec<f64> = picks.iter().map(|&s| dot(self.vec(pool[s].0), u)).collect();
            let mut at = 0;
            for i in 0..w.len() {
                let mut v = w[i];
                for jj in 0..i {
                    v -= chol[at + jj] * w[jj];
                }
                w[i] = v / chol[at + i];
                at += i + 1;
            }
            let pivot = 1.0 - w.iter().map(|v| v * v).sum::<f64>();
            if pivot <= OMP_PIVOT {
                continue;
            }
            chol.extend_from_slice(&w);
            chol.push(pivot.sqrt());
            picks.push(p);
            rhs.push(dot(u, y));
            coef = cholesky_solve(&chol, &rhs);
            // The residual, then its correlation with every pool row.
            let mut r: Vec<f32> = y.to_vec();
            for (&s, &z) in picks.iter().zip(&coef) {
                let z = z as f32;
                r.iter_mut()
                    .zip(self.vec(pool[s].0))
                    .for_each(|(a, b)| *a -= z * b);
            }
            // Each step's cost: one pass over the pool's rows (m x d multiply-adds).
            for ((c, row), &u) in corr.iter_mut().zip(rows.chunks_exact(d)).zip(&used) {
                *c = if u { 0.0 } else { dot_f32(row, &r) };
            }
        }
        // Coefficients of the unit rows -> of the rows as they are.
        picks
            .iter()
            .zip(&coef)
            .map(|(&p, &z)| {
                let j = pool[p].0;
                let n = self.norms[j];
                (j, if n > 0.0 { (z / n as f64) as f32 } else { 0.0 })
            })
            .collect()
    }
}

/// A dot product in eight lanes (the compiler turns the fixed-width inner loop into SIMD; a plain
/// sequential sum cannot be reordered).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Solves L L^T z = b for a packed lower-triangular L (row i holds i + 1 values).
fn cholesky_solve(l: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let start = |i: usize| i * (i + 1) / 2;
    let mut z = b.to_vec();
    for i in 0..n {
        let mut v = z[i];
        for j in 0..i {
            v -= l[start(i) + j] * z[j];
        }
        z[i] = v / l[start(i) + i];
    }
    for i in (0..n).rev() {
        let mut v = z[i];
        for j in i + 1..n {
            v -= l[start(j) + i] * z[j];
        }
        z[i] = v / l[start(i) + i];
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_anchors_get_the_weight() {
        let mut a = Anchors::new(2);
        a.push(10, "east", &[1.0, 0.0]);
        a.push(11, "north", &[0.0, 1.0]);
        a.push(12, "west", &[-1.0, 0.0]);
        let w = a
            .weights(&[2.0, 0.1], &HashSet::new(), Rule::Softmax)
            .unwrap();
        assert_eq!(w[0][0].0, 0);
        assert!(w[0][0].1 > 0.99);
        let total: f32 = w[0].iter().map(|x| x.1).sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Excluded anchors (held-out tokens) are never used.
        let w = a
            .weights(&[2.0, 0.1], &HashSet::from([10]), Rule::Softmax)
            .unwrap();
        assert_eq!(w[0][0].0, 1);
        assert!(w[0].iter().all(|x| x.0 != 0));
    }

    /// Anchors from seeded Gaussian rows (n x d), ids 100.. in order.
    fn random_anchors(n: usize, d: usize, seed: u64) -> (Anchors, Vec<f32>) {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let g = Normal::new(0.0f32, 1.0).unwrap();
        let rows: Vec<f32> = (0..n * d).map(|_| g.sample(&mut rng)).collect();
        let mut a = Anchors::new(d);
        for (i, r) in rows.chunks_exact(d).enumerate() {
            a.push(100 + i as u32, &format!("t{i}"), r);
        }
        (a, rows)
    }

    fn combine(rows: &[f32], d: usize, coef: &[(usize, f32)]) -> Vec<f32> {
        let mut y = vec![0f32; d];
        for &(j, c) in coef {
            y.iter_mut()
                .zip(&rows[j * d..(j + 1) * d])
                .for_each(|(a, b)| *a += c * b);
        }
        y
    }

    #[test]
    fn omp_recovers_a_combination_of_k_anchors_exactly() {
        let (d, n) = (32, 60);
        let (a, rows) = random_anchors(n, d, 7);
        let truth = [(3usize, 1.5f32), (17, -0.75), (29, 2.0)];
        let y = combine(&rows, d, &truth);
        let w = a.weights(&y, &HashSet::new(), Rule::Omp { k: 3 }).unwrap();
        let mut got = w[0].clone();
        got.sort_by_key(|x| x.0);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 17, 29]);
        for (g, t) in got.iter().zip(truth) {
            assert!((g.1 - t.1).abs() < 1e-4, "{got:?}");
        }
        // With a larger k, the residual is already zero after those three: it stops there.
        let w = a.weights(&y, &HashSet::new(), Rule::Omp { k: 8 }).unwrap();
        assert_eq!(w[0].len(), 3, "{:?}", w[0]);
        // The reconstruction of a generic row improves with every pick (least squares refit).
        let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut last = f32::INFINITY;
        for k in 1..=6 {
            let w = a.weights(&q, &HashSet::new(), Rule::Omp { k }).unwrap();
            let rec = combine(&rows, d, &w[0]);
            let err = norm(&q.iter().zip(&rec).map(|(x, r)| x - r).collect::<Vec<_>>());
            assert!(err < last, "k {k}: {err} >= {last}");
            last = err;
        }
    }

    #[test]
    fn omp_is_deterministic_and_leaves_out_excluded_anchors() {
        let (d, n) = (16, 300);
        let (a, rows) = random_anchors(n, d, 11);
        let y: Vec<f32> = combine(&rows, d, &[(5, 1.0), (6, 1.0), (250, -1.0)])
            .into_iter()
            .chain(rows[..d].iter().copied())
            .collect();
        let one = a.weights(&y, &HashSet::new(), Rule::Omp { k: 6 }).unwrap();
        for _ in 0..3 {
            assert_eq!(
                a.weights(&y, &HashSet::new(), Rule::Omp { k: 6 }).unwrap(),
                one
            );
        }
        // Anchor 0 reconstructs the second query alone; excluded (id 100), it is never picked.
        assert_eq!(one[1].len(), 1);
        assert_eq!(one[1][0].0, 0);
        let w = a
            .weights(&y, &HashSet::from([100, 105]), Rule::Omp { k: 6 })
            .unwrap();
        assert!(w.iter().flatten().all(|x| x.0 != 0 && x.0 != 5), "{w:?}");
    }

    #[test]
    fn omp_k_is_capped_at_the_dimension_and_norms_stay_bounded() {
        // 4-D rows, k 64: at most 4 picks, and the prediction's norm stays that of the query.
        let (d, n) = (4, 200);
        let (a, rows) = random_anchors(n, d, 3);
        assert_eq!(Rule::Omp { k: 64 }.capped(d), Rule::Omp { k: 4 });
        assert_eq!(Rule::Softmax.capped(d), Rule::Softmax);
        let q = [0.3f32, -1.0, 0.2, 0.9];
        let w = a.weights(&q, &HashSet::new(), Rule::Omp { k: 64 }).unwrap();
        assert!(w[0].len() <= 4, "{:?}", w[0]);
        let rec = combine(&rows, d, &w[0]);
        for (x, r) in q.iter().zip(&rec) {
            assert!((x - r).abs() < 1e-3, "{rec:?}");
        }
        assert!(w[0].iter().all(|x| x.1.abs() < 100.0), "{:?}", w[0]);
        // A zero query has nothing to reconstruct.
        let w = a
            .weights(&[0.0; 4], &HashSet::new(), Rule::Omp { k: 2 })
            .unwrap();
        assert!(w[0].is_empty());
    }
}
