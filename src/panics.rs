//! Panics inside libraries we call on untrusted files (candle's pickle reader, the tokenizers
//! crate) become errors: [`quiet`] catches the unwind and keeps the panic message (and its
//! backtrace, 2,700 lines under RUST_BACKTRACE) off stderr, so the caller prints its one line.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many [`quiet`] calls are running. The library may panic on one of its own worker threads
/// (rayon re-raises it in the caller), so the hook stays silent process-wide while any runs.
static QUIET: AtomicUsize = AtomicUsize::new(0);

/// Runs `f`, turning a panic into `None` without printing it. The process-wide panic hook is
/// wrapped once (on first use) with one that is silent while a `quiet` call runs and defers to
/// the previous hook otherwise.
pub fn quiet<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.load(Ordering::SeqCst) == 0 {
                prev(info);
            }
        }));
    });
    QUIET.fetch_add(1, Ordering::SeqCst);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    QUIET.fetch_sub(1, Ordering::SeqCst);
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_on_a_worker_thread_is_caught() {
        use rayon::prelude::*;
        let r = super::quiet(|| {
            (0..64).into_par_iter().for_each(|i| {
                if i == 63 {
                    panic!("boom");
                }
            })
        });
        assert!(r.is_none());
        assert_eq!(super::quiet(|| 7), Some(7));
    }
}
