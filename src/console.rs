//! The only place that prints: human lines and progress bars on stderr, JSON and listings on
//! stdout. A closed stdout (a pipe whose reader went away) is not an error. Clippy's
//! `print_stdout`/`print_stderr` lints are denied everywhere else (see lib.rs and main.rs).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use crate::report::FinetuneReport;
use crate::report::TransplantReport;
use std::io::Write;

/// Where human messages go, and whether to print them.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
}

impl Output {
    /// A progress bar on stderr (callers create one only when stderr is a terminal). A bar
    /// dropped early (an error) clears itself, so the error line stands alone.
    pub fn progress_bar(&self, template: &str) -> indicatif::ProgressBar {
        bar(template, 0, String::new())
    }

    /// A bar counting bytes, drawn only when `show` (stderr is a terminal, neither --quiet nor
    /// --json); otherwise a hidden bar that callers update all the same.
    pub fn bytes_bar(&self, show: bool, len: u64, msg: &str) -> indicatif::ProgressBar {
        if !show {
            return indicatif::ProgressBar::hidden();
        }
        // The bar takes what the line has left, so it fits the terminal's width.
        bar(
            "{msg} [{wide_bar}] {percent:>3}% of {total_bytes}, {eta} left",
            len,
            escape(msg).into_owned(),
        )
    }

    /// A spinner with the elapsed time for a stage whose size is not known as it runs (a `.bin`
    /// read by candle's zip reader, matching), drawn only when `show`.
    pub fn spinner(&self, show: bool, msg: &str) -> indicatif::ProgressBar {
        if !show {
            return indicatif::ProgressBar::hidden();
        }
        let b = bar(
            "{spinner} {elapsed:>3} {wide_msg}",
            0,
            escape(msg).into_owned(),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    }

    pub fn warn(&self, msg: &str) {
        // Warnings show even with --quiet: they are about the data.
        let _ = writeln!(std::io::stderr(), "warning: {}", escape(msg));
    }

    /// One line for humans on stderr (control characters escaped: see [`escape`]).
    pub fn info(&self, msg: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{}", escape(msg));
        }
    }

    /// `--init auto`'s choice, in one line.
    fn auto_line(&self, r: &TransplantReport) {
        let Some(a) = &r.auto else { return };
        if a.fitted > 0 {
            self.info(&format!(
                "init auto: compose-fit on {} of {} composed rows: {}",
                a.fitted, a.composed, a.reason
            ));
        } else {
            self.info(&format!(
                "init auto: compose (plain mean of pieces): {}",
                a.reason
            ));
        }
    }

    pub fn summary(&self, r: &TransplantReport) {
        if self.quiet {
            return;
        }
        let counts: Vec<String> = r
            .counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let from = match (&r.source.revision, &r.source.commit) {
            (Some(rev), Some(c)) => format!(
                "{}@{rev} ({})",
                r.source.model,
                c.chars().take(12).collect::<String>()
            ),
            (Some(rev), None) => format!("{}@{rev}", r.source.model),
            _ => r.source.model.clone(),
        };
        if let Some(m) = &r.model {
            self.info(&format!(
                "wrote model directory {} ({}): {} rows ({} with a token{}{}), tokenizer {:?}, head {}, {} weights file(s)",
                m.dir,
                m.mode,
                m.rows,
                m.token_rows,
                if m.new_tokens > 0 { format!(", {} new", m.new_tokens) } else { String::new() },
                if m.padding_rows > 0 { format!(", {} padding", m.padding_rows) } else { String::new() },
                m.tokenizer,
                match (&m.routing.head, m.tied) {
                    (Some(h), _) => format!("{h} rebuilt"),
                    (None, _) => "tied (no separate head)".to_string(),
                },
                m.weight_files.len()
            ));
            if let Some(a) = &m.special_tokens {
                let mut parts: Vec<String> = a
                    .moved
                    .iter()
                    .map(|(role, [from, to])| format!("{role} {from} -> {to}"))
                    .collect();
                if !a.lacking.is_empty() {
                    parts.push(format!(
                        "the target has no token for {} (their config ids, if any, set to null)",
                        a.lacking.join(", ")
                    ));
                }
                if !a.dropped.is_empty() {
                    parts.push(format!("not in the target: {}", a.dropped.join(" ")));
                }
                if !parts.is_empty() {
                    self.info(&format!(
                        "special tokens adopted from the target tokenizer: {}",
                        parts.join("; ")
                    ));
                }
            }
            if r.output.is_empty() {
                self.auto_line(r);
                return;
            }
        }
        let from = match &r.static_vectors {
            Some(v) => format!(
                "{from} ({}, {} of {} vectors kept)",
                v.format, v.kept, v.vectors
            ),
            None => format!("{from} tensor {} ({})", r.tensor, r.weights_format),
        };
        self.info(&format!(
            "wrote {}: {} rows x {} {} | copied {} ({:.1}%), initialised {} [{}] | from {} in {:.2}s",
            r.output,
            r.rows,
            r.dim,
            r.dtype,
            r.copied,
            r.coverage_percent,
            r.initialised,
            counts.join(", "),
            from,
            r.seconds
        ));
        self.auto_line(r);
    }
}

impl Output {
    /// `score`'s table: one line per method.
    pub fn score_table(&self, r: &crate::report::ScoreReport) {
        if self.quiet {
            return;
        }
        let in_target = r
            .in_target
            .map(|n| format!(", {n} in the target vocabulary"))
            .unwrap_or_default();
        let mut lines = vec![format!(
            "{}: {} held-out tokens scored against {} source rows (dim {}; seed {}{in_target})",
            r.model, r.scored, r.source_shape[0], r.source_shape[1], r.seed
        )];
        lines.push(format!(
            "{:<14} {:>11} {:>7} {:>7} {:>11} {:>10}",
            "method", "mean cosine", "top-1", "top-10", "median rank", "norm ratio"
        ));
        for s in &r.scores {
            lines.push(format!(
                "{:<14} {:>11.3} {:>6.1}% {:>6.1}% {:>11} {:>10.2}",
                s.method,
                s.mean_cosine,
                100.0 * s.top1,
                100.0 * s.top10,
                s.median_rank,
                s.norm_ratio
            ));
        }
        if let Some(f) = r.compose_fit.as_ref().filter(|f| f.identity) {
            lines.push(format!(
                "compose-fit: plain mean of pieces won the validation split ({:.3} on {} tokens): the map is the identity",
                f.validation_cosine_plain, f.fit_size
            ));
        } else if let Some(f) = &r.compose_fit {
            lines.push(format!(
                "compose-fit: ridge alpha {} (lambda {:.4}) on {} tokens; validation cosine {:.3} (plain mean {:.3})",
                f.alpha, f.lambda, f.fit_size, f.validation_cosine, f.validation_cosine_plain
            ));
        }
        if let Some(g) = &r.guide {
            let (what, had) = if g.donor {
                ("donor", "the donor knew")
            } else {
                ("vectors", "had a vector")
            };
            lines.push(format!(
                "guide: {} ({} {what}, dim {}), {} anchors; {} of the scored tokens {had} (the rest composed); guide: top {} softmax at temperature {}; guide-omp: k {}",
                g.file, g.vectors_in_file, g.dim, g.anchors, g.guided, g.top_k, g.temperature, g.omp_k
            ));
        }
        lines.push(format!("in {:.2}s", r.seconds));
        for l in &lines {
            self.info(l);
        }
    }

    pub fn finetune_summary(&self, r: &FinetuneReport) {
        match r.test_accuracy {
            Some(acc) => self.info(&format!(
                "test accuracy {:.2}% (best epoch {}); wrote {}",
                100.0 * acc,
                r.best_epoch,
                r.output
            )),
            None => self.info(&format!("best epoch {}; wrote {}", r.best_epoch, r.output)),
        }
    }
}

/// A bar with everything set before it first draws (no flash of an empty bar).
fn bar(template: &str, len: u64, msg: String) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len)
        .with_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
        .with_message(msg)
        .with_finish(indicatif::ProgressFinish::AndClear)
}

/// Prints text on stdout; a closed pipe is not an error.
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints a JSON document on stdout. Returns false if stdout was closed.
pub fn print_json<T: serde::Serialize>(value: &T) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let res = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(out))
        .and_then(|_| out.flush());
    match res {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The one line a failed run prints (control characters escaped: see [`escape`]).
pub fn error(err: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "error: {}", escape(&err.to_string()));
}

/// Text for humans with every control character escaped (`\u{1b}`, `\t`, `\n`, `\r`), and the
/// bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) too: labels, tokens,
/// model ids and file names come from data, and printed raw one could clear the screen, recolour
/// the terminal, fake a line (a warning or an `error:`), or reorder what a line shows. The one
/// escaping function: every human line (warnings, errors, summaries, tables, progress messages)
/// passes through it.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Prints human text (tables, listings) on stdout, each line escaped as [`escape`] does (the
/// line breaks of the text itself stay); a closed pipe is not an error.
pub fn print_human_text(text: &str) -> std::io::Result<()> {
    let escaped: Vec<std::borrow::Cow<'_, str>> = text.split('\n').map(escape).collect();
    print_text(&escaped.join("\n"))
}

/// What a signal prints before the process ends (from the signal thread). Written straight to
/// fd 2, not through `std::io::stderr()`: the main thread may hold that lock (a progress bar
/// drawing), and the signal thread must not wait for it.
pub fn interrupted(signal: &str) {
    let msg = format!("error: interrupted by {signal}\n");
    #[cfg(unix)]
    // SAFETY: write(2) of a buffer we own to a file descriptor; a short or failed write only
    // loses the message.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
    #[cfg(not(unix))]
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn control_characters_from_data_are_escaped() {
        assert_eq!(escape("plain 中文 café"), "plain 中文 café");
        assert_eq!(
            escape("a\u{1b}[2Jb\nerror: fake\tc\r\u{7f}\u{9b}"),
            "a\\u{1b}[2Jb\\nerror: fake\\tc\\r\\u{7f}\\u{9b}"
        );
        assert_eq!(escape("x\u{202e}y\u{2066}"), "x\\u{202e}y\\u{2066}");
    }
}
