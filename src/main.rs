//! The binary: parse, run, print, exit code. Nothing else.

use clap::{CommandFactory, Parser};
use embed_transplant::cli::{Cli, Command};
use embed_transplant::output::{self, Output};
use embed_transplant::{commands, config, writer, Error};
use std::io::IsTerminal;
use std::process::ExitCode;

/// 0 ok, 1 bad input or failure, 2 usage (clap exits with 2 itself), 130 interrupted.
#[derive(Clone, Copy)]
enum Exit {
    Failure = 1,
    Usage = 2,
    Interrupted = 130,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // Ctrl-C: while our temp file exists, let the writer remove it and return; at any other
    // moment nothing of ours is half-written (hf-hub resumes its own .part files), so stop now.
    let _ = ctrlc::set_handler(|| {
        use std::sync::atomic::Ordering::SeqCst;
        if writer::WRITING.load(SeqCst) {
            writer::INTERRUPTED.store(true, SeqCst);
        } else {
            eprintln!("error: interrupted");
            std::process::exit(Exit::Interrupted as i32);
        }
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = match err.downcast_ref::<Error>() {
                Some(Error::Interrupted) => Exit::Interrupted,
                Some(Error::Usage(_)) => Exit::Usage,
                _ => Exit::Failure,
            };
            ExitCode::from(code as u8)
        }
    }
}

/// Training allocates and frees tensors of the embedding's size at every step; glibc would hand
/// each back to the kernel (they are above its mmap threshold) and fault it in again next time,
/// which cost more than the arithmetic. Keep freed memory in the heap for reuse instead.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let args = match cli.command {
        Some(Command::Transplant(a)) => a,
        None => cli.transplant,
        Some(Command::Inspect(a)) => {
            let hub = config::hub_settings(a.hub.clone(), tty && !a.json);
            let inspection = commands::inspect::run(&a, &hub)?;
            if a.json {
                output::print_json(&inspection)?;
            } else {
                output::print_text(&commands::inspect::render(&inspection))?;
            }
            return Ok(());
        }
        Some(Command::Finetune(a)) => {
            let out = Output { quiet: a.quiet };
            let report = commands::finetune::run(&a, &out, tty)?;
            if let (Some(acc), false) = (report.test_accuracy, a.quiet) {
                out.info(&format!(
                    "test accuracy {:.2}% (best epoch {}); wrote {}",
                    100.0 * acc,
                    report.best_epoch,
                    report.output
                ));
            } else {
                out.info(&format!(
                    "best epoch {}; wrote {}",
                    report.best_epoch, report.output
                ));
            }
            if a.json {
                output::print_json(&report)?;
            }
            return Ok(());
        }
        Some(Command::Evaluate(a)) => {
            let e = commands::evaluate::run(&a)?;
            if a.json {
                output::print_json(&e)?;
            } else {
                output::print_text(&commands::evaluate::render(&e))?;
            }
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "embed-transplant", &mut buf);
            output::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
        Some(Command::Man) => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            output::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
    };
    let cfg = config::transplant_config(args, tty)?;
    let out = Output { quiet: cfg.quiet };
    let report = commands::transplant::run(&cfg, &out)?;
    out.summary(&report);
    if cfg.json {
        output::print_json(&report)?;
    }
    Ok(())
}
