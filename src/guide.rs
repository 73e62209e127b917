//! Static word vectors as a guide (FOCUS / WECHSEL style): a token the source lacks but a static
//! vector file knows gets the weighted mean of the source rows of its nearest anchors (tokens in
//! both the source vocabulary and the static file), nearest by cosine in the static space,
//! weighted by a softmax over the top [`TOP_K`] similarities at temperature [`TEMPERATURE`]
//! (WECHSEL's choice). Pure: no I/O.

use crate::error::Result;
use crate::quality::matmul_t;
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

/// Tokens in both spaces: their source row and their unit-length static vector.
pub struct Anchors {
    pub ids: Vec<u32>,
    pub names: Vec<String>,
    pub dim: usize,
    /// ids.len() x dim, each row of unit length.
    vecs: Vec<f32>,
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
        }
    }

    pub fn push(&mut self, id: u32, name: &str, v: &[f32]) {
        self.ids.push(id);
        self.names.push(name.to_string());
        let start = self.vecs.len();
        self.vecs.extend_from_slice(v);
        unit(&mut self.vecs[start..]);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// For each query (static vectors, n x dim), the top anchors and their weights (summing to
    /// 1), anchors in `exclude` (by source id) left out; ties broken by anchor order.
    pub fn weights(
        &self,
        queries: &[f32],
        exclude: &HashSet<u32>,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let d = self.dim;
        let mut out = Vec::with_capacity(queries.len() / d.max(1));
        let per_block = (SIMS_BUDGET / self.len().max(1)).clamp(1, QUERY_BLOCK);
        for block in queries.chunks(per_block * d.max(1)) {
            let mut q = block.to_vec();
            q.chunks_exact_mut(d.max(1)).for_each(unit);
            let sims = matmul_t(&q, &self.vecs, d)?;
            let a = self.len();
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
        let w = a.weights(&[2.0, 0.1], &HashSet::new()).unwrap();
        assert_eq!(w[0][0].0, 0);
        assert!(w[0][0].1 > 0.99);
        let total: f32 = w[0].iter().map(|x| x.1).sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Excluded anchors (held-out tokens) are never used.
        let w = a.weights(&[2.0, 0.1], &HashSet::from([10])).unwrap();
        assert_eq!(w[0][0].0, 1);
        assert!(w[0].iter().all(|x| x.0 != 0));
    }
}
