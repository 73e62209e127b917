//! Optimizers over plain f32 buffers: Adam (PyTorch's update, no weight decay) for dense
//! parameters; for the embedding, dense Adam (every row, every step, as torch.optim.Adam on a
//! dense gradient), lazy Adam (only the rows a batch touched: PyTorch's SparseAdam, TensorFlow's
//! LazyAdam) and SGD (only touched rows, which for plain SGD is exactly the dense update).

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
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::LazyAdam => "lazy-adam",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// The embedding's optimizer. Moments are allocated zeroed and written only for rows that get a
/// gradient, so the pages of rows no batch touches are never resident.
pub struct Embedding {
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
}

impl Embedding {
    pub fn new(kind: OptimizerKind, rows: usize, dim: usize) -> Self {
        let adam = kind != OptimizerKind::Sgd;
        let dense = kind == OptimizerKind::Adam;
        Embedding {
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
            active: if dense { vec![false; rows] } else { Vec::new() },
            active_rows: Vec::new(),
            slot: if dense {
                vec![u32::MAX; rows]
            } else {
                Vec::new()
            },
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
