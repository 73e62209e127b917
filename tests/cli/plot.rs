//! `--plot` pictures: rendered with a real SVG renderer (resvg), checked for their series and
//! titles; written only when asked, and with the other files or not at all. Also: no progress
//! output on a stderr that is not a terminal.

use crate::common::*;
use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg::{self, roxmltree};
use std::path::Path;

/// What a rendered picture holds.
struct Picture {
    /// Polylines of three points or more: the data series (markers and legend swatches have two).
    series: usize,
    /// Distinct stroke colours of those series.
    colours: usize,
    texts: Vec<String>,
    /// Pixels that are not white after rendering.
    inked: usize,
}

fn render(path: &Path) -> Picture {
    let text = std::fs::read_to_string(path).unwrap();
    let tree = usvg::Tree::from_str(&text, &usvg::Options::default())
        .unwrap_or_else(|e| panic!("{}: not a valid SVG: {e}", path.display()));
    let size = tree.size().to_int_size();
    assert!(size.width() >= 400 && size.height() >= 200, "{size:?}");
    let mut pixmap = Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    let inked = pixmap
        .pixels()
        .iter()
        .filter(|p| p.alpha() > 0 && (p.red() < 240 || p.green() < 240 || p.blue() < 240))
        .count();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let lines: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
                >= 3
        })
        .collect();
    let mut colours: Vec<&str> = lines.iter().filter_map(|n| n.attribute("stroke")).collect();
    colours.sort();
    colours.dedup();
    Picture {
        series: lines.len(),
        colours: colours.len(),
        texts: doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_string())
            .collect(),
        inked,
    }
}

fn has_text(p: &Picture, needle: &str) -> bool {
    p.texts.iter().any(|t| t.contains(needle))
}

#[test]
fn transplant_plot_shows_norms_and_coverage_per_method() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.safetensors", "--plot", "rows.svg", "--json"])
        .assert()
        .success();
    let r: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let methods = r["counts"].as_object().unwrap();
    assert_eq!(methods.len(), 3, "{methods:?}"); // composed, exact, random
    let p = render(&sb.path("rows.svg"));
    assert!(p.inked > 10_000, "{} inked pixels", p.inked);
    // One norm distribution per method that has rows, each in its own colour.
    assert_eq!(p.series, methods.len());
    assert_eq!(p.colours, methods.len());
    assert!(has_text(&p, "Row norms of out.safetensors (from "));
    assert!(has_text(&p, "row L2 norm"));
    for (m, n) in methods {
        assert!(
            has_text(&p, &format!("{m} ({n} rows)")),
            "{m}: {:?}",
            p.texts
        );
        let pct = 100.0 * n.as_f64().unwrap() / r["rows"].as_f64().unwrap();
        assert!(
            has_text(&p, &format!("{m} {n} ({pct:.1}%)")),
            "{m} bar label"
        );
    }
    let median = r["median_norm_copied"].as_f64().unwrap();
    assert!(has_text(&p, &format!("median of copied rows: {median:.4}")));
    assert!(has_text(&p, "30.4% copied"));
    assert_eq!(sb.files(), ["out.safetensors", "rows.svg"]);

    // With --calibrate-norm the title says so; without --plot no picture is written.
    sb.transplant(bert_dir())
        .args(["-o", "cal.safetensors", "--plot", "cal.svg", "-q"])
        .arg("--calibrate-norm")
        .assert()
        .success();
    let c = render(&sb.path("cal.svg"));
    assert!(has_text(&c, "(from ") && has_text(&c, ", --calibrate-norm)"));
    assert_eq!(c.series, 3);
    sb.transplant(bert_dir())
        .args(["-o", "plain.safetensors", "-q"])
        .assert()
        .success();
    assert_eq!(
        sb.files(),
        [
            "cal.safetensors",
            "cal.svg",
            "out.safetensors",
            "plain.safetensors",
            "rows.svg"
        ]
    );
}

#[test]
fn finetune_plot_shows_loss_and_accuracy_with_the_kept_epoch() {
    let sb = finetune_sandbox();
    let r = finetune(
        &sb,
        "ft.safetensors",
        &["--epochs", "4", "--plot", "curves.svg"],
    );
    let p = render(&sb.path("curves.svg"));
    assert!(p.inked > 10_000, "{} inked pixels", p.inked);
    // Training and validation, in the loss panel and the accuracy panel.
    assert_eq!(p.series, 4);
    assert_eq!(p.colours, 2);
    assert!(has_text(
        &p,
        "Fine-tuning ft.safetensors (train train.tsv, valid dev.tsv)"
    ));
    assert!(has_text(&p, "Loss per epoch") && has_text(&p, "Accuracy per epoch"));
    let kept = r["best_epoch"].as_u64().unwrap();
    assert_eq!(
        p.texts
            .iter()
            .filter(|t| **t == format!("kept epoch {kept}"))
            .count(),
        2
    );

    // Without --valid: training only.
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "-o",
            "ft2.safetensors",
            "--epochs",
            "3",
        ])
        .args(["--plot", "train-only.svg", "-q"])
        .assert()
        .success();
    assert_eq!(stderr_of(&a), "");
    let t = render(&sb.path("train-only.svg"));
    assert_eq!((t.series, t.colours), (2, 1));
    assert!(has_text(&t, "kept epoch 3"));
}

#[test]
fn plot_paths_are_checked_before_work_starts() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("rows.svg"), "keep").unwrap();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.safetensors", "--plot", "rows.svg"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("rows.svg") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(sb.path("rows.svg")).unwrap(),
        "keep"
    );
    assert_eq!(sb.files(), ["rows.svg"]);

    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.svg", "--plot", "out.svg"])
        .assert()
        .code(2);
    assert_eq!(
        stderr_of(&a).trim(),
        "error: --plot and --output name the same file"
    );

    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.safetensors", "--plot", "no/such/dir/rows.svg"])
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("no/such/dir"), "{}", stderr_of(&a));
    assert_eq!(sb.files(), ["rows.svg"]);

    // finetune checks its --plot too, before training.
    let sb = finetune_sandbox();
    let a = sb
        .finetune_cmd()
        .args(["--train", "train.tsv", "-o", "ft.safetensors"])
        .args(["--plot", "emb.safetensors", "--force"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("emb.safetensors"),
        "{}",
        stderr_of(&a)
    );
    assert!(!sb.path("ft.safetensors").exists());
}

#[test]
fn a_failed_run_leaves_no_picture() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.safetensors", "--plot", "rows.svg"])
        .args(["--tensor", "no.such.tensor"])
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("no.such.tensor"));
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn no_progress_output_on_a_stderr_that_is_not_a_terminal() {
    // The whole run, a 2,000-row matrix and a training run, with stderr a pipe: only the summary
    // lines, no carriage returns or escape sequences of a bar.
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "out.safetensors"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(err.starts_with("wrote out.safetensors: 2000 rows"), "{err}");
    // The summary, and the default init's choice.
    assert_eq!(err.lines().count(), 2, "{err:?}");
    assert!(
        err.lines().nth(1).unwrap().starts_with("init auto: "),
        "{err:?}"
    );
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");

    let sb = finetune_sandbox();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "-o",
            "ft.safetensors",
            "--epochs",
            "3",
        ])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert_eq!(err.lines().count(), 4, "{err:?}"); // 3 epoch lines and the result
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn progress_shows_on_a_terminal_and_is_cleared() {
    // A real pseudo-terminal through util-linux `script`; where it is missing, nothing to check.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` to give the run a terminal");
        return;
    }
    let sb = Sandbox::new();
    let run = format!(
        "{} -m {} -v {} -o out.safetensors",
        env!("CARGO_BIN_EXE_embed-transplant"),
        bert_dir().display(),
        target_vocab().display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &run, "/dev/null"])
        .current_dir(sb.dir.path())
        .env("HF_HOME", sb.hf_home())
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("matching 2000 target tokens"), "{screen:?}");
    assert!(
        screen.contains("\r\u{1b}[2K"),
        "a bar is cleared: {screen:?}"
    );
    // What stays on the screen is the summary line alone.
    let last = screen.rsplit("\u{1b}[2K").next().unwrap();
    assert!(
        last.starts_with("wrote out.safetensors: 2000 rows"),
        "{last:?}"
    );
    assert_eq!(sb.files(), ["out.safetensors"]);
}
