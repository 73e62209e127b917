//! Fine-tuning: the tokens of a sentence are looked up in the embedding E, mean-pooled to h, and
//! p = softmax(W h + b); cross-entropy loss. W and b are trained by Adam (or SGD) at `lr`; E at
//! `embedding_lr` from sparse gradients (the rows a batch touched) by deferred Adam (the default:
//! dense Adam's updates, made when a row is next read), dense Adam, lazy Adam or SGD.
//! Copied rows can be kept fixed (their gradient rows are dropped), and the embedding can wait
//! a number of epochs while the head trains alone.
//!
//! (Over 400 lines: the code is 250; the rest are the tests of gradients, optimisers,
//! determinism and best-epoch restore, which need the loop and the model together.)

pub mod data;
pub mod model;
pub mod optim;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use data::{Dataset, Segmenter};
pub use model::Model;
pub use optim::OptimizerKind;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    /// The head's learning rate.
    pub lr: f64,
    /// The embedding's learning rate.
    pub embedding_lr: f64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub seed: u64,
    pub freeze_embeddings: bool,
    /// Epochs at the start during which only the head trains.
    pub freeze_embeddings_epochs: usize,
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
    /// Whether the embedding was trained in this epoch (not with --freeze-embeddings, nor in the
    /// first --freeze-embeddings-epochs).
    pub embedding_trained: bool,
    pub seconds: f64,
}

/// Loss and accuracy of the model on a data set; also the predicted classes.
pub fn loss_and_accuracy(model: &Model, data: &Dataset) -> (f64, f64, Vec<usize>) {
    let (loss, preds) = model.predict(data);
    let correct = preds
        .iter()
        .zip(data.labels())
        .filter(|(p, l)| p == l)
        .count();
    (loss, correct as f64 / data.len().max(1) as f64, preds)
}

/// E's rows as they were when the best epoch ended, saved only for the rows changed since then
/// (copy on first write): restoring the best epoch costs memory for the rows that moved after
/// it, not a second copy of E.
struct Journal {
    dim: usize,
    saved: Vec<bool>,
    rows: Vec<u32>,
    values: Vec<f32>,
}

impl Journal {
    fn new(rows: usize, dim: usize) -> Self {
        Journal {
            dim,
            saved: vec![false; rows],
            rows: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Remembers `rows` of `emb` that are not saved yet (they are about to change).
    fn save(&mut self, emb: &[f32], rows: &[u32]) {
        let d = self.dim;
        for &r in rows {
            let r = r as usize;
            if !self.saved[r] {
                self.saved[r] = true;
                self.rows.push(r as u32);
                self.values.extend_from_slice(&emb[r * d..(r + 1) * d]);
            }
        }
    }

    /// The current E becomes the one to return to.
    fn reset(&mut self) {
        for &r in &self.rows {
            self.saved[r as usize] = false;
        }
        self.rows.clear();
        self.values.clear();
    }

    fn restore(&self, emb: &mut [f32]) {
        let d = self.dim;
        for (&r, v) in self.rows.iter().zip(self.values.chunks_exact(d)) {
            emb[r as usize * d..(r as usize + 1) * d].copy_from_slice(v);
        }
    }
}

fn diverged(msg: String) -> crate::Error {
    crate::Error::Invalid(format!("training: {msg}"))
}

/// Trains; with `valid`, the model left is the one of the best epoch by validation accuracy.
/// `on_batch(epoch, done, total)` and `on_epoch(metrics)` report progress. Returns the history
/// and the epoch kept.
pub fn train(
    model: &mut Model,
    train: &Dataset,
    valid: Option<&Dataset>,
    opts: &TrainOptions,
    on_batch: &mut dyn FnMut(usize, usize, usize),
    on_epoch: &mut dyn FnMut(&EpochMetrics),
) -> crate::Result<(Vec<EpochMetrics>, usize)> {
    let adam = opts.optimizer != OptimizerKind::Sgd;
    let mut opt_w = optim::Dense::new(adam, model.w.len());
    let mut opt_b = optim::Dense::new(adam, model.b.len());
    let mut opt_e = (!opts.freeze_embeddings)
        .then(|| optim::EmbeddingOptimizer::new(opts.optimizer, model.rows, model.dim));
    let (lr, emb_lr) = (opts.lr as f32, opts.embedding_lr as f32);
    let frozen = opts.frozen_rows.as_deref();
    let mut journal =
        (valid.is_some() && opt_e.is_some()).then(|| Journal::new(model.rows, model.dim));
    let mut order: Vec<usize> = (0..train.len()).collect();
    let bs = opts.batch_size.max(1);
    let batches = train.len().div_ceil(bs);
    let mut history = Vec::new();
    // Best validation accuracy, its epoch, and W and b then (E's rows are in the journal).
    let mut best: Option<(f64, usize, Vec<f32>, Vec<f32>)> = None;
    for epoch in 1..=opts.epochs {
        let start = std::time::Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
        let train_emb = opt_e.is_some() && epoch > opts.freeze_embeddings_epochs;
        let (mut loss_sum, mut correct) = (0.0, 0usize);
        for (k, chunk) in order.chunks(bs).enumerate() {
            // Deferred Adam: the rows this batch reads first catch up with the steps they missed.
            if let (true, Some(opt)) = (train_emb, opt_e.as_mut()) {
                if opt.defers() {
                    let mut read: Vec<u32> = chunk
                        .iter()
                        .flat_map(|&i| train.ids(i).iter().copied())
                        .collect();
                    read.sort_unstable();
                    read.dedup();
                    if let (Some(j), true) = (journal.as_mut(), best.is_some()) {
                        j.save(&model.emb, &read);
                    }
                    opt.bring_up_to_date(&mut model.emb, &read);
                }
            }
            let step = model.step(train, chunk, train_emb, frozen);
            if !step.loss.is_finite() {
                return Err(diverged(format!(
                    "the loss became {} at epoch {epoch}, step {}: training diverged (lower --lr?); nothing was written",
                    step.loss,
                    k + 1
                )));
            }
            let g = &step.grads;
            opt_w.step(&mut model.w, &g.w, lr);
            opt_b.step(&mut model.b, &g.b, lr);
            if let (true, Some(opt)) = (train_emb, opt_e.as_mut()) {
                if let (Some(j), true) = (journal.as_mut(), best.is_some()) {
                    j.save(&model.emb, opt.rows_to_change(&g.rows));
                }
                opt.step(&mut model.emb, &g.rows, &g.emb, emb_lr);
            }
            loss_sum += step.loss * chunk.len() as f64;
            correct += step
                .preds
                .iter()
                .zip(chunk)
                .filter(|(p, &i)| **p == train.label(i))
                .count();
            on_batch(epoch, k + 1, batches);
        }
        if let (true, Some(opt)) = (train_emb, opt_e.as_mut()) {
            if let (Some(j), true) = (journal.as_mut(), best.is_some()) {
                j.save(&model.emb, opt.rows_to_flush());
            }
            opt.flush(&mut model.emb);
        }
        for (name, p) in [
            ("embedding", &model.emb),
            ("weight", &model.w),
            ("bias", &model.b),
        ] {
            if p.par_iter().any(|x| !x.is_finite()) {
                return Err(diverged(format!(
                    "the {name} parameters hold NaN or infinity after epoch {epoch}, step {batches}: training diverged (lower --lr?); nothing was written"
                )));
            }
        }
        let n = train.len().max(1) as f64;
        let (valid_loss, valid_accuracy) = match valid {
            Some(v) => {
                let (l, a, _) = loss_and_accuracy(model, v);
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
            embedding_trained: train_emb,
            seconds: start.elapsed().as_secs_f64(),
        };
        if let Some(acc) = valid_accuracy {
            if best.as_ref().is_none_or(|b| acc > b.0) {
                best = Some((acc, epoch, model.w.clone(), model.b.clone()));
                if let Some(j) = journal.as_mut() {
                    j.reset();
                }
            }
        }
        on_epoch(&m);
        history.push(m);
    }
    let best_epoch = match best {
        Some((_, epoch, w, b)) => {
            model.w = w;
            model.b = b;
            if let Some(j) = &journal {
                j.restore(&mut model.emb);
            }
            epoch
        }
        None => opts.epochs,
    };
    Ok((history, best_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor, Var};
    use rand::Rng;

    /// Five rows, three tokens per example at most, rows 5..7 never used.
    fn small() -> (Model, Dataset) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let e: Vec<f32> = (0..8 * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
        let model = Model::new(e, 8, 3, 3, 9);
        let mut d = Dataset::new();
        d.push(0, &[0, 1, 1]);
        d.push(1, &[2, 3]);
        d.push(2, &[4]);
        d.push(1, &[]);
        d.push(0, &[3, 0]);
        (model, d)
    }

    fn opts(optimizer: OptimizerKind, epochs: usize) -> TrainOptions {
        TrainOptions {
            epochs,
            lr: 0.05,
            embedding_lr: 0.05,
            batch_size: 2,
            optimizer,
            seed: 1,
            freeze_embeddings: false,
            freeze_embeddings_epochs: 0,
            frozen_rows: None,
        }
    }

    fn run(model: &mut Model, d: &Dataset, valid: Option<&Dataset>, o: &TrainOptions) -> usize {
        train(model, d, valid, o, &mut |_, _, _| {}, &mut |_| {})
            .unwrap()
            .1
    }

    /// The loss of a batch in f64, from the model's f32 parameters.
    fn loss(m: &Model, d: &Dataset, batch: &[usize]) -> f64 {
        m.step(d, batch, false, None).loss
    }

    /// The hand-written backward pass matches central finite differences, for E (touched rows
    /// and zero elsewhere), W and b.
    #[test]
    fn gradients_match_finite_differences() {
        let (mut m, d) = small();
        let batch = [0, 1, 2, 3, 4];
        let g = m.step(&d, &batch, true, None).grads;
        assert_eq!(g.rows, vec![0, 1, 2, 3, 4]);
        let h = 1e-2f32;
        let mut check = |which: usize, i: usize, analytic: f64| {
            let p = match which {
                0 => &mut m.emb,
                1 => &mut m.w,
                _ => &mut m.b,
            };
            let base = p[i];
            p[i] = base + h;
            let up = p[i] as f64;
            let lp = loss(&m, &d, &batch);
            let p = match which {
                0 => &mut m.emb,
                1 => &mut m.w,
                _ => &mut m.b,
            };
            p[i] = base - h;
            let down = p[i] as f64;
            let lm = loss(&m, &d, &batch);
            let p = match which {
                0 => &mut m.emb,
                1 => &mut m.w,
                _ => &mut m.b,
            };
            p[i] = base;
            let fd = (lp - lm) / (up - down);
            assert!(
                (fd - analytic).abs() < 1e-4,
                "param {which}[{i}]: finite difference {fd} vs backprop {analytic}"
            );
        };
        for r in 0..8 {
            for c in 0..3 {
                let analytic = g
                    .rows
                    .iter()
                    .position(|&x| x as usize == r)
                    .map(|k| g.emb[k * 3 + c] as f64)
                    .unwrap_or(0.0);
                check(0, r * 3 + c, analytic);
            }
        }
        for i in 0..9 {
            check(1, i, g.w[i] as f64);
        }
        for i in 0..3 {
            check(2, i, g.b[i] as f64);
        }
    }

    /// The reference: candle's autograd through index_select, masked mean, linear and
    /// cross-entropy, with a dense gradient for E (f64).
    fn candle_dense_grads(m: &Model, d: &Dataset, batch: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let dev = Device::Cpu;
        let t = |v: &[f32], shape: (usize, usize)| {
            let v: Vec<f64> = v.iter().map(|x| *x as f64).collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
        };
        let emb = t(&m.emb, (m.rows, m.dim));
        let w = t(&m.w, (m.classes, m.dim));
        let b = t(&m.b, (1, m.classes));
        let len = batch.iter().map(|&i| d.ids(i).len()).max().unwrap().max(1);
        let n = batch.len();
        let (mut ids, mut mask, mut counts) = (vec![0u32; n * len], vec![0f64; n * len], vec![]);
        for (k, &i) in batch.iter().enumerate() {
            let x = d.ids(i);
            ids[k * len..k * len + x.len()].copy_from_slice(x);
            mask[k * len..k * len + x.len()].fill(1.0);
            counts.push(x.len().max(1) as f64);
        }
        let ids = Tensor::from_vec(ids, n * len, &dev).unwrap();
        let mask = Tensor::from_vec(mask, (n, len, 1), &dev).unwrap();
        let counts = Tensor::from_vec(counts, (n, 1), &dev).unwrap();
        let labels: Vec<u32> = batch.iter().map(|&i| d.label(i) as u32).collect();
        let labels = Tensor::from_vec(labels, n, &dev).unwrap();
        let e = emb
            .as_tensor()
            .index_select(&ids, 0)
            .unwrap()
            .reshape((n, len, m.dim))
            .unwrap();
        let h = e
            .broadcast_mul(&mask)
            .unwrap()
            .sum(1)
            .unwrap()
            .broadcast_div(&counts)
            .unwrap();
        let logits = h
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
        let grads = loss.backward().unwrap();
        let flat = |v: &Var| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        (flat(&emb), flat(&w))
    }

    /// The sparse gradient equals the dense one on the touched rows, and the dense one is zero
    /// on every other row; frozen rows are left out.
    #[test]
    fn sparse_gradient_equals_the_dense_gradient() {
        let (m, d) = small();
        for batch in [vec![0, 1], vec![4, 3, 2], vec![0, 1, 2, 3, 4]] {
            let g = m.step(&d, &batch, true, None).grads;
            let (dense, dense_w) = candle_dense_grads(&m, &d, &batch);
            let mut touched: Vec<u32> = batch.iter().flat_map(|&i| d.ids(i).to_vec()).collect();
            touched.sort();
            touched.dedup();
            assert_eq!(g.rows, touched);
            for r in 0..m.rows {
                let row = &dense[r * 3..(r + 1) * 3];
                match g.rows.iter().position(|&x| x as usize == r) {
                    Some(k) => {
                        for (ours, theirs) in g.emb[k * 3..k * 3 + 3].iter().zip(row) {
                            let ours = *ours as f64;
                            assert!((ours - theirs).abs() < 1e-6, "row {r}: {ours} vs {theirs}");
                        }
                        assert!(row.iter().any(|x| *x != 0.0));
                    }
                    None => assert!(row.iter().all(|x| *x == 0.0), "row {r}: {row:?}"),
                }
            }
            for (ours, theirs) in g.w.iter().zip(&dense_w) {
                assert!((*ours as f64 - theirs).abs() < 1e-6);
            }
            let mut frozen = vec![false; m.rows];
            frozen[1] = true;
            frozen[3] = true;
            let gf = m.step(&d, &batch, true, Some(&frozen)).grads;
            let kept: Vec<u32> = touched
                .iter()
                .copied()
                .filter(|r| *r != 1 && *r != 3)
                .collect();
            assert_eq!(gf.rows, kept);
            for (k, r) in gf.rows.iter().enumerate() {
                let j = g.rows.iter().position(|x| x == r).unwrap();
                assert_eq!(gf.emb[k * 3..k * 3 + 3], g.emb[j * 3..j * 3 + 3]);
            }
        }
    }

    /// While every row is touched at every step, lazy Adam and dense Adam are the same
    /// algorithm: bit-identical parameters. When some rows are not touched, they differ.
    #[test]
    fn lazy_and_dense_adam_agree_exactly_when_every_row_is_touched() {
        let (base, _) = small();
        let mut all = Dataset::new();
        // Every batch of 2 holds every one of the 8 rows.
        for k in 0..6 {
            all.push(k % 3, &[0, 1, 2, 3]);
            all.push((k + 1) % 3, &[4, 5, 6, 7, (k % 8) as u32]);
        }
        let o = |kind| TrainOptions {
            batch_size: 2,
            ..opts(kind, 4)
        };
        // Each batch of the shuffled order must still touch all rows: batches of the whole set.
        let o = |kind| TrainOptions {
            batch_size: all.len(),
            ..o(kind)
        };
        let (mut dense, mut lazy, mut deferred) = (base.clone(), base.clone(), base.clone());
        run(&mut dense, &all, None, &o(OptimizerKind::Adam));
        run(&mut lazy, &all, None, &o(OptimizerKind::LazyAdam));
        run(&mut deferred, &all, None, &o(OptimizerKind::DeferredAdam));
        assert_ne!(dense.emb, base.emb);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for other in [&lazy, &deferred] {
            assert_eq!(bits(&dense.emb), bits(&other.emb));
            assert_eq!(bits(&dense.w), bits(&other.w));
            assert_eq!(bits(&dense.b), bits(&other.b));
        }

        let (base, d) = small();
        let (mut dense, mut lazy) = (base.clone(), base.clone());
        run(&mut dense, &d, None, &opts(OptimizerKind::Adam, 3));
        run(&mut lazy, &d, None, &opts(OptimizerKind::LazyAdam, 3));
        assert_ne!(bits(&dense.emb), bits(&lazy.emb));
        // Rows no example uses never move, with either.
        assert_eq!(dense.emb[15..], base.emb[15..]);
        assert_eq!(lazy.emb[15..], base.emb[15..]);
    }

    /// Deferred Adam follows dense Adam where rows are skipped for many steps (its closed form
    /// leaves out only ε), while lazy Adam ends far from it: the test tells the three apart.
    #[test]
    fn deferred_adam_follows_dense_adam_when_rows_are_skipped() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (rows, dim) = (60usize, 8usize);
        let e: Vec<f32> = (0..rows * dim)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut d = Dataset::new();
        // Row r is used about every r-th example: frequent and rare rows, gaps of 1-60 steps.
        for i in 0..240usize {
            let ids: Vec<u32> = (0..rows as u32)
                .filter(|r| i % (*r as usize + 1) == 0)
                .take(6)
                .chain([(i * 7 % rows) as u32])
                .collect();
            d.push(i % 3, &ids);
        }
        let o = |kind| TrainOptions {
            batch_size: 4,
            lr: 0.01,
            embedding_lr: 0.01,
            ..opts(kind, 3)
        };
        let base = Model::new(e, rows, dim, 3, 5);
        let (mut dense, mut lazy, mut deferred) = (base.clone(), base.clone(), base.clone());
        // A validation set: the epoch-end flush must happen before it is evaluated.
        let best_dense = run(&mut dense, &d, Some(&d), &o(OptimizerKind::Adam));
        let best_lazy = run(&mut lazy, &d, Some(&d), &o(OptimizerKind::LazyAdam));
        let best_deferred = run(&mut deferred, &d, Some(&d), &o(OptimizerKind::DeferredAdam));
        assert_eq!(best_dense, best_deferred);
        let _ = best_lazy;
        let dist = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        let moved = dist(&dense.emb, &base.emb);
        assert!(moved > 0.05, "dense Adam moved E by {moved}");
        let off_deferred = dist(&dense.emb, &deferred.emb);
        let off_lazy = dist(&dense.emb, &lazy.emb);
        assert!(
            off_deferred < 1e-4 * moved.max(1.0),
            "deferred Adam is {off_deferred} from dense Adam (moved {moved})"
        );
        assert!(
            off_lazy > 100.0 * off_deferred.max(1e-7),
            "lazy Adam is only {off_lazy} from dense Adam"
        );
        assert!(dist(&dense.w, &deferred.w) < 1e-4);
    }

    /// Dense Adam takes the same steps as candle-nn's AdamW with no weight decay.
    #[test]
    fn dense_adam_matches_candle_adamw() {
        use candle_nn::{AdamW, Optimizer, ParamsAdamW};
        let init: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 7.0).collect();
        let b = Var::from_tensor(&Tensor::from_vec(init.clone(), (3, 4), &Device::Cpu).unwrap())
            .unwrap();
        let mut ours = init.clone();
        let mut opt = optim::Dense::new(true, 12);
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let mut theirs = AdamW::new(vec![b.clone()], params).unwrap();
        for _ in 0..5 {
            // loss = sum(w^3): a gradient that changes with the weights.
            let g: Vec<f32> = ours.iter().map(|w| 3.0 * w * w).collect();
            opt.step(&mut ours, &g, 0.05);
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
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in ours.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        assert!(ours.iter().zip(&init).any(|(x, y)| (x - y).abs() > 0.1));
    }

    /// Same bytes with one thread and with four.
    #[test]
    fn training_does_not_depend_on_the_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let rows = 300;
        let e: Vec<f32> = (0..rows * 16)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut d = Dataset::new();
        for i in 0..200 {
            let ids: Vec<u32> = (0..(i % 17) + 1)
                .map(|_| rng.random_range(0..rows as u32))
                .collect();
            d.push(i % 3, &ids);
        }
        let run_with = |threads: usize, kind: OptimizerKind| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut m = Model::new(e.clone(), rows, 16, 3, 2);
                let o = TrainOptions {
                    batch_size: 8,
                    ..opts(kind, 2)
                };
                run(&mut m, &d, Some(&d), &o);
                m
            })
        };
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::LazyAdam,
            OptimizerKind::DeferredAdam,
            OptimizerKind::Sgd,
        ] {
            let (a, b) = (run_with(1, kind), run_with(4, kind));
            assert_eq!(a.emb, b.emb, "{kind:?}");
            assert_eq!(a.w, b.w);
            assert_eq!(a.b, b.b);
        }
    }

    /// The best epoch's model is restored exactly from the journal: the same bits as training
    /// only that many epochs.
    #[test]
    fn best_epoch_is_restored_exactly() {
        let (base, d) = small();
        // Validation labels are the training labels shifted: accuracy on it falls as training
        // fits the training set, so the best epoch comes early.
        let mut v = Dataset::new();
        for i in 0..d.len() {
            v.push((d.label(i) + 1) % 3, d.ids(i));
        }
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::LazyAdam,
            OptimizerKind::DeferredAdam,
            OptimizerKind::Sgd,
        ] {
            let mut m = base.clone();
            let best = run(&mut m, &d, Some(&v), &opts(kind, 6));
            assert!(best < 6, "{kind:?}: best epoch {best}");
            let mut again = base.clone();
            run(&mut again, &d, None, &opts(kind, best));
            assert_eq!(m.emb, again.emb, "{kind:?}");
            assert_eq!(m.w, again.w);
            assert_eq!(m.b, again.b);
        }
    }

    #[test]
    fn embedding_waits_for_freeze_epochs_and_has_its_own_rate() {
        let (base, d) = small();
        let mut m = base.clone();
        let o = TrainOptions {
            freeze_embeddings_epochs: 2,
            ..opts(OptimizerKind::LazyAdam, 2)
        };
        let hist = train(&mut m, &d, None, &o, &mut |_, _, _| {}, &mut |_| {})
            .unwrap()
            .0;
        assert_eq!(m.emb, base.emb);
        assert_ne!(m.w, base.w);
        assert!(hist.iter().all(|h| !h.embedding_trained));
        let o = TrainOptions { epochs: 3, ..o };
        let hist = train(&mut m, &d, None, &o, &mut |_, _, _| {}, &mut |_| {})
            .unwrap()
            .0;
        assert_ne!(m.emb, base.emb);
        assert_eq!(
            hist.iter().map(|h| h.embedding_trained).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        // SGD: one step moves E by embedding_lr times the gradient.
        let one = |emb_lr: f64| {
            let mut m = base.clone();
            let o = TrainOptions {
                batch_size: 5,
                embedding_lr: emb_lr,
                ..opts(OptimizerKind::Sgd, 1)
            };
            run(&mut m, &d, None, &o);
            (
                m.emb
                    .iter()
                    .zip(&base.emb)
                    .map(|(a, b)| a - b)
                    .collect::<Vec<f32>>(),
                m.w,
            )
        };
        let ((slow, w1), (fast, w2)) = (one(0.01), one(0.04));
        assert_eq!(w1, w2, "the head's rate is --lr's");
        for (s, f) in slow.iter().zip(&fast) {
            assert!((4.0 * s - f).abs() < 1e-6, "{s} {f}");
        }
        assert!(slow.iter().any(|x| *x != 0.0));
    }

    #[test]
    fn divergence_is_an_error() {
        let (mut m, d) = small();
        let o = TrainOptions {
            lr: 1e30,
            embedding_lr: 1e30,
            ..opts(OptimizerKind::Sgd, 3)
        };
        let e = train(&mut m, &d, None, &o, &mut |_, _, _| {}, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("training diverged (lower --lr?)"), "{e}");
    }
}
