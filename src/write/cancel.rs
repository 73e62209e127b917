//! Cancellation. SIGINT, SIGTERM and SIGHUP end the run at once with exit code 128 + signal, after
//! removing every temp file or directory of ours that exists at that moment.
//!
//! Nothing long-running has to poll a flag: a thread waits for the signals and ends the process
//! itself. Writers register their temp paths here and rename them into place under the same lock
//! ([`commit`]), so the signal thread sees either a temp path (and removes it) or a finished file,
//! never half of a commit. Files made inside a temp directory are created through
//! [`create_file`], under the same lock: once the signal thread holds it, no writer can add a file
//! to a directory being removed (the writers are stopped before their files are removed).
//!
//! SIGXFSZ (a file-size limit, `ulimit -f`) is ignored, so that a write past the limit fails with
//! EFBIG like any other write error: one line, exit 1, temp files removed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temp paths of ours that exist now.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn temps() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the thread that handles SIGINT, SIGTERM and SIGHUP. `on_signal(name)` runs on that
/// thread after the temp paths are gone, just before the process exits (it prints the message).
#[cfg(unix)]
pub fn install(on_signal: fn(&str)) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // SAFETY: setting a signal's disposition to "ignore" before other threads run.
    if unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Held until exit: no commit can start or finish after this point.
                let held = temps();
                for p in held.iter() {
                    remove(p);
                }
                let name = match sig {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                on_signal(name);
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

#[cfg(not(unix))]
pub fn install(_on_signal: fn(&str)) -> std::io::Result<()> {
    Ok(())
}

/// Removes a temp file, or a temp directory: emptied, then removed. Called with the lock held, so
/// no writer adds a file in between ([`create_file`] waits for the lock).
fn remove(p: &Path) {
    if !p.is_dir() {
        let _ = std::fs::remove_file(p);
        return;
    }
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()),
            _ => std::fs::remove_file(e.path()),
        };
    }
    // A test hook: `EMBED_TRANSPLANT_TEST_REMOVE_PAUSE_MS=N` waits N ms between emptying and
    // removing, so that a test can show that no writer gets a file in (tests/cli/safety.rs).
    if let Some(ms) = std::env::var("EMBED_TRANSPLANT_TEST_REMOVE_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let _ = std::fs::remove_dir(p);
}

/// A temp path known to the signal thread for as long as this lives.
#[derive(Debug)]
pub struct Registered(PathBuf);

/// Creates a temp file or directory with `create` (which returns it and its path) and registers
/// the path in one step, so that no signal can fall between the two.
pub fn register_new<T>(
    create: impl FnOnce() -> std::io::Result<(T, PathBuf)>,
) -> std::io::Result<(T, Registered)> {
    let mut t = temps();
    let (value, path) = create()?;
    t.push(path.clone());
    Ok((value, Registered(path)))
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut t = temps();
        if let Some(i) = t.iter().position(|p| *p == self.0) {
            t.swap_remove(i);
        }
    }
}

/// Creates (or truncates) a file inside a registered temp directory, under the lock the signal
/// thread holds while it removes temp paths: a file is never added to a directory being removed.
pub fn create_file(p: &Path) -> std::io::Result<std::fs::File> {
    let _held = temps();
    std::fs::File::create(p)
}

/// Runs `f` (renames of finished temp paths into place, and forgetting them) so that a signal
/// waits for all of it or comes before any of it.
pub fn commit<R>(f: impl FnOnce(&mut Vec<PathBuf>) -> R) -> R {
    f(&mut temps())
}
