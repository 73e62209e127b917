//! The classifier and its gradients, by hand: the tokens of a sentence are looked up in the
//! embedding E and mean-pooled to h, logits = W h + b, softmax cross-entropy averaged over the
//! batch. The gradient of E is kept sparse: only the rows the batch touched.
//!
//! Sums run in f64 in a fixed order (examples in batch order, tokens in sentence order), and work
//! is split across threads only where items are independent, so the bytes do not depend on the
//! number of threads.

use super::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The trainable parameters, row-major f32.
#[derive(Debug, Clone)]
pub struct Model {
    pub rows: usize,
    pub dim: usize,
    pub classes: usize,
    /// E, [rows, dim].
    pub emb: Vec<f32>,
    /// W, [classes, dim].
    pub w: Vec<f32>,
    /// b, [classes].
    pub b: Vec<f32>,
}

/// Gradients of the mean batch loss. E's are sparse: `rows` ascending, `emb` their gradients
/// ([rows.len(), dim]); every other row's gradient is zero.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    pub rows: Vec<u32>,
    pub emb: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// One batch's forward and backward pass.
#[derive(Debug)]
pub struct Step {
    /// Mean cross-entropy over the batch.
    pub loss: f64,
    /// Predicted class per example, in batch order.
    pub preds: Vec<usize>,
    pub grads: Grads,
}

/// What one example contributes: loss, prediction, and for the backward pass dL/dlogits and
/// dL/dh divided by the token count (each token's share of the pooled gradient).
struct Pass {
    loss: f64,
    pred: usize,
    h: Vec<f64>,
    dz: Vec<f64>,
    dh_per_token: Vec<f64>,
}

impl Model {
    /// E from the given rows; W and b drawn U(-1/sqrt(dim), 1/sqrt(dim)) from the seed, as
    /// PyTorch's nn.Linear does (W first, then b).
    pub fn new(emb: Vec<f32>, rows: usize, dim: usize, classes: usize, seed: u64) -> Self {
        debug_assert_eq!(emb.len(), rows * dim);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bound = 1.0 / (dim as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        let w = draw(classes * dim);
        let b = draw(classes);
        Model {
            rows,
            dim,
            classes,
            emb,
            w,
            b,
        }
    }

    /// Mean of the rows of `ids` (the zero vector for no ids).
    fn pooled(&self, ids: &[u32]) -> Vec<f64> {
        let d = self.dim;
        let mut h = vec![0f64; d];
        for &id in ids {
            let row = &self.emb[id as usize * d..(id as usize + 1) * d];
            for (acc, x) in h.iter_mut().zip(row) {
                *acc += *x as f64;
            }
        }
        let n = ids.len().max(1) as f64;
        h.iter_mut().for_each(|x| *x /= n);
        h
    }

    fn logits(&self, h: &[f64]) -> Vec<f64> {
        let d = self.dim;
        (0..self.classes)
            .map(|c| {
                let w = &self.w[c * d..(c + 1) * d];
                self.b[c] as f64 + w.iter().zip(h).map(|(w, h)| *w as f64 * h).sum::<f64>()
            })
            .collect()
    }

    /// Loss and prediction of one example; with `backward`, its gradients for a batch of
    /// `batch_len`.
    fn pass(&self, ids: &[u32], label: usize, batch_len: usize, backward: bool) -> Pass {
        let h = self.pooled(ids);
        let z = self.logits(&h);
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
        let lse = max + sum.ln();
        let loss = lse - z[label];
        // The first maximum, as argmax conventionally picks.
        let pred = z
            .iter()
            .enumerate()
            .fold(0, |best, (i, v)| if *v > z[best] { i } else { best });
        if !backward {
            return Pass {
                loss,
                pred,
                h: Vec::new(),
                dz: Vec::new(),
                dh_per_token: Vec::new(),
            };
        }
        let scale = 1.0 / batch_len as f64;
        let dz: Vec<f64> = z
            .iter()
            .enumerate()
            .map(|(c, v)| ((v - lse).exp() - if c == label { 1.0 } else { 0.0 }) * scale)
            .collect();
        let d = self.dim;
        let per_token = 1.0 / ids.len().max(1) as f64;
        let mut dh = vec![0f64; d];
        for (c, g) in dz.iter().enumerate() {
            for (acc, w) in dh.iter_mut().zip(&self.w[c * d..(c + 1) * d]) {
                *acc += g * *w as f64;
            }
        }
        dh.iter_mut().for_each(|x| *x *= per_token);
        Pass {
            loss,
            pred,
            h,
            dz,
            dh_per_token: dh,
        }
    }

    /// Forward and backward over the examples `batch` of `data`. With `emb_grad` false, E's
    /// gradient is not computed (the embedding is not being trained); rows where `frozen` is true
    /// are left out of it.
    pub fn step(
        &self,
        data: &Dataset,
        batch: &[usize],
        emb_grad: bool,
        frozen: Option<&[bool]>,
    ) -> Step {
        let n = batch.len();
        let passes: Vec<Pass> = batch
            .par_iter()
            .map(|&i| self.pass(data.ids(i), data.label(i), n, true))
            .collect();
        let d = self.dim;
        let mut gw = vec![0f64; self.classes * d];
        let mut gb = vec![0f64; self.classes];
        let mut loss = 0.0;
        for p in &passes {
            loss += p.loss;
            for (c, g) in p.dz.iter().enumerate() {
                gb[c] += g;
                for (acc, h) in gw[c * d..(c + 1) * d].iter_mut().zip(&p.h) {
                    *acc += g * h;
                }
            }
        }
        let (rows, emb) = if emb_grad {
            self.sparse_emb_grad(data, batch, &passes, frozen)
        } else {
            (Vec::new(), Vec::new())
        };
        Step {
            loss: loss / n.max(1) as f64,
            preds: passes.iter().map(|p| p.pred).collect(),
            grads: Grads {
                rows,
                emb,
                w: gw.into_iter().map(|x| x as f32).collect(),
                b: gb.into_iter().map(|x| x as f32).collect(),
            },
        }
    }

    /// dL/dE[r] = sum over the occurrences of r in the batch of dL/dh_b / count_b, summed in
    /// batch order; rows in ascending order.
    fn sparse_emb_grad(
        &self,
        data: &Dataset,
        batch: &[usize],
        passes: &[Pass],
        frozen: Option<&[bool]>,
    ) -> (Vec<u32>, Vec<f32>) {
        let mut occ: Vec<(u32, u32)> = batch
            .iter()
            .enumerate()
            .flat_map(|(k, &i)| data.ids(i).iter().map(move |&id| (id, k as u32)))
            .filter(|(id, _)| frozen.is_none_or(|f| !f.get(*id as usize).copied().unwrap_or(false)))
            .collect();
        // Stable: a row's occurrences stay in batch order.
        occ.sort_by_key(|&(id, _)| id);
        let mut groups: Vec<(u32, usize, usize)> = Vec::new();
        let mut start = 0;
        for k in 1..=occ.len() {
            if k == occ.len() || occ[k].0 != occ[start].0 {
                groups.push((occ[start].0, start, k));
                start = k;
            }
        }
        let d = self.dim;
        let mut emb = vec![0f32; groups.len() * d];
        emb.par_chunks_mut(d)
            .zip(&groups)
            .for_each(|(out, &(_, from, to))| {
                let mut acc = vec![0f64; d];
                for &(_, k) in &occ[from..to] {
                    for (a, g) in acc.iter_mut().zip(&passes[k as usize].dh_per_token) {
                        *a += g;
                    }
                }
                for (o, a) in out.iter_mut().zip(acc) {
                    *o = a as f32;
                }
            });
        (groups.iter().map(|g| g.0).collect(), emb)
    }

    /// Loss and prediction of every example (no gradients); the loss is the mean.
    pub fn predict(&self, data: &Dataset) -> (f64, Vec<usize>) {
        let passes: Vec<(f64, usize)> = (0..data.len())
            .into_par_iter()
            .map(|i| {
                let p = self.pass(data.ids(i), data.label(i), 1, false);
                (p.loss, p.pred)
            })
            .collect();
        let loss = passes.iter().map(|p| p.0).sum::<f64>() / data.len().max(1) as f64;
        (loss, passes.into_iter().map(|p| p.1).collect())
    }
}
