//! Property tests of the pure pipeline: vocabularies -> matching::plan -> build::build.
//!
//! Source vocabularies are small, unique, and mix ASCII, mixed case, `##` continuations, CJK,
//! full-width letters, accents and bracketed specials, so that exact, normalised, continuation,
//! composed and fill rows all occur. They are written as a vocab.txt and read back with
//! `vocab::load_source`, the way the CLI reads them. Target lists draw from the source vocabulary
//! (as is, upper-cased, full-width, with `##` toggled) and from fresh tokens, duplicates allowed.

use embed_transplant::api::build::{self, BuildOptions, Fill, RowSource};
use embed_transplant::api::matching::{self, Origin, SourceTokenizer};
use embed_transplant::api::vocab::{self, SourceVocab};
use embed_transplant::api::DType;
use embed_transplant::api::Matrix;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::HashSet;

/// One token of the kinds a BERT vocabulary holds. Small alphabets, so that source and target
/// overlap, and so that normalised forms of targets often land on source tokens.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-e]{1,3}",
        2 => "[a-eA-E]{1,3}",
        2 => "##[a-e]{1,2}",
        2 => "[\u{4e00}-\u{4e07}]{1,2}",
        1 => "##[\u{4e00}-\u{4e07}]",
        1 => "[\u{ff21}-\u{ff25}\u{ff41}-\u{ff45}]{1,2}",
        1 => "[aeéèüñ]{1,2}",
        1 => "e\u{301}[a-c]?",
        1 => "\\[(UNK|PAD|CLS|SEP|MASK)\\]",
        1 => "[a-c0-9 !#\u{2028}\u{a0}\u{1f600}]{1,3}",
    ]
}

/// Tokens that a vocab.txt line and a target line can hold as is.
fn storable(t: &str) -> bool {
    !t.is_empty()
        && !t.contains(['\n', '\r', '\0'])
        && !t.starts_with('\u{feff}')
        && t.len() <= vocab::MAX_TOKEN_BYTES
}

/// A unique source vocabulary, in id order.
fn source_tokens() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(token(), 1..40),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(toks, with_unk, with_pad)| {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            let lead = [with_pad.then_some("[PAD]"), with_unk.then_some("[UNK]")];
            for t in lead.into_iter().flatten().map(str::to_string).chain(toks) {
                if storable(&t) && seen.insert(t.clone()) {
                    out.push(t);
                }
            }
            out
        })
}

#[derive(Debug, Clone)]
enum Pick {
    Same(Index),
    Upper(Index),
    FullWidth(Index),
    ToggleHash(Index),
    /// Two source tokens run together (a `##` piece loses its prefix): material for composition.
    Concat(Index, Index),
    Fresh(String),
}

fn picks() -> impl Strategy<Value = Vec<Pick>> {
    let pick = prop_oneof![
        4 => any::<Index>().prop_map(Pick::Same),
        1 => any::<Index>().prop_map(Pick::Upper),
        1 => any::<Index>().prop_map(Pick::FullWidth),
        1 => any::<Index>().prop_map(Pick::ToggleHash),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Pick::Concat(a, b)),
        3 => token().prop_map(Pick::Fresh),
    ];
    prop::collection::vec(pick, 1..40)
}

fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xff01).unwrap_or(c),
            c => c,
        })
        .collect()
}

fn resolve(picks: &[Pick], src: &[String]) -> Vec<String> {
    picks
        .iter()
        .map(|p| match p {
            Pick::Same(i) => src[i.index(src.len())].clone(),
            Pick::Upper(i) => src[i.index(src.len())].to_uppercase(),
            Pick::FullWidth(i) => full_width(&src[i.index(src.len())]),
            Pick::ToggleHash(i) => {
                let t = &src[i.index(src.len())];
                match t.strip_prefix("##") {
                    Some(rest) if !rest.is_empty() => rest.to_string(),
                    _ => format!("##{t}"),
                }
            }
            Pick::Concat(a, b) => {
                let (a, b) = (&src[a.index(src.len())], &src[b.index(src.len())]);
                format!("{a}{}", b.strip_prefix("##").unwrap_or(b))
            }
            Pick::Fresh(t) => t.clone(),
        })
        .filter(|t| storable(t))
        .collect()
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        Just(DType::F32),
        Just(DType::F16),
        Just(DType::BF16),
        Just(DType::F64)
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        (0.0f32..1.0).prop_map(|sigma| Fill::Random { sigma }),
        Just(Fill::Zeros),
        Just(Fill::Mean),
    ]
}

/// Random element bytes: mostly finite values of moderate size, sometimes any bit pattern
/// (NaN, infinities, subnormals), which a bit-exact copy must carry over unchanged.
fn matrix_bytes(dtype: DType, n: usize) -> impl Strategy<Value = Vec<u8>> {
    let elem = prop_oneof![
        4 => (-4.0f32..4.0).prop_map(move |v| {
            let mut b = vec![0u8; dtype.size()];
            dtype.encode(&[v], &mut b);
            b
        }),
        1 => prop::collection::vec(any::<u8>(), dtype.size()),
    ];
    prop::collection::vec(elem, n).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
struct Case {
    src_tokens: Vec<String>,
    target: Vec<String>,
    dtype: DType,
    extra_rows: usize,
    cols: usize,
    matrix: Vec<u8>,
    lowercase: bool,
    compose: bool,
    fill: Fill,
    calibrate: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (source_tokens(), picks(), dtype(), 0usize..3, 1usize..6)
        .prop_flat_map(|(src_tokens, picks, dtype, extra_rows, cols)| {
            let target = resolve(&picks, &src_tokens);
            let n = (src_tokens.len() + extra_rows) * cols;
            (
                Just(src_tokens),
                Just(target),
                Just(dtype),
                Just(extra_rows),
                Just(cols),
                matrix_bytes(dtype, n),
                any::<bool>(),
                any::<bool>(),
                fill(),
                any::<bool>(),
                any::<u64>(),
            )
        })
        .prop_map(
            |(
                src_tokens,
                target,
                dtype,
                extra_rows,
                cols,
                matrix,
                lowercase,
                compose,
                fill,
                calibrate,
                seed,
            )| Case {
                src_tokens,
                target,
                dtype,
                extra_rows,
                cols,
                matrix,
                lowercase,
                compose,
                fill,
                calibrate,
                seed,
            },
        )
}

/// Writes the tokens as a vocab.txt and reads them back as the CLI would.
fn load_source(tokens: &[String]) -> (tempfile::TempDir, SourceVocab) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.txt");
    std::fs::write(&path, tokens.join("\n") + "\n").unwrap();
    let src = vocab::load_source(&path).unwrap();
    (dir, src)
}

/// The built matrix and what the builder noticed.
struct Built {
    data: Vec<u8>,
    stats: build::BuildStats,
    rows: usize,
    cols: usize,
}

fn build(c: &Case, rows: &[RowSource], src: &SourceVocab) -> Built {
    let m = Matrix {
        dtype: c.dtype,
        rows: c.src_tokens.len() + c.extra_rows,
        cols: c.cols,
        data: &c.matrix,
    };
    let opts = BuildOptions {
        out: c.dtype,
        fill: c.fill,
        seed: c.seed,
        calibrate_norm: c.calibrate,
        vocab_rows: src.size,
        held_out: None,
        compose_map: None,
        row_stats: true,
    };
    let mut data = Vec::new();
    let stats = build::build_blocks(rows, m, &opts, |b| {
        data.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    Built {
        data,
        stats,
        rows: rows.len(),
        cols: c.cols,
    }
}

fn config() -> ProptestConfig {
    // PROPTEST_CASES=N overrides the default for a deeper run.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // Failures are reported with their minimal case; no persistence files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The whole pipeline: one row per target token, copies bit-exact, counts consistent.
    #[test]
    fn plan_and_build(c in case()) {
        let (_dir, src) = load_source(&c.src_tokens);
        // vocab.txt: line number = id, and every (unique) line is a token.
        prop_assert_eq!(src.size, c.src_tokens.len());
        for (i, t) in c.src_tokens.iter().enumerate() {
            prop_assert_eq!(src.ids.get(t), Some(&(i as u32)), "token {:?}", t);
        }
        let tok = SourceTokenizer::from_wordpiece_vocab(&src, c.lowercase).unwrap();
        let plan = matching::plan(&c.target, &src, Some(&tok), c.compose);
        prop_assert_eq!(plan.rows.len(), c.target.len());
        let sources: Vec<RowSource> = plan.rows.iter().map(|r| r.source.clone()).collect();

        let built = build(&c, &sources, &src);
        let w = c.cols * c.dtype.size();
        prop_assert_eq!(built.rows, c.target.len());
        prop_assert_eq!(built.cols, c.cols);
        prop_assert_eq!(built.data.len(), c.target.len() * w);
        let out_row = |i: usize| &built.data[i * w..(i + 1) * w];
        let src_row = |id: usize| &c.matrix[id * w..(id + 1) * w];
        let src_rows: HashSet<&[u8]> = (0..src.size).map(src_row).collect();

        // exact, normalized, continuation, decoded, composed, fill
        let mut counts = [0usize; 6];
        for (i, (t, row)) in c.target.iter().zip(&plan.rows).enumerate() {
            let (m, r) = (&row.method, &row.source);
            counts[match m {
                Origin::Exact => 0,
                Origin::Normalized => 1,
                Origin::Continuation => 2,
                Origin::Decoded => 3,
                Origin::Composed => 4,
                Origin::Fill => 5,
                // The plan never guides: only --aux-vectors does, after planning.
                Origin::Guided => return Err(TestCaseError::fail(format!("row {i} {t:?}: guided"))),
            }] += 1;
            // A token of the source vocabulary is always an exact copy of its own row.
            if let Some(&id) = src.ids.get(t) {
                prop_assert_eq!(*m, Origin::Exact, "row {} {:?}", i, t);
                prop_assert_eq!(r, &RowSource::Copy(id));
            }
            match m {
                Origin::Exact => {
                    let id = src.ids[t];
                    prop_assert_eq!(r, &RowSource::Copy(id));
                    prop_assert_eq!(row.pieces(), &[id]);
                    prop_assert_eq!(out_row(i), src_row(id as usize), "row {} {:?}", i, t);
                }
                Origin::Normalized | Origin::Continuation => {
                    let RowSource::Copy(id) = *r else {
                        return Err(TestCaseError::fail(format!("row {i} {t:?}: {m:?} but {r:?}")));
                    };
                    prop_assert!((id as usize) < src.size);
                    prop_assert_ne!(c.src_tokens[id as usize].as_str(), t.as_str());
                    prop_assert_eq!(row.pieces(), &[id]);
                    prop_assert_eq!(out_row(i), src_row(id as usize), "row {} {:?}", i, t);
                    prop_assert!(src_rows.contains(out_row(i)));
                }
                Origin::Composed => {
                    prop_assert!(c.compose);
                    let RowSource::Composed(ids) = r else {
                        return Err(TestCaseError::fail(format!("row {i} {t:?}: composed but {r:?}")));
                    };
                    prop_assert!(!ids.is_empty());
                    prop_assert!(ids.iter().all(|&id| (id as usize) < src.size));
                    prop_assert_eq!(row.pieces(), &ids[..]);
                    if !c.calibrate {
                        // The mean of the pieces, summed in f32 in piece order.
                        let mut acc = vec![0f32; c.cols];
                        let mut tmp = vec![0f32; c.cols];
                        for &id in ids {
                            c.dtype.decode(src_row(id as usize), &mut tmp);
                            acc.iter_mut().zip(&tmp).for_each(|(a, t)| *a += *t);
                        }
                        acc.iter_mut().for_each(|a| *a /= ids.len() as f32);
                        let mut want = vec![0u8; w];
                        c.dtype.encode(&acc, &mut want);
                        prop_assert_eq!(out_row(i), &want[..], "row {} {:?}", i, t);
                    }
                }
                Origin::Fill => prop_assert_eq!(r, &RowSource::Fill),
                Origin::Guided => unreachable!("counted above"),
                Origin::Decoded => {
                    return Err(TestCaseError::fail(format!("row {i} {t:?}: decoded from a WordPiece source")));
                }
            }
        }
        prop_assert_eq!(counts.iter().sum::<usize>(), c.target.len());
        // A note for every row that is not an exact copy, in order, naming its line and token.
        let words = embed_transplant::api::vocab::TargetVocab::from_words(c.target.clone(), "v.txt");
        let notes = embed_transplant::api::notes(
            &words,
            &plan,
            &embed_transplant::api::source_names(&src),
            "random",
        );
        prop_assert_eq!(counts[0] + notes.len(), c.target.len());
        let non_exact: Vec<(usize, &String)> = c
            .target
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.rows[*i].method != Origin::Exact)
            .map(|(i, t)| (i + 1, t))
            .collect();
        let noted: Vec<(usize, &String)> = notes.iter().map(|n| (n.line, &n.token)).collect();
        prop_assert_eq!(noted, non_exact);

        // Same inputs and seed: the same plan and the same bytes, whatever the thread count.
        let plan2 = matching::plan(&c.target, &src, Some(&tok), c.compose);
        prop_assert_eq!(&plan2.rows, &plan.rows);
        let again = build(&c, &sources, &src);
        prop_assert!(again.data == built.data, "second build differs");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let single = pool.install(|| build(&c, &sources, &src));
        prop_assert!(single.data == built.data, "single-threaded build differs");
        prop_assert_eq!(single.stats.overflow_rows, built.stats.overflow_rows);
    }

    /// Without a tokenizer (no compose) the matcher still copies exact tokens bit for bit, and a
    /// different seed changes only initialised rows.
    #[test]
    fn plan_without_tokenizer(c in case(), other_seed in any::<u64>()) {
        let (_dir, src) = load_source(&c.src_tokens);
        let plan = matching::plan(&c.target, &src, None, c.compose);
        prop_assert_eq!(plan.rows.len(), c.target.len());
        prop_assert!(plan.rows.iter().all(|r| r.method != Origin::Composed && r.method != Origin::Decoded));
        let sources: Vec<RowSource> = plan.rows.iter().map(|r| r.source.clone()).collect();
        let built = build(&c, &sources, &src);
        let reseeded = build(&Case { seed: other_seed, ..c.clone() }, &sources, &src);
        let w = c.cols * c.dtype.size();
        for (i, r) in sources.iter().enumerate() {
            let row = &built.data[i * w..(i + 1) * w];
            if let RowSource::Copy(id) = r {
                prop_assert_eq!(row, &c.matrix[*id as usize * w..(*id as usize + 1) * w]);
                prop_assert_eq!(row, &reseeded.data[i * w..(i + 1) * w]);
            }
        }
    }

    /// parse_target gives back the tokens it was given, with or without a BOM, CRLF endings and a
    /// final newline, and counts the repeats.
    #[test]
    fn target_round_trip(
        toks in prop::collection::vec(token(), 1..60),
        bom in any::<bool>(),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        let toks: Vec<String> = toks.into_iter().filter(|t| storable(t)).collect();
        prop_assume!(!toks.is_empty());
        let sep = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        if bom {
            text.push('\u{feff}');
        }
        text.push_str(&toks.join(sep));
        if final_newline {
            text.push_str(sep);
        }
        let v = vocab::parse_target(text.as_bytes(), "t.txt").unwrap();
        prop_assert_eq!(&v.tokens, &toks);
        let unique: HashSet<&String> = toks.iter().collect();
        prop_assert_eq!(v.duplicates, toks.len() - unique.len());
        prop_assert!(v.duplicate_examples.len() <= 5);
        prop_assert_eq!(v.duplicate_examples.len(), v.duplicates.min(5));
        prop_assert_eq!(v.sha256.len(), 64);
    }

    /// Arbitrary bytes: an error or a token list whose lines are exactly the input's.
    #[test]
    fn target_any_bytes(bytes in prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b'\r'), 2 => Just(b'a')], 0..200)) {
        if let Ok(v) = vocab::parse_target(&bytes, "t.txt") {
            prop_assert!(!v.tokens.is_empty());
            for t in &v.tokens {
                prop_assert!(!t.is_empty() && !t.contains('\n') && !t.contains('\0'));
            }
        }
    }
}
