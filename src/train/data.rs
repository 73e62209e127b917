//! Text -> ids for fine-tuning, by longest match against the target vocabulary (no I/O).

use std::collections::HashMap;

/// Labelled, tokenized examples: every example's ids in one flat buffer, delimited by offsets
/// (one allocation for the whole set rather than one per sentence).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    ids: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]` are example i's ids; `offsets[0] == 0`.
    offsets: Vec<usize>,
    labels: Vec<usize>,
}

impl Dataset {
    pub fn new() -> Self {
        Dataset {
            ids: Vec::new(),
            offsets: vec![0],
            labels: Vec::new(),
        }
    }

    pub fn push(&mut self, label: usize, ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
        self.labels.push(label);
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Example i's ids.
    pub fn ids(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Every id of every example, in order.
    pub fn all_ids(&self) -> &[u32] {
        &self.ids
    }

    /// Releases spare capacity (the buffers grew by doubling while the set was read).
    pub fn shrink_to_fit(&mut self) {
        self.ids.shrink_to_fit();
        self.offsets.shrink_to_fit();
        self.labels.shrink_to_fit();
    }
}

/// Longest-match-first segmentation against a vocabulary: works for word-level and
/// character-level Chinese vocabularies alike; ASCII letter/digit runs are taken whole when the
/// vocabulary has them; unknown characters become the unknown token (when the vocabulary has one)
/// or are dropped; whitespace separates.
pub struct Segmenter {
    ids: HashMap<String, u32>,
    max_chars: usize,
    unk: Option<u32>,
}

impl Segmenter {
    pub fn new(tokens: &[String], unk_token: &str) -> Self {
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let max_chars = tokens
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1)
            .min(32);
        let unk = ids.get(unk_token).copied();
        Segmenter {
            ids,
            max_chars,
            unk,
        }
    }

    pub fn unk(&self) -> Option<u32> {
        self.unk
    }

    pub fn segment(&self, text: &str, max_len: usize) -> Vec<u32> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let byte_at = |k: usize| chars.get(k).map(|c| c.0).unwrap_or(text.len());
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() && out.len() < max_len {
            let c = chars[i].1;
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            // An ASCII word or number as a whole, when the vocabulary has it.
            if c.is_ascii_alphanumeric() {
                let mut j = i;
                while j < chars.len() && chars[j].1.is_ascii_alphanumeric() {
                    j += 1;
                }
                if let Some(&id) = self.ids.get(&text[byte_at(i)..byte_at(j)]) {
                    out.push(id);
                    i = j;
                    continue;
                }
            }
            let longest = (1..=self.max_chars.min(chars.len() - i))
                .rev()
                .find_map(|n| {
                    self.ids
                        .get(&text[byte_at(i)..byte_at(i + n)])
                        .map(|&id| (n, id))
                });
            match longest {
                Some((n, id)) => {
                    out.push(id);
                    i += n;
                }
                None => {
                    if let Some(u) = self.unk {
                        out.push(u);
                    }
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(vocab: &[&str]) -> Segmenter {
        let v: Vec<String> = vocab.iter().map(|s| s.to_string()).collect();
        Segmenter::new(&v, "[UNK]")
    }

    #[test]
    fn longest_match_words_chars_ascii_and_unknowns() {
        let s = seg(&["[UNK]", "中", "国", "中国", "人", "hello", "2024", "h"]);
        assert_eq!(s.segment("中国人", 10), vec![3, 4]);
        assert_eq!(s.segment("hello 中", 10), vec![5, 1]);
        assert_eq!(s.segment("2024年", 10), vec![6, 0]);
        assert_eq!(s.segment("hx", 10), vec![7, 0]);
        assert_eq!(s.segment("中中中中", 2), vec![1, 1]);
        let s = Segmenter::new(&["a".to_string()], "[UNK]");
        assert_eq!(s.segment("ab", 10), vec![0]);
    }

    #[test]
    fn dataset_keeps_examples_apart_in_one_buffer() {
        let mut d = Dataset::new();
        d.push(1, &[4, 5, 6]);
        d.push(0, &[]);
        d.push(2, &[7]);
        assert_eq!(d.len(), 3);
        assert_eq!(d.ids(0), &[4, 5, 6]);
        assert!(d.ids(1).is_empty());
        assert_eq!(d.ids(2), &[7]);
        assert_eq!(d.labels(), &[1, 0, 2]);
        assert_eq!(d.all_ids(), &[4, 5, 6, 7]);
    }
}
