//! Optimizers over plain f32 buffers: Adam (PyTorch's update, no weight decay) for dense
//! parameters; for the embedding, dense Adam (every row, every step, as torch.optim.Adam on a
//! dense gradient), lazy Adam (only the rows a batch touched: PyTorch's SparseAdam, TensorFlow's
//! LazyAdam), deferred Adam (`finetune`'s default: dense Adam's updates, made only when a row is
//! next read: the steps a row missed are applied in closed form) and SGD (only touched rows,
//! which for plain SGD is exactly the dense update).

use rayon::prelude::*;

pub const BETA1: f32 = 0.9;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;

/// One Adam update of one value; the same expression everywhere, so that lazy and dense Adam give
/// the same bits on the rows both update.
#[inline]
fn adam(p: &mut f32, m: &mut f32, v: &mut f32, g: f32, lr: f32, bc1: f32, bc2: f32) {
    *m = BETA1 * *m + (1.0 - BETA1) * g;
    *v = BETA2 * *v + (1.0 - BETA2) * g * g;
    *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + EPS);
}

fn corrections(step: i32) -> (f32, f32) {
    (1.0 - BETA1.powi(step), 1.0 - BETA2.powi(step))
}

/// Adam or SGD on one dense parameter.
pub enum Dense {
    Adam { m: Vec<f32>, v: Vec<f32>, step: i32 },
    Sgd,
}

impl Dense {
    pub fn new(adam: bool, len: usize) -> Self {
        if adam {
            Dense::Adam {
                m: vec![0.0; len],
                v: vec![0.0; len],
                step: 0,
            }
        } else {
            Dense::Sgd
        }
    }

    pub fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32) {
        match self {
            Dense::Adam { m, v, step } => {
                *step += 1;
                let (bc1, bc2) = corrections(*step);
                p.par_iter_mut()
                    .zip(m.par_iter_mut())
                    .zip(v.par_iter_mut())
                    .zip(g.par_iter())
                    .with_min_len(4096)
                    .for_each(|(((p, m), v), g)| adam(p, m, v, *g, lr, bc1, bc2));
            }
            Dense::Sgd => p.iter_mut().zip(g).for_each(|(p, g)| *p -= lr * g),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Dense Adam: every row's moments decay and every row with momentum moves at every step.
    Adam,
    /// Adam on the touched rows only (moments of other rows are left alone).
    LazyAdam,
    /// Dense Adam's trajectory at lazy Adam's cost: a row's missed zero-gradient steps are
    /// applied in closed form when a batch next reads it (and at the end of each epoch).
    DeferredAdam,
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::LazyAdam => "lazy-adam",
            OptimizerKind::DeferredAdam => "deferred-adam",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// The embedding's optimizer. Moments are allocated zeroed and written only for rows that get a
/// gradient, so the pages of rows no batch touches are never resident.
pub struct EmbeddingOptimizer {
    kind: OptimizerKind,
    dim: usize,
    m: Vec<f32>,
    v: Vec<f32>,
    step: i32,
    /// Dense Adam: rows whose moments may be non-zero (rows ever touched). The others have zero
    /// moments and a zero gradient, so the dense update leaves them exactly as they are and is
    /// skipped for them.
    active: Vec<bool>,
    active_rows: Vec<u32>,
    /// Scratch: gradient slot of each row for the current step (u32::MAX: none).
    slot: Vec<u32>,
    /// Deferred Adam: the step up to which each row (its value and moments) is current.
    current: Vec<u32>,
    /// Deferred Adam: gain(s) of every step taken so far (see [`replay`]; the missed steps of a
    /// row are replayed with their own learning rates).
    gains: Vec<f64>,
}

impl EmbeddingOptimizer {
    pub fn new(kind: OptimizerKind, rows: usize, dim: usize) -> Self {
        let adam = kind != OptimizerKind::Sgd;
        let dense = kind == OptimizerKind::Adam;
        let deferred = kind == OptimizerKind::DeferredAdam;
        EmbeddingOptimizer {
            kind,
            dim,
            m: if adam {
                vec![0.0; rows * dim]
            } else {
                Vec::new()
            },
            v: if adam {
                vec![0.0; rows * dim]
            } else {
                Vec::new()
            },
            step: 0,
            active: if dense || deferred {
                vec![false; rows]
            } else {
                Vec::new()
            },
            active_rows: Vec::new(),
            slot: if dense {
                vec![u32::MAX; rows]
            } else {
                Vec::new()
            },
            current: if deferred { vec![0; rows] } else { Vec::new() },
            gains: Vec::new(),
        }
    }

    /// Deferred Adam: brings `rows` (ascending, distinct) up to the last step taken, as dense
    /// Adam would have moved them: the rows a batch is about to read, before its forward pass.
    /// Other kinds: nothing.
    pub fn bring_up_to_date(&mut self, emb: &mut [f32], rows: &[u32]) {
        if self.kind != OptimizerKind::DeferredAdam {
            return;
        }
        let step = self.step as u32;
        let stale: Vec<u32> = rows
            .iter()
            .copied()
            .filter(|&r| self.active[r as usize] && self.current[r as usize] < step)
            .collect();
        self.replay_rows(emb, &stale, step);
    }

    /// Whether rows must be brought up to date before a batch reads them (deferred Adam).
    pub fn defers(&self) -> bool {
        self.kind == OptimizerKind::DeferredAdam
    }

    /// Deferred Adam: brings every row up to the last step taken (at the end of an epoch, before
    /// E is evaluated or kept). The rows it may change are [`EmbeddingOptimizer::rows_to_flush`], for the
    /// best-epoch journal to save first.
    pub fn flush(&mut self, emb: &mut [f32]) {
        if self.kind != OptimizerKind::DeferredAdam {
            return;
        }
        let step = self.step as u32;
        let mut stale: Vec<u32> = self
            .active_rows
            .iter()
            .copied()
            .filter(|&r| self.current[r as usize] < step)
            .collect();
        stale.sort_unstable();
        self.replay_rows(emb, &stale, step);
    }

    /// The rows [`EmbeddingOptimizer::flush`] may change (deferred Adam: every row ever touched).
    pub fn rows_to_flush(&self) -> &[u32] {
        match self.kind {
            OptimizerKind::DeferredAdam => &self.active_rows,
            _ => &[],
        }
    }

    /// Replays the missed steps of `rows` (ascending, distinct) up to step `to`, in parallel:
    /// rows are independent, and each gets the same arithmetic whatever the thread count.
    fn replay_rows(&mut self, emb: &mut [f32], rows: &[u32], to: u32) {
        let d = self.dim;
        let (p, m, v) = (
            row_slices(emb, rows, d),
            row_slices(&mut self.m, rows, d),
            row_slices(&mut self.v, rows, d),
        );
        let (current, gains) = (&self.current, &self.gains);
        p.into_par_iter()
            .zip(m)
            .zip(v)
            .zip(rows)
            .with_min_len(16)
            .for_each(|(((p, m), v), &r)| replay(p, m, v, current[r as usize], to, gains));
        for &r in rows {
            self.current[r as usize] = to;
        }
    }

    /// The rows the next step with gradient rows `touched` will change, ascending for the sparse
    /// optimizers (dense Adam: the touched rows and every row with momentum).
    pub fn rows_to_change<'a>(&'a mut self, touched: &'a [u32]) -> &'a [u32] {
        if self.kind != OptimizerKind::Adam {
            return touched;
        }
        for &r in touched {
            if !self.active[r as usize] {
                self.active[r as usize] = true;
                self.active_rows.push(r);
            }
        }
        &self.active_rows
    }

    /// One step on E with the sparse gradient (`rows` ascending, `grad` [rows.len(), dim]).
    pub fn step(&mut self, emb: &mut [f32], rows: &[u32], grad: &[f32], lr: f32) {
        let d = self.dim;
        match self.kind {
            OptimizerKind::Sgd => {
                for (&r, g) in rows.iter().zip(grad.chunks_exact(d)) {
                    let p = &mut emb[r as usize * d..(r as usize + 1) * d];
                    p.iter_mut().zip(g).for_each(|(p, g)| *p -= lr * g);
                }
            }
            OptimizerKind::DeferredAdam => {
                self.step += 1;
                self.gains.push(gain(self.step, lr));
                let (bc1, bc2) = corrections(self.step);
                for (&r, g) in rows.iter().zip(grad.chunks_exact(d)) {
                    let r = r as usize;
                    // Normally already current (the batch's rows were brought up to date before
                    // its forward pass); replay to the previous step otherwise.
                    if self.active[r] && self.current[r] + 1 < self.step as u32 {
                        self.replay_rows(emb, &[r as u32], self.step as u32 - 1);
                    }
                    if !self.active[r] {
                        self.active[r] = true;
                        self.active_rows.push(r as u32);
                    }
                    self.current[r] = self.step as u32;
                    let span = r * d..(r + 1) * d;
                    let p = &mut emb[span.clone()];
                    let m = &mut self.m[span.clone()];
                    let v = &mut self.v[span];
                    for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        adam(p, m, v, *g, lr, bc1, bc2);
                    }
                }
            }
            OptimizerKind::LazyAdam => {
                self.step += 1;
                let (bc1, bc2) = corrections(self.step);
                for (&r, g) in rows.iter().zip(grad.chunks_exact(d)) {
                    let span = r as usize * d..(r as usize + 1) * d;
                    let p = &mut emb[span.clone()];
                    let m = &mut self.m[span.clone()];
                    let v = &mut self.v[span];
                    for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        adam(p, m, v, *g, lr, bc1, bc2);
                    }
                }
            }
            OptimizerKind::Adam => {
                self.step += 1;
                let (bc1, bc2) = corrections(self.step);
                for (k, &r) in rows.iter().enumerate() {
                    self.slot[r as usize] = k as u32;
                    if !self.active[r as usize] {
                        self.active[r as usize] = true;
                        self.active_rows.push(r);
                    }
                }
                let (active, slot) = (&self.active, &self.slot);
                emb.par_chunks_mut(d)
                    .zip(self.m.par_chunks_mut(d))
                    .zip(self.v.par_chunks_mut(d))
                    .enumerate()
                    .with_min_len(64)
                    .for_each(|(r, ((p, m), v))| {
                        if !active[r] {
                            return;
                        }
                        match slot[r] {
                            u32::MAX => {
                                for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
                                    adam(p, m, v, 0.0, lr, bc1, bc2);
                                }
                            }
                            k => {
                                let g = &grad[k as usize * d..(k as usize + 1) * d];
                                for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                                    adam(p, m, v, *g, lr, bc1, bc2);
                                }
                            }
                        }
                    });
                for &r in rows {
                    self.slot[r as usize] = u32::MAX;
                }
            }
        }
    }
}

/// Dense Adam's steps `from + 1 ..= to` with a zero gradient, in closed form. At step s = from + j
/// the moments are β1^j·m and β2^j·v, so (ε aside) the update is
/// (m / √v) · (β1/√β2)^j · gain(s), with gain(s) = lr_s · √(1 - β2^s) / (1 - β1^s): one scalar per
/// step, summed in f64 until its terms stop mattering (β1/√β2 ≈ 0.9005 per step: 1e-12 after
/// about 260 steps). Where v is 0 so is m, and dense Adam does not move the value either. ε is
/// left out of the closed form: the difference is ε/√v̂ relative, below 1e-4 for any gradient
/// above 1e-4.
fn replay(p: &mut [f32], m: &mut [f32], v: &mut [f32], from: u32, to: u32, gains: &[f64]) {
    if to <= from {
        return;
    }
    let (b1, b2) = (BETA1 as f64, BETA2 as f64);
    let ratio = b1 / b2.sqrt();
    let mut coef = 0f64;
    let mut decay = 1f64;
    for gain in gains.iter().take(to as usize).skip(from as usize) {
        decay *= ratio;
        if decay < 1e-12 {
            break;
        }
        coef += gain * decay;
    }
    let k = (to - from) as i32;
    let (dm, dv) = (b1.powi(k) as f32, b2.powi(k) as f32);
    let coef = coef as f32;
    for ((p, m), v) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()) {
        if *v > 0.0 {
            *p -= coef * *m / v.sqrt();
        }
        *m *= dm;
        *v *= dv;
    }
}

/// The rows `rows` (ascending, distinct) of a [_, d] buffer, as disjoint mutable slices.
fn row_slices<'a>(buf: &'a mut [f32], rows: &[u32], d: usize) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(rows.len());
    let mut rest = buf;
    let mut at = 0usize;
    for &r in rows {
        let skip = r as usize * d - at;
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
        let (row, tail) = tail.split_at_mut(d);
        out.push(row);
        rest = tail;
        at = (r as usize + 1) * d;
    }
    out
}

/// gain(s) of [`replay`] for the step just taken.
fn gain(step: i32, lr: f32) -> f64 {
    let (b1, b2) = (BETA1 as f64, BETA2 as f64);
    lr as f64 * (1.0 - b2.powi(step)).sqrt() / (1.0 - b1.powi(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dense Adam with a zero gradient on a row that never had one leaves it bit for bit as it
    /// is: skipping such rows is exact.
    #[test]
    fn untouched_rows_are_exactly_unchanged_by_dense_adam() {
        for p0 in [0.5f32, -0.0, 1e-30, -3.0] {
            let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
            for step in 1..5 {
                let (bc1, bc2) = corrections(step);
                adam(&mut p, &mut m, &mut v, 0.0, 0.1, bc1, bc2);
            }
            assert_eq!(p.to_bits(), p0.to_bits());
        }
    }
}
