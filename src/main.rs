//! The binary: parse the flags, install the signal handler, run ([`embed_transplant::run`]:
//! config, command, print, commit the files), and map the error to an exit code. Nothing else.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use clap::Parser;
use embed_transplant::cli::Cli;
use embed_transplant::Error;
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
    if let Err(e) = embed_transplant::install_signal_handler() {
        embed_transplant::print_error(&format!("cannot install the signal handler: {e}"));
        return ExitCode::from(Exit::Failure as u8);
    }
    match embed_transplant::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Our errors carry their cause in their one line (the source chain is for callers of
            // the library), so the outermost message is the whole message.
            embed_transplant::print_error(&format!("{err}"));
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
