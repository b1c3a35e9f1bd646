//! The threads that run yrs work (apply, encode, load, compact), away from
//! the async runtime's workers.
//!
//! Two reasons. yrs recurses once per nesting level when it deletes or
//! garbage-collects nested types, and a stack overflow aborts the process
//! (`catch_unwind` cannot catch it): these threads get a stack sized for the
//! allowed nesting depth with a wide margin ([`STACK_BYTES`]; the depth bound
//! itself is checked before yrs sees an update, see `inspect`). And a slow
//! apply must never stall other rooms, `/healthz` or the accept loop: the
//! room task awaits the result while the runtime's workers go on.
//!
//! The threads are the blocking pool of a small runtime of their own (tokio's
//! pool, with its stack size and thread cap), at most [`THREADS`] at once:
//! more would only fight over the same cores. Work no one waits on right
//! now (a document loading behind joiners already answered) runs on a
//! second such pool whose threads have a lower CPU priority
//! ([`run_background`]). A panic inside a job comes
//! back as [`Panicked`], never as an unwinding room task.
//!
//! Small jobs may run in place instead ([`run_small`]): the hop to a yrs
//! thread and back (a thread wake-up each way) cost more CPU than applying
//! a keystroke. That is allowed only on a thread marked as having the same
//! stack ([`mark_big_stack`], which the server's runtime calls for each of
//! its workers, built with [`STACK_BYTES`]), and the caller decides what is
//! small (the room: a batch of a few KiB into a document under 1 MiB with
//! nothing pending, see `room::batch`). A panic is caught the same way.
//!
//! Measured (debug build, this machine; `inspect`'s ignored `stack_needed`
//! test): building then deleting N nested `Y.Map`s needs about 1.5 KiB of
//! stack per level: 1,000 levels fit in 1.5 MiB (not in 1 MiB), 5,000 in
//! 8 MiB (not 4), 10,000 in 16 MiB (not 12). [`STACK_BYTES`] is 64 MiB
//! (virtual memory, committed only as touched): ~40,000 levels, 40 times
//! the default bound of 1,000 and 4 times the largest allowed
//! (`MAX_NESTING_DEPTH_CAP`).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// Stack of each yrs thread: holds `--max-nesting-depth` levels of
/// recursion with a wide margin (see the module docs for the measurement).
pub const STACK_BYTES: usize = 64 * 1024 * 1024;

/// Most yrs threads at once (jobs beyond queue for a free thread).
const THREADS: usize = 4;

/// A yrs job panicked (hostile input reached a yrs bug); its state may be
/// half-changed and must be discarded.
#[derive(Debug, thiserror::Error)]
#[error("yrs panicked")]
pub struct Panicked;

/// A small runtime whose blocking pool is yrs threads named `name`, each
/// started at `nice` (0: the normal priority).
fn build_runtime(name: &str, nice: libc::c_int) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(THREADS)
        .thread_stack_size(STACK_BYTES)
        .thread_name(name)
        .on_thread_start(move || {
            if nice != 0 {
                // Linux: `PRIO_PROCESS` with 0 is the calling thread. A
                // thread may always lower its own priority; if it cannot,
                // it runs at the normal one.
                // SAFETY: a plain system call on the calling thread.
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) };
            }
        })
        .enable_all()
        .build()
        // Startup only: without threads the server cannot run at all.
        .unwrap_or_else(|e| panic!("cannot start the {name} threads: {e}"))
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| build_runtime("tandem-yrs", 0))
}

thread_local! {
    /// This thread's stack is [`STACK_BYTES`] (see [`mark_big_stack`]).
    static BIG_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as having a stack of [`STACK_BYTES`], so that
/// small yrs jobs may run on it in place: call it from the `on_thread_start`
/// of a runtime built with `thread_stack_size(STACK_BYTES)`, nowhere else.
pub fn mark_big_stack() {
    BIG_STACK.with(|b| b.set(true));
}

/// Runs a job the caller knows to be small (well under a millisecond) in
/// place when this thread has the big stack, else on a yrs thread.
pub(crate) async fn run_small<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Panicked> {
    if BIG_STACK.with(|b| b.get()) {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).map_err(|_| Panicked)
    } else {
        run(job).await
    }
}

/// Nice value of the background yrs threads (see [`run_background`]).
const BACKGROUND_NICE: libc::c_int = 10;

fn background_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| build_runtime("tandem-yrs-bg", BACKGROUND_NICE))
}

/// Runs `job` on a background yrs thread, at a lower CPU priority (nice
/// [`BACKGROUND_NICE`]): for work no one is waiting on right now, such as
/// a room's document loading while its joiners are already answered from
/// the stored bytes (`room::cold`). On a busy machine the connections'
/// work (sending those bytes) goes first.
pub(crate) fn run_background<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, Panicked>> + Send {
    let handle = background_runtime().spawn_blocking(job);
    async move { handle.await.map_err(|_| Panicked) }
}

/// Runs `job` on a yrs thread and resolves to its result once it is done.
pub(crate) fn run<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, Panicked>> + Send {
    let handle = runtime().spawn_blocking(job);
    async move { handle.await.map_err(|_| Panicked) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_is_an_error_not_a_crash() {
        let r: Result<(), Panicked> = run(|| panic!("boom")).await;
        assert!(r.is_err());
        assert_eq!(run(|| 41 + 1).await.unwrap(), 42);
        let r: Result<(), Panicked> = run_background(|| panic!("boom")).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn background_jobs_run_at_a_lower_priority() {
        // SAFETY: plain system calls on the calling threads.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS as _, 0) };
        let normal = run(nice).await.unwrap();
        let background = run_background(nice).await.unwrap();
        assert_eq!(background, (normal + BACKGROUND_NICE).min(19));
    }
}
