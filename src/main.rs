//! The binary: parse, build the config, run, print, commit the files, exit code. Nothing else.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::{CommandFactory, Parser};
use embed_transplant::cli::{Cli, Command};
use embed_transplant::console::{self, Console};
use embed_transplant::write::cancel;
use embed_transplant::{commands, config, Error};
use std::io::IsTerminal;
use std::process::ExitCode;

/// 0 ok, 1 bad input or failure, 2 usage (clap exits with 2 itself); signals end the process with
/// 128 + signal from the signal thread (see `cancel`).
#[derive(Clone, Copy)]
enum Exit {
    Failure = 1,
    Usage = 2,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = cancel::install(console::interrupted) {
        console::error(&format!("cannot install the signal handler: {e}"));
        return ExitCode::from(Exit::Failure as u8);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            console::error(&format!("{err:#}"));
            let code = match err.downcast_ref::<Error>() {
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
            let cfg = config::inspect(a, tty)?;
            let inspection = commands::inspect::run(&cfg, &Console { quiet: false })?;
            if cfg.json {
                console::print_json(&inspection)?;
            } else {
                console::print_human_text(&embed_transplant::report::render::inspect(&inspection))?;
            }
            return Ok(());
        }
        Some(Command::Finetune(a)) => {
            let cfg = config::finetune(a, tty)?;
            let out = Console { quiet: cfg.quiet };
            let done = commands::finetune::run(&cfg, &out)?;
            // stdout first: if it fails, the batch is dropped and no file appears.
            if cfg.json {
                console::print_json(&done.report)?;
            }
            done.batch.commit()?;
            out.finetune_summary(&done.report);
            return Ok(());
        }
        Some(Command::Evaluate(a)) => {
            let cfg = config::evaluate(a)?;
            let e = commands::evaluate::run(&cfg, &Console { quiet: false })?;
            if cfg.json {
                console::print_json(&e)?;
            } else {
                console::print_human_text(&embed_transplant::report::render::evaluate(&e))?;
            }
            return Ok(());
        }
        Some(Command::Score(a)) => {
            let cfg = config::score(a, tty)?;
            let out = Console { quiet: cfg.quiet };
            let done = commands::score::run(&cfg, &out)?;
            // stdout first: if it fails, the batch is dropped and no file appears.
            if cfg.json {
                console::print_json(&done.report)?;
            }
            done.batch.commit()?;
            if !cfg.json {
                out.score_table(&done.report);
            }
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "embed-transplant", &mut buf);
            console::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
        Some(Command::Man) => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            console::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
    };
    let cfg = config::transplant(args, tty)?;
    let out = Console { quiet: cfg.quiet };
    let done = match cfg.vectors {
        Some(_) => commands::vectors_source::run(&cfg, &out)?,
        None => commands::transplant::run(&cfg, &out)?,
    };
    if cfg.json {
        console::print_json(&done.report)?;
    }
    done.batch.commit()?;
    out.summary(&done.report);
    Ok(())
}
