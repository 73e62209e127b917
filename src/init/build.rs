//! The pure core: given where each output row comes from, build the new matrix. No I/O, no flags.
//! Rows are filled in parallel; each random row draws from its own seeded stream, so the bytes do
//! not depend on thread count or order.
//!
//! (Over 400 lines because 40% of it is the unit tests on tiny matrices that pin every row source.)

use crate::dtype::DType;
use crate::linalg::{mean_row, Matrix};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Where one output row comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RowSource {
    /// This source row, copied bit for bit (converted only when the output type differs).
    Copy(u32),
    /// The mean of these source rows (the token's pieces under the source tokenizer).
    Composed(Vec<u32>),
    /// The mean of these source rows, then the fitted map ([`BuildOptions::compose_map`];
    /// without one, the plain mean).
    Fitted(Vec<u32>),
    /// A weighted sum of these source rows (static vectors as a guide; weights sum to 1).
    Weighted(Vec<(u32, f32)>),
    /// Left to the fill method.
    Fill,
}

impl RowSource {
    pub fn is_copy(&self) -> bool {
        matches!(self, RowSource::Copy(_))
    }
}

impl AsRef<RowSource> for RowSource {
    fn as_ref(&self) -> &RowSource {
        self
    }
}

/// How rows with nothing to copy or compose are initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// N(0, sigma), seeded.
    Random {
        sigma: f32,
    },
    Zeros,
    /// The mean of the source vocabulary's rows.
    Mean,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: DType,
    pub fill: Fill,
    pub seed: u64,
    /// Scale initialised rows to the median L2 norm of the copied rows.
    pub calibrate_norm: bool,
    /// Source rows 0..vocab_rows are the vocabulary's (the rest is padding), for the mean.
    pub vocab_rows: usize,
    /// Rows of held-out tokens (`score`'s reduced source): left out of the mean.
    pub held_out: Option<std::sync::Arc<std::collections::HashSet<u32>>>,
    /// The fitted map applied to [`RowSource::Fitted`] rows after the mean.
    pub compose_map: Option<std::sync::Arc<crate::init::fit::LinearMap>>,
    /// Measure copied rows' norms for [`BuildStats`] (the report and `--plot`). Without it (the
    /// model directory's tensors), a copied row of the output's type is a plain byte copy, its
    /// norm is left 0 and the copied median is not computed (unless calibrating needs it).
    pub row_stats: bool,
}

/// What was noticed while building.
#[derive(Debug, Clone, Default)]
pub struct BuildStats {
    /// Rows whose finite values became infinite in the output type (e.g. 1e5 as f16).
    pub overflow_rows: usize,
    /// The median norm that initialised rows were scaled to, when calibrating.
    pub calibrated_to: Option<f32>,
    /// Median L2 norms of copied and of initialised rows, as built (after calibration).
    pub median_norm_copied: Option<f32>,
    pub median_norm_initialised: Option<f32>,
    /// Every output row's L2 norm as built, in row order (4 bytes a row: 1/dim of an f32
    /// output), for the `--plot` picture.
    pub norms: Vec<f32>,
}

/// Rows built per block: big enough to keep both cores busy, small enough that the buffer is a
/// rounding error next to the output (768 columns of f32: 12 MB).
const BLOCK_ROWS: usize = 4096;

/// Builds the output matrix block by block, in row order, handing each block's bytes to `sink`
/// (the output file). Only one block is in memory; rows within a block are built in parallel.
pub fn build_blocks<R: AsRef<RowSource> + Sync>(
    rows: &[R],
    src: Matrix<'_>,
    opts: &BuildOptions,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<BuildStats> {
    let cols = src.cols;
    let width = cols * opts.out.size();
    let mean = match opts.fill {
        Fill::Mean => Some(mean_row(
            src,
            opts.vocab_rows,
            opts.held_out.as_deref().unwrap_or(&Default::default()),
        )),
        _ => None,
    };
    let normal = match opts.fill {
        Fill::Random { sigma } => Normal::new(0.0f32, sigma.max(0.0)).ok(),
        _ => None,
    };
    // Copied rows keep their source norms, so the calibration target is known before building.
    let median_copied = if !(opts.row_stats || opts.calibrate_norm) {
        None
    } else {
        median(
            rows.iter()
                .filter_map(|r| match r.as_ref() {
                    RowSource::Copy(id) => Some(*id as usize),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .par_iter()
                .map_init(
                    || vec![0f32; cols],
                    |tmp, &id| {
                        src.row_f32(id, tmp);
                        tmp.iter().map(|v| v * v).sum::<f32>().sqrt()
                    },
                )
                .collect(),
        )
    };
    let calibrated_to = median_copied.filter(|_| opts.calibrate_norm);
    let mut norms: Vec<f32> = vec![0.0; rows.len()];
    let mut overflows: Vec<bool> = vec![false; BLOCK_ROWS.min(rows.len())];
    let mut buf = vec![0u8; BLOCK_ROWS.min(rows.len()) * width];
    let mut overflow_rows = 0;
    for (b, (block_rows, block_norms)) in rows
        .chunks(BLOCK_ROWS)
        .zip(norms.chunks_mut(BLOCK_ROWS))
        .enumerate()
    {
        let base = b * BLOCK_ROWS;
        let out = &mut buf[..block_rows.len() * width];
        let block_overflows = &mut overflows[..block_rows.len()];
        block_overflows.fill(false);
        out.par_chunks_mut(width.max(1))
            .zip(block_norms.par_iter_mut())
            .zip(block_overflows.par_iter_mut())
            .enumerate()
            .for_each_init(
                || (vec![0f32; cols], vec![0f32; cols]),
                |(acc, tmp), (k, ((out, norm), overflow))| {
                    let row = block_rows[k].as_ref();
                    match row {
                        RowSource::Copy(id) => {
                            let id = *id as usize;
                            if src.dtype == opts.out && !opts.row_stats {
                                out.copy_from_slice(src.row_bytes(id));
                                return;
                            }
                            src.row_f32(id, acc);
                            if src.dtype == opts.out {
                                out.copy_from_slice(src.row_bytes(id));
                            } else {
                                *overflow = opts.out.encode_checked(acc, out)
                                    || (src.dtype == DType::F64 && src.row_overflows_f32(id));
                            }
                        }
                        RowSource::Composed(ids) | RowSource::Fitted(ids) => {
                            acc.fill(0.0);
                            for &id in ids {
                                src.row_f32(id as usize, tmp);
                                for (a, t) in acc.iter_mut().zip(tmp.iter()) {
                                    *a += *t;
                                }
                            }
                            let n = ids.len().max(1) as f32;
                            acc.iter_mut().for_each(|a| *a /= n);
                            if let (RowSource::Fitted(_), Some(map)) = (row, &opts.compose_map) {
                                map.apply(acc, tmp);
                            }
                        }
                        RowSource::Weighted(parts) => {
                            acc.fill(0.0);
                            for &(id, w) in parts {
                                src.row_f32(id as usize, tmp);
                                for (a, t) in acc.iter_mut().zip(tmp.iter()) {
                                    *a += w * *t;
                                }
                            }
                        }
                        RowSource::Fill => match opts.fill {
                            Fill::Zeros => acc.fill(0.0),
                            Fill::Mean => acc.copy_from_slice(mean.as_deref().unwrap_or(&[])),
                            Fill::Random { .. } => {
                                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                                rng.set_stream((base + k) as u64);
                                match &normal {
                                    Some(n) => acc.iter_mut().for_each(|a| *a = n.sample(&mut rng)),
                                    None => acc.fill(0.0),
                                }
                            }
                        },
                    }
                    *norm = acc.iter().map(|v| v * v).sum::<f32>().sqrt();
                    if !row.is_copy() {
                        if let Some(target) =
                            calibrated_to.filter(|_| *norm > 0.0 && norm.is_finite())
                        {
                            let scale = target / *norm;
                            acc.iter_mut().for_each(|a| *a *= scale);
                            *norm = target;
                        }
                        *overflow = opts.out.encode_checked(acc, out);
                    }
                },
            );
        overflow_rows += block_overflows.iter().filter(|o| **o).count();
        sink(out)?;
    }
    let initialised: Vec<f32> = rows
        .iter()
        .zip(&norms)
        .filter(|(r, _)| !r.as_ref().is_copy())
        .map(|(_, n)| *n)
        .collect();
    Ok(BuildStats {
        overflow_rows,
        calibrated_to,
        median_norm_copied: median_copied,
        median_norm_initialised: median(initialised),
        norms,
    })
}

fn median(mut v: Vec<f32>) -> Option<f32> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::tests::{matrix, src_bytes};

    /// The output matrix built in memory, for tests.
    struct Built {
        data: Vec<u8>,
        stats: BuildStats,
        rows: usize,
        cols: usize,
    }

    fn build(rows: &[RowSource], src: Matrix<'_>, opts: &BuildOptions) -> Built {
        let mut data = Vec::new();
        let stats = build_blocks(rows, src, opts, |block| {
            data.extend_from_slice(block);
            Ok(())
        })
        .unwrap();
        Built {
            data,
            stats,
            rows: rows.len(),
            cols: src.cols,
        }
    }

    fn opts(fill: Fill) -> BuildOptions {
        BuildOptions {
            out: DType::F32,
            fill,
            seed: 7,
            calibrate_norm: false,
            vocab_rows: 5,
            held_out: None,
            compose_map: None,
            row_stats: true,
        }
    }

    fn row(b: &Built, i: usize) -> Vec<f32> {
        let mut out = vec![0f32; b.cols];
        DType::F32.decode(&b.data[i * b.cols * 4..(i + 1) * b.cols * 4], &mut out);
        out
    }

    #[test]
    fn copies_composes_and_fills_in_target_order() {
        let b = src_bytes();
        let rows = vec![
            RowSource::Copy(3),
            RowSource::Fill,
            RowSource::Composed(vec![1, 2]),
            RowSource::Copy(0),
            RowSource::Weighted(vec![(1, 0.75), (3, 0.25)]),
        ];
        let built = build(&rows, matrix(&b), &opts(Fill::Zeros));
        assert_eq!(built.rows, 5);
        assert_eq!(&built.data[..16], matrix(&b).row_bytes(3));
        assert_eq!(row(&built, 1), vec![0.0; 4]);
        assert_eq!(row(&built, 2), vec![15.0, 16.0, 17.0, 18.0]);
        assert_eq!(row(&built, 3), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(row(&built, 4), vec![15.0, 16.0, 17.0, 18.0]);
        // One norm per output row, in row order, of the row as written.
        let norm = |v: Vec<f32>| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let want: Vec<f32> = (0..built.rows).map(|i| norm(row(&built, i))).collect();
        assert_eq!(built.stats.norms, want);
    }

    #[test]
    fn mean_fill_is_the_mean_of_vocab_rows() {
        let b = src_bytes();
        let built = build(&[RowSource::Fill], matrix(&b), &opts(Fill::Mean));
        assert_eq!(row(&built, 0), vec![20.0, 21.0, 22.0, 23.0]);
    }

    #[test]
    fn random_rows_are_seeded_per_row() {
        let b = src_bytes();
        let rows = vec![RowSource::Fill, RowSource::Fill];
        let a = build(&rows, matrix(&b), &opts(Fill::Random { sigma: 0.5 }));
        let a2 = build(&rows, matrix(&b), &opts(Fill::Random { sigma: 0.5 }));
        assert_eq!(a.data, a2.data);
        assert_ne!(row(&a, 0), row(&a, 1));
        // Row 1's values do not depend on what the rows before it are.
        let c = build(
            &[RowSource::Copy(0), RowSource::Fill],
            matrix(&b),
            &opts(Fill::Random { sigma: 0.5 }),
        );
        assert_eq!(row(&a, 1), row(&c, 1));
        let mut o = opts(Fill::Random { sigma: 0.5 });
        o.seed = 8;
        assert_ne!(build(&rows, matrix(&b), &o).data, a.data);
    }

    #[test]
    fn dtype_conversion_and_bit_exact_copy() {
        let b = src_bytes();
        let mut o = opts(Fill::Zeros);
        o.out = DType::BF16;
        let built = build(&[RowSource::Copy(2)], matrix(&b), &o);
        let mut out = vec![0f32; 4];
        DType::BF16.decode(&built.data, &mut out);
        assert_eq!(out, vec![20.0, 21.0, 22.0, 23.0]);
    }

    #[test]
    fn calibration_scales_initialised_rows_to_median_copied_norm() {
        let b = src_bytes();
        let mut o = opts(Fill::Random { sigma: 0.01 });
        o.calibrate_norm = true;
        let rows = vec![RowSource::Copy(1), RowSource::Fill, RowSource::Copy(1)];
        let built = build(&rows, matrix(&b), &o);
        let target = row(&built, 0).iter().map(|v| v * v).sum::<f32>().sqrt();
        let got = row(&built, 1).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((target - got).abs() < 1e-3 * target, "{target} {got}");
        assert_eq!(built.stats.calibrated_to, Some(target));
        // The norms reported are those after calibration.
        assert!((built.stats.norms[1] - target).abs() < 1e-3 * target);
    }

    #[test]
    fn overflow_on_conversion_is_counted_not_nonfinite_source() {
        let mut b = src_bytes();
        b[4..8].copy_from_slice(&1e5f32.to_le_bytes());
        let m = matrix(&b);
        assert!(m.nonfinite_rows().is_empty());
        let mut o = opts(Fill::Zeros);
        o.out = DType::F16;
        let built = build(&[RowSource::Copy(0), RowSource::Copy(1)], m, &o);
        assert_eq!(built.stats.overflow_rows, 1);
        b[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(matrix(&b).nonfinite_rows(), vec![0]);
        let f64s: Vec<u8> = [1e300f64, 1.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let m = Matrix {
            dtype: DType::F64,
            rows: 1,
            cols: 2,
            data: &f64s,
        };
        assert!(m.nonfinite_rows().is_empty());
        let mut o = opts(Fill::Zeros);
        o.out = DType::F32;
        assert_eq!(build(&[RowSource::Copy(0)], m, &o).stats.overflow_rows, 1);
    }
}
