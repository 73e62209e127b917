//! Issue 19, items 4-7: every written tokenizer is valid and loaded back before the directory is
//! committed; a tokenizer that makes the tokenizers library panic is a one-line error; sizes read
//! from files are checked before they allocate and every file is read bounded; labels that are
//! text; control characters from data escaped in everything printed for humans.

use crate::common::*;

fn uncased() -> PathBuf {
    fixtures().join("tiny-bert-uncased")
}

/// The words of the issue: whitespace, zero-width, a lone combining mark, a case variant of an
/// existing token on an uncased model, and one ordinary new word.
const BAD_WORDS: &str =
    "zzqxw\n \n\t\n\u{3000}\n\u{a0}\n\u{200b}\n\u{200c}\n\u{feff}\n\u{2060}\n\u{301}\nHello\n";

/// Ids of `text` under a tokenizer.json, with the tokenizers crate (no special tokens).
fn ids(tokenizer_json: &Path, text: &str) -> Vec<u32> {
    let t = tokenizers::Tokenizer::from_file(tokenizer_json).unwrap();
    t.encode(text, false).unwrap().get_ids().to_vec()
}

fn assert_one_line_error(a: &assert_cmd::assert::Assert, want: &str) -> String {
    let err = stderr_of(a);
    assert!(err.contains(want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn extend_leaves_out_words_that_would_break_the_tokenizer() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("bad.txt"), BAD_WORDS).unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(uncased())
        .args(["-v", "bad.txt", "--extend", "--emit-model", "out", "--json"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains("bad.txt: 10 word(s) not added by --extend"),
        "{err}"
    );
    assert!(err.contains(r#"line 2 (" "): it is whitespace"#), "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(report["model"]["new_tokens"], 1, "{report}");
    // Ordinary text tokenizes exactly as with the source; the new word is one token.
    let (src, out) = (
        uncased().join("tokenizer.json"),
        sb.path("out/tokenizer.json"),
    );
    for text in [
        "hello world",
        "Hello World",
        "a\tb\u{3000}c\u{a0}d e\u{200b}f",
        "cafe\u{301}",
    ] {
        assert_eq!(ids(&out, text), ids(&src, text), "{text:?}");
    }
    assert_eq!(ids(&out, "zzqxw"), vec![30522]);
    // The directory given back as -m works.
    sb.cmd()
        .args(["-m", "out", "-v"])
        .arg(target_vocab())
        .args(["-o", "again.safetensors", "-q"])
        .assert()
        .success();
    // --strict: an error naming the first such line, and no directory.
    let a = sb
        .cmd()
        .arg("-m")
        .arg(uncased())
        .args([
            "-v",
            "bad.txt",
            "--extend",
            "--emit-model",
            "strict",
            "--strict",
        ])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains(r#"error: bad.txt line 2: --extend cannot add " ": it is whitespace"#),
        "{err}"
    );
    assert!(!sb.path("strict").exists());
}

#[test]
fn a_case_variant_on_an_uncased_model_is_not_added() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), "Hello\nWORLD\nzzqxw\n").unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(uncased())
        .args(["-v", "v.txt", "--extend", "--emit-model", "out"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains(
            r#"line 1 ("Hello"): the source tokenizer already reads it as its token "hello""#
        ),
        "{err}"
    );
    let (src, out) = (
        uncased().join("tokenizer.json"),
        sb.path("out/tokenizer.json"),
    );
    assert_eq!(ids(&out, "hello world"), ids(&src, "hello world"));
    assert_eq!(ids(&out, "Hello WORLD"), ids(&src, "Hello WORLD"));
}

/// A tokenizer.json that makes the tokenizers library panic on any text (an added zero-width
/// space, as --extend wrote before this round: "AddedVocabulary bad split"): a one-line error, not exit 101 and 2,700 lines.
#[test]
fn a_tokenizer_that_panics_is_a_one_line_error() {
    let sb = Sandbox::new();
    let m = sb.path("m");
    std::fs::create_dir(&m).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "vocab.txt",
    ] {
        std::fs::copy(uncased().join(f), m.join(f)).unwrap();
    }
    let mut tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(uncased().join("tokenizer.json")).unwrap())
            .unwrap();
    tj["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "id": 30522, "content": "\u{200b}", "single_word": false, "lstrip": false, "rstrip": false,
        "normalized": true, "special": false}));
    std::fs::write(m.join("tokenizer.json"), tj.to_string()).unwrap();
    for args in [
        &["-o", "o.safetensors"][..],
        &["--emit-model", "dir", "--extend"][..],
    ] {
        let a = sb
            .cmd()
            .env("RUST_BACKTRACE", "1")
            .args(["-m", "m", "-v"])
            .arg(target_vocab())
            .args(args)
            .assert()
            .code(1);
        assert_one_line_error(
            &a,
            "m/tokenizer.json: the tokenizers library panics on ordinary text with this tokenizer",
        );
    }
    let a = sb
        .cmd()
        .args(["score", "-m", "m"])
        .env("RUST_BACKTRACE", "1")
        .assert()
        .code(1);
    assert_one_line_error(&a, "the tokenizers library panics");
    assert_eq!(sb.files(), vec!["m"]);
}

/// transformers loads the tokenizer an --extend with the issue's words wrote, and tokenizes
/// ordinary text as the source does (before this round it panicked: "AddedVocabulary bad split").
#[test]
#[ignore = "needs python: transformers"]
fn transformers_tokenizes_ordinary_text_as_the_source_does() {
    let python = python("torch, transformers, safetensors");
    let sb = Sandbox::new();
    std::fs::write(sb.path("bad.txt"), BAD_WORDS).unwrap();
    sb.cmd()
        .arg("-m")
        .arg(uncased())
        .args(["-v", "bad.txt", "--extend", "--emit-model", "out", "-q"])
        .assert()
        .success();
    let script = r#"
import sys
from transformers import AutoTokenizer
src, out = (AutoTokenizer.from_pretrained(p) for p in sys.argv[1:3])
for text in ["hello world", "Hello World", "a\tb\u3000c\u00a0d e\u200bf"]:
    a, b = src(text)["input_ids"], out(text)["input_ids"]
    assert a == b, (text, a, b)
assert out("zzqxw", add_special_tokens=False)["input_ids"] == [30522], out("zzqxw")
print("ok")
"#;
    let o = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(uncased())
        .arg(sb.path("out"))
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok"),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn endless_inputs_stop_with_an_error() {
    let sb = Sandbox::new();
    std::os::unix::fs::symlink("/dev/zero", sb.path("zero.json")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--source-vocab", "/dev/zero", "-o", "o.safetensors"],
            "/dev/zero line 1: contains a NUL byte: not a vocab.txt",
        ),
        (
            vec!["--source-vocab", "zero.json", "-o", "o.safetensors"],
            "zero.json line 1: contains a NUL byte: not a tokenizer.json",
        ),
    ];
    for (args, want) in cases {
        let a = sb
            .transplant(bert_dir())
            .args(&args)
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .code(1);
        assert_one_line_error(&a, want);
    }
    // A target tokenizer.json that never ends.
    let a = sb
        .cmd()
        .arg("-m")
        .arg(fixtures().join("tiny-gpt2"))
        .args(["-v", "zero.json", "--emit-model", "d"])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .code(1);
    assert_one_line_error(
        &a,
        "zero.json line 1: contains a NUL byte: not a tokenizer.json",
    );
    assert_eq!(sb.files(), vec!["zero.json"]);
}

#[test]
fn configs_that_are_not_objects_are_one_line_errors() {
    for (file, body) in [
        ("config.json", "[1, 2]"),
        ("config.json", "\"bert\""),
        ("tokenizer_config.json", "[]"),
    ] {
        let sb = Sandbox::new();
        let m = sb.path("m");
        std::fs::create_dir(&m).unwrap();
        for e in std::fs::read_dir(bert_dir()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
        }
        std::fs::write(m.join(file), body).unwrap();
        for args in [&["-o", "o.safetensors"][..], &["--emit-model", "d"][..]] {
            let a = sb
                .transplant("m")
                .args(args)
                .args(["--keep-special"].iter().filter(|_| args[0] != "-o"))
                .assert()
                .code(1);
            assert_one_line_error(&a, &format!("m/{file}: not a JSON object"));
        }
        assert_eq!(sb.files(), vec!["m"]);
    }
}

fn npy_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Vector files whose headers claim sizes the file cannot hold, or an `.npy` dtype found only by
/// a substring: refused through --model, --aux-vectors and score, one line, no output.
#[test]
fn vector_headers_are_checked_before_they_allocate() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), "中国\n人民\n").unwrap();
    std::fs::write(sb.path("words.txt"), "中国\n人民\n").unwrap();
    let big_endian: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let files: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dim.bin",
            b"2 1000000000000\n\xe4\xb8\xad\xe5\x9b\xbd ".to_vec(),
            "dim.bin line 1: the header says dimension 1000000000000 (1 to 65536 accepted)",
        ),
        (
            "wide.bin",
            b"2 60000\n\xe4\xb8\xad\xe5\x9b\xbd ".to_vec(),
            "wide.bin line 1: the header says dimension 60000, more than the file's",
        ),
        (
            "overflow.bin",
            b"2 18446744073709551615\nx ".to_vec(),
            "overflow.bin line 1: the header says dimension 18446744073709551615",
        ),
        (
            "words.npy",
            npy_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1000000000000), }",
                &[0; 16],
            ),
            "needs 8000000000000 bytes of data, the file has 16",
        ),
        (
            "words.npy",
            npy_with(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (18446744073709551615, 2), }",
                &[0; 16],
            ),
            "overflows",
        ),
        (
            "words.npy",
            npy_with(
                "{'descr': '>f4', 'note': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                &big_endian,
            ),
            "unexpected key 'note'",
        ),
        (
            "words.npy",
            npy_with(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
                &big_endian,
            ),
            "dtype '>f4' is not <f4 or <f8",
        ),
    ];
    for (name, bytes, want) in files {
        std::fs::write(sb.path(name), &bytes).unwrap();
        let runs: Vec<Vec<&str>> = vec![
            vec!["-m", name, "-v", "v.txt", "-o", "o.safetensors"],
            vec!["-v", "v.txt", "--aux-vectors", name, "-o", "o.safetensors"],
            vec!["score", "--sample", "5", "--aux-vectors", name],
        ];
        for args in runs {
            let mut c = sb.cmd();
            if args[0] == "-v" {
                c.arg("-m").arg(bert_dir());
            }
            if args[0] == "score" {
                c.arg("score").arg("-m").arg(bert_dir());
                c.args(&args[1..]);
            } else {
                c.args(&args);
            }
            let a = c.assert().code(1);
            assert_one_line_error(&a, want);
            assert!(!sb.path("o.safetensors").exists(), "{args:?}");
        }
    }
}

#[test]
fn pad_to_multiple_of_has_a_maximum() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "d", "--pad-to-multiple-of", "1000000000000"])
        .assert()
        .code(2);
    assert_one_line_error(&a, "--pad-to-multiple-of 1000000000000: must be 1 to 65536");
    assert!(!sb.path("d").exists());
}

#[test]
fn labels_that_are_text_suggest_swapped_columns() {
    let sb = finetune_sandbox();
    // The synthetic data with its columns swapped: every sentence is a label.
    let swapped: String = std::fs::read_to_string(sb.path("train.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            format!("{b}\t{a}\n")
        })
        .collect();
    std::fs::write(sb.path("swapped.tsv"), &swapped).unwrap();
    let lines = swapped.lines().count();
    let classes: std::collections::HashSet<&str> = swapped
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "swapped.tsv",
            "-o",
            "f.safetensors",
            "--epochs",
            "1",
        ])
        .assert()
        .code(1);
    assert_one_line_error(
        &a,
        &format!(
            "swapped.tsv: {} distinct labels in {lines} lines (more than half the lines): are the columns swapped?",
            classes.len()
        ),
    );
    assert!(!sb.path("f.safetensors").exists());
    // --max-classes allows them; below the count it still refuses.
    sb.finetune_cmd()
        .args([
            "--train",
            "swapped.tsv",
            "-o",
            "f.safetensors",
            "--epochs",
            "1",
            "-q",
        ])
        .args(["--max-classes", &classes.len().to_string()])
        .assert()
        .success();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "swapped.tsv",
            "-o",
            "g.safetensors",
            "--epochs",
            "1",
        ])
        .args(["--max-classes", "3"])
        .assert()
        .code(1);
    assert_one_line_error(&a, "(more than --max-classes 3)");
    // Over 10,000 classes, even with as many lines again.
    let mut big = String::new();
    for i in 0..10_001 {
        big.push_str(&format!("c{i}\t人\nc{i}\t民\n"));
    }
    std::fs::write(sb.path("big.tsv"), big).unwrap();
    let a = sb
        .finetune_cmd()
        .args(["--train", "big.tsv", "-o", "h.safetensors"])
        .assert()
        .code(1);
    assert_one_line_error(&a, "10001 distinct labels in 20002 lines (more than 10000)");
}

/// Control characters that come from data (a label, a file name, a model id) are escaped in
/// what is printed for humans: no escape sequence reaches the terminal, no line is faked.
#[test]
fn control_characters_from_data_are_escaped() {
    let sb = finetune_sandbox();
    // A label with an escape sequence and a carriage return, through finetune and evaluate.
    let data: String = std::fs::read_to_string(sb.path("train.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            format!("{a}\u{1b}[2J\r\t{b}\n")
        })
        .collect();
    std::fs::write(sb.path("esc.tsv"), &data).unwrap();
    sb.finetune_cmd()
        .args([
            "--train",
            "esc.tsv",
            "-o",
            "f.safetensors",
            "--head",
            "h.safetensors",
        ])
        .args(["--epochs", "1", "-q"])
        .assert()
        .success();
    let a = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "f.safetensors",
            "--head",
            "h.safetensors",
        ])
        .args(["-v", "vocab.txt", "--data", "esc.tsv"])
        .assert()
        .success();
    let out = stdout_of(&a);
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("label\\u{1b}[2J "), "{out}");
    // A model path with control characters, in an error.
    let a = sb
        .cmd()
        .args(["-m", "no\u{1b}[31m\nerror: fake", "-v", "vocab.txt"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(err.contains("no\\u{1b}[31m\\nerror: fake"), "{err}");
    // A vocabulary file name with a control character, in a warning and in the summary.
    let name = "v\u{7}\u{1b}]0;title\u{7}.txt";
    std::fs::write(sb.path(name), "中\n中\n").unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", name, "-o", "o.safetensors"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(
        err.contains("v\\u{7}\\u{1b}]0;title\\u{7}.txt: 1 duplicate"),
        "{err}"
    );
}
