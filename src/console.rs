//! The only place that prints: human lines and progress bars on stderr, JSON and listings on
//! stdout. A closed stdout (a pipe whose reader went away) is not an error. Clippy's
//! `print_stdout`/`print_stderr` lints are denied everywhere else (see lib.rs and main.rs).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use crate::report::render;
use crate::report::{FinetuneReport, ScoreReport, TransplantReport};
use std::io::Write;

/// Where human messages go, and whether to print them.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    pub quiet: bool,
}

impl Console {
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

    /// The transplant's summary lines (see [`render::transplant`]).
    pub fn summary(&self, r: &TransplantReport) {
        render::transplant(r).iter().for_each(|l| self.info(l));
    }

    /// `score`'s table (see [`render::score_table`]).
    pub fn score_table(&self, r: &ScoreReport) {
        render::score_table(r).iter().for_each(|l| self.info(l));
    }

    pub fn finetune_summary(&self, r: &FinetuneReport) {
        self.info(&render::finetune(r));
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
