//! Fine-tuning (candle-nn): the tokens of a sentence are looked up in the embedding E, mean-pooled
//! to h (padding masked out), and p = softmax(W h + b); cross-entropy loss; E, W and b updated by
//! Adam (or SGD). Copied rows can be kept fixed by zeroing their gradient rows.
//!
//! (Over 400 lines: the model, its optimisers and the loop share private state; a third is the
//! gradient and optimiser checks.)

pub mod data;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, SGD};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use data::{Example, Segmenter};

type CResult<T> = candle_core::Result<T>;

/// A candle error as ours, one line (candle may append a backtrace).
pub fn candle_error(doing: &str, e: candle_core::Error) -> crate::Error {
    crate::Error::Invalid(format!(
        "{doing}: {}",
        e.to_string().lines().next().unwrap_or_default()
    ))
}

/// The trainable model.
pub struct Model {
    pub emb: Var,
    /// [classes, dim]
    pub w: Var,
    /// [classes]
    pub b: Var,
}

impl Model {
    /// E from the given rows; W and b drawn U(-1/sqrt(dim), 1/sqrt(dim)) from the seed, as PyTorch's
    /// nn.Linear does.
    pub fn new(emb: Tensor, classes: usize, seed: u64) -> CResult<Self> {
        let (_, dim) = emb.dims2()?;
        let dtype = emb.dtype();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bound = 1.0 / (dim as f64).sqrt();
        let mut draw =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let w =
            Tensor::from_vec(draw(classes * dim), (classes, dim), &Device::Cpu)?.to_dtype(dtype)?;
        let b = Tensor::from_vec(draw(classes), classes, &Device::Cpu)?.to_dtype(dtype)?;
        Ok(Model {
            emb: Var::from_tensor(&emb)?,
            w: Var::from_tensor(&w)?,
            b: Var::from_tensor(&b)?,
        })
    }

    /// Logits [batch, classes].
    pub fn forward(&self, batch: &Batch) -> CResult<Tensor> {
        let (n, len) = batch.ids.dims2()?;
        let dim = self.emb.dim(1)?;
        let e = self
            .emb
            .as_tensor()
            .index_select(&batch.ids.flatten_all()?, 0)?
            .reshape((n, len, dim))?;
        let h = e
            .broadcast_mul(&batch.mask.unsqueeze(2)?)?
            .sum(1)?
            .broadcast_div(&batch.counts)?;
        h.matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())
    }

    fn snapshot(&self) -> CResult<[Tensor; 3]> {
        Ok([
            self.emb.as_tensor().copy()?,
            self.w.as_tensor().copy()?,
            self.b.as_tensor().copy()?,
        ])
    }

    fn restore(&self, s: &[Tensor; 3]) -> CResult<()> {
        self.emb.set(&s[0])?;
        self.w.set(&s[1])?;
        self.b.set(&s[2])
    }
}

/// A padded batch.
pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub counts: Tensor,
    pub labels: Tensor,
}

impl Batch {
    pub fn new(examples: &[&Example], dtype: DType) -> CResult<Self> {
        let len = examples
            .iter()
            .map(|e| e.ids.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let n = examples.len();
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0f32; n * len];
        let mut counts = vec![1f32; n];
        for (i, e) in examples.iter().enumerate() {
            ids[i * len..i * len + e.ids.len()].copy_from_slice(&e.ids);
            mask[i * len..i * len + e.ids.len()].fill(1.0);
            // An empty text pools to the zero vector rather than dividing by zero.
            counts[i] = e.ids.len().max(1) as f32;
        }
        let labels: Vec<u32> = examples.iter().map(|e| e.label as u32).collect();
        let dev = Device::Cpu;
        Ok(Batch {
            ids: Tensor::from_vec(ids, (n, len), &dev)?,
            mask: Tensor::from_vec(mask, (n, len), &dev)?.to_dtype(dtype)?,
            counts: Tensor::from_vec(counts, (n, 1), &dev)?.to_dtype(dtype)?,
            labels: Tensor::from_vec(labels, n, &dev)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub seed: u64,
    pub freeze_embeddings: bool,
    /// Rows of E kept fixed (true for the copied ones), when --freeze-copied.
    pub frozen_rows: Option<Vec<bool>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub valid_loss: Option<f64>,
    pub valid_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Adam (PyTorch's update, no weight decay), fused: one parallel pass per parameter over plain
/// f32 buffers. candle-nn's AdamW builds about fifteen full-size temporary tensors per step, most
/// through single-threaded unary kernels; for an embedding matrix that was most of the training
/// time.
struct Adam {
    params: Vec<(Var, Vec<f32>, Vec<f32>)>,
    lr: f32,
    step: i32,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    fn new(vars: Vec<Var>, lr: f64) -> CResult<Self> {
        let params = vars
            .into_iter()
            .map(|v| {
                if v.dtype() != DType::F32 {
                    candle_core::bail!("Adam trains f32 parameters, not {:?}", v.dtype());
                }
                let n = v.elem_count();
                Ok((v, vec![0f32; n], vec![0f32; n]))
            })
            .collect::<CResult<_>>()?;
        Ok(Adam {
            params,
            lr: lr as f32,
            step: 0,
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> CResult<()> {
        use rayon::prelude::*;
        self.step += 1;
        let bc1 = 1.0 - Self::BETA1.powi(self.step);
        let bc2 = 1.0 - Self::BETA2.powi(self.step);
        let lr = self.lr;
        for (var, m, v) in &mut self.params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let mut theta = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            theta
                .par_iter_mut()
                .zip(m.par_iter_mut())
                .zip(v.par_iter_mut())
                .zip(g.par_iter())
                .with_min_len(4096)
                .for_each(|(((p, m), v), g)| {
                    *m = Self::BETA1 * *m + (1.0 - Self::BETA1) * g;
                    *v = Self::BETA2 * *v + (1.0 - Self::BETA2) * g * g;
                    *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + Self::EPS);
                });
            var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

enum Opt {
    Adam(Adam),
    Sgd(SGD),
}

impl Opt {
    fn step(&mut self, g: &candle_core::backprop::GradStore) -> CResult<()> {
        match self {
            Opt::Adam(o) => o.step(g),
            Opt::Sgd(o) => o.step(g),
        }
    }
}

/// Loss and accuracy of the model on examples; also the predicted classes.
pub fn evaluate(
    model: &Model,
    examples: &[Example],
    batch_size: usize,
) -> CResult<(f64, f64, Vec<usize>)> {
    let dtype = model.emb.dtype();
    let mut loss_sum = 0.0;
    let mut preds = Vec::with_capacity(examples.len());
    let refs: Vec<&Example> = examples.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        let batch = Batch::new(chunk, dtype)?;
        let logits = model.forward(&batch)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
        preds.extend(
            logits
                .argmax(1)?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|p| p as usize),
        );
    }
    let n = examples.len().max(1) as f64;
    let correct = preds
        .iter()
        .zip(examples)
        .filter(|(p, e)| **p == e.label)
        .count();
    Ok((loss_sum / n, correct as f64 / n, preds))
}

/// Trains; with `valid`, the returned model is the one of the best epoch by validation accuracy.
/// `on_batch(epoch, done, total)` and `on_epoch(metrics)` report progress.
pub fn train(
    model: &Model,
    train: &[Example],
    valid: Option<&[Example]>,
    opts: &TrainOptions,
    on_batch: &mut dyn FnMut(usize, usize, usize),
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> CResult<(Vec<EpochMetrics>, usize)> {
    let dtype = model.emb.dtype();
    let mut vars = vec![model.w.clone(), model.b.clone()];
    if !opts.freeze_embeddings {
        vars.push(model.emb.clone());
    }
    let mut opt = match opts.optimizer {
        OptimizerKind::Adam => Opt::Adam(Adam::new(vars, opts.lr)?),
        OptimizerKind::Sgd => Opt::Sgd(SGD::new(vars, opts.lr)?),
    };
    let row_mask = match &opts.frozen_rows {
        Some(frozen) if !opts.freeze_embeddings => {
            let n = model.emb.dim(0)?;
            let m: Vec<f32> = (0..n)
                .map(|i| {
                    if frozen.get(i) == Some(&true) {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect();
            Some(Tensor::from_vec(m, (n, 1), &Device::Cpu)?.to_dtype(dtype)?)
        }
        _ => None,
    };
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batches = train.len().div_ceil(opts.batch_size.max(1));
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, [Tensor; 3])> = None;
    for epoch in 1..=opts.epochs {
        let start = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for (k, chunk) in order.chunks(opts.batch_size.max(1)).enumerate() {
            let exs: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
            let batch = Batch::new(&exs, dtype)?;
            let logits = model.forward(&batch)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss_value.is_finite() {
                candle_core::bail!(
                    "the loss became {loss_value} at epoch {epoch}, step {}: training diverged (lower --lr?); nothing was written",
                    k + 1
                );
            }
            let mut grads = loss.backward()?;
            if let Some(mask) = &row_mask {
                if let Some(g) = grads.remove(model.emb.as_tensor()) {
                    grads.insert(model.emb.as_tensor(), g.broadcast_mul(mask)?);
                }
            }
            opt.step(&grads)?;
            loss_sum += loss_value * exs.len() as f64;
            let preds = logits.argmax(1)?.to_vec1::<u32>()?;
            correct += preds
                .iter()
                .zip(&exs)
                .filter(|(p, e)| **p as usize == e.label)
                .count();
            on_batch(epoch, k + 1, batches);
        }
        for (name, var) in [
            ("embedding", &model.emb),
            ("weight", &model.w),
            ("bias", &model.b),
        ] {
            // A NaN or infinity anywhere makes the sum non-finite (so would values near f32's
            // limit, which are divergence as well).
            let sum = var
                .as_tensor()
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            if !sum.is_finite() {
                candle_core::bail!(
                    "the {name} parameters hold NaN or infinity after epoch {epoch}, step {batches}: training diverged (lower --lr?); nothing was written"
                );
            }
        }
        let n = train.len().max(1) as f64;
        let (valid_loss, valid_accuracy) = match valid {
            Some(v) => {
                let (l, a, _) = evaluate(model, v, opts.batch_size)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / n,
            train_accuracy: correct as f64 / n,
            valid_loss,
            valid_accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        if let Some(acc) = valid_accuracy {
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, model.snapshot()?));
            }
        }
        on_epoch(&m);
        history.push(m);
    }
    let best_epoch = match best {
        Some((_, epoch, snap)) => {
            model.restore(&snap)?;
            epoch
        }
        None => opts.epochs,
    };
    Ok((history, best_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<Example> {
        vec![
            Example {
                label: 0,
                ids: vec![0, 1, 1],
            },
            Example {
                label: 1,
                ids: vec![2, 3],
            },
            Example {
                label: 1,
                ids: vec![4],
            },
        ]
    }

    /// The analytic gradient of the loss (candle's backprop through index_select, masked mean,
    /// linear, cross-entropy) matches central finite differences, in f64.
    /// The fused Adam takes the same steps as candle-nn's AdamW with no weight decay.
    #[test]
    fn fused_adam_matches_candle_adamw() {
        use candle_nn::{AdamW, ParamsAdamW};
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 7.0).collect();
        let x = Tensor::from_vec(init.clone(), (3, 4), &Device::Cpu).unwrap();
        let a = Var::from_tensor(&x).unwrap();
        let b = Var::from_tensor(&x).unwrap();
        let mut ours = Adam::new(vec![a.clone()], 0.05).unwrap();
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let mut theirs = AdamW::new(vec![b.clone()], params).unwrap();
        for _ in 0..5 {
            // loss = sum(w^3): a gradient that changes with the weights.
            ours.step(
                &a.as_tensor()
                    .powf(3.0)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap(),
            )
            .unwrap();
            theirs
                .step(
                    &b.as_tensor()
                        .powf(3.0)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap(),
                )
                .unwrap();
        }
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert!(a.iter().zip(&init).any(|(x, y)| (x - y).abs() > 0.1));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let e: Vec<f64> = (0..5 * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
        let emb = Tensor::from_vec(e, (5, 3), &Device::Cpu).unwrap();
        let model = Model::new(emb, 2, 9).unwrap();
        let exs = examples();
        let refs: Vec<&Example> = exs.iter().collect();
        let batch = Batch::new(&refs, DType::F64).unwrap();
        let loss_of = |m: &Model| {
            let l =
                candle_nn::loss::cross_entropy(&m.forward(&batch).unwrap(), &batch.labels).unwrap();
            l.to_scalar::<f64>().unwrap()
        };
        let loss =
            candle_nn::loss::cross_entropy(&model.forward(&batch).unwrap(), &batch.labels).unwrap();
        let grads = loss.backward().unwrap();
        let h = 1e-6;
        for var in [&model.emb, &model.w, &model.b] {
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let shape = var.shape().clone();
            for i in 0..base.len() {
                let mut plus = base.clone();
                plus[i] += h;
                var.set(&Tensor::from_vec(plus, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let lp = loss_of(&model);
                let mut minus = base.clone();
                minus[i] -= h;
                var.set(&Tensor::from_vec(minus, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let lm = loss_of(&model);
                var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-6,
                    "{i}: finite difference {fd} vs backprop {}",
                    g[i]
                );
            }
        }
    }
}
