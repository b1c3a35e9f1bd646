//! How the flusher thread wakes async waiters cheaply: it rings a socket
//! that a task of the waiters' runtime listens on, and that task publishes
//! the progress from inside the runtime.
//!
//! # Why
//!
//! Publishing from the flusher thread itself (`watch::Sender::send_replace`
//! there) wakes each waiting task from *outside* the tokio runtime. tokio
//! then pushes the task to its shared queue and unparks a worker, and that
//! worker, finding the task as the last "searching" worker, unparks another
//! one to look for more work, which finds none and parks again: two futex
//! calls and two context switches per sync that do nothing (strace of the
//! 10 rooms × 5 clients fan-out bench: about 4 futex calls per sync, half
//! of them this). A ring is one byte on a Unix socket: the worker parked
//! in tokio's I/O driver wakes for it as for any socket, and the listener
//! task it runs wakes the waiters *locally*, with no worker searching.
//!
//! # How
//!
//! The flusher stores the latest value, then writes a byte unless a ring
//! is already pending ([`Doorbell::ring`]). The listener clears the
//! pending flag *before* taking the value, so a value stored after its
//! take always rings again. Every publication happens under the lock of
//! the stored value, so values go out in the order they were stored.
//!
//! The listener is spawned by the first async waiter of a runtime
//! ([`Doorbell::listen_from`]). When that runtime goes away (tests start
//! many), the listener's guard publishes what is still stored and marks
//! the line dead; the flusher then publishes directly again until a waiter
//! in another runtime starts a new listener. Blocking waiters never
//! depended on it (they wait on a `Condvar`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::commit::lock;

/// Hands values from a thread outside the runtime to a task inside it.
pub(crate) struct Doorbell<T> {
    /// The ringing end and the shared state, while a listener runs.
    line: Mutex<Option<Line<T>>>,
}

/// A running listener's socket and state.
struct Line<T> {
    /// The flusher's end (non-blocking: a full socket means rings are
    /// pending anyway).
    ring: UnixStream,
    /// Shared with the listener.
    shared: Arc<Shared<T>>,
}

/// What the flusher and the listener share.
struct Shared<T> {
    /// A ring was written and the listener has not taken the value yet.
    rung: AtomicBool,
    /// False once the listener has ended (its guard set it).
    alive: AtomicBool,
    /// The value to publish; publications happen under this lock.
    latest: Mutex<Option<T>>,
    /// Publishes a value (called by the listener, inside the runtime).
    publish: Box<dyn Fn(T) + Send + Sync>,
}

impl<T: Send + 'static> Doorbell<T> {
    /// A doorbell with no listener: [`Doorbell::ring`] hands values back.
    pub(crate) fn new() -> Self {
        Doorbell {
            line: Mutex::new(None),
        }
    }

    /// Flusher side: has `value` published by the listener. `Some(value)`
    /// when no listener runs: the caller publishes it itself.
    pub(crate) fn ring(&self, value: T) -> Option<T> {
        let mut line = lock(&self.line);
        let Some(running) = line.as_ref() else {
            return Some(value);
        };
        {
            let mut latest = lock(&running.shared.latest);
            if !running.shared.alive.load(Ordering::Acquire) {
                // Its guard published what was stored, under this lock.
                drop(latest);
                *line = None;
                return Some(value);
            }
            *latest = Some(value);
        }
        if running.shared.rung.swap(true, Ordering::AcqRel) {
            return None; // the listener has not woken for the last ring yet
        }
        match (&running.ring).write(&[1]) {
            Ok(_) => None,
            // Full: rings are pending, the listener wakes anyway.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            // The listener's end is closed: publish directly from now on
            // (what its guard did not take yet, the caller publishes).
            Err(_) => {
                let value = lock(&running.shared.latest).take();
                *line = None;
                value
            }
        }
    }

    /// Publishes `value` from the calling thread (a waiter inside the
    /// runtime, where waking the others is cheap) with `publish`. A value
    /// still stored for the listener is older: it is dropped, so the
    /// listener cannot publish it after this one.
    pub(crate) fn publish_here(&self, value: T, publish: impl FnOnce(T)) {
        let line = lock(&self.line);
        match line.as_ref() {
            Some(running) => {
                let mut latest = lock(&running.shared.latest);
                latest.take();
                publish(value);
            }
            None => publish(value),
        }
    }

    /// Waiter side: makes sure a listener runs, on the current tokio
    /// runtime, calling `publish` with each value rung (from inside the
    /// runtime). Does nothing outside a multi-thread runtime (the flusher
    /// then publishes directly): a current-thread runtime runs its tasks
    /// only while something blocks on it, and a waiter of another runtime
    /// would wait for that.
    pub(crate) fn listen_from(&self, publish: impl Fn(T) + Send + Sync + 'static) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                self.listen_on(&handle, publish)
            }
            _ => {}
        }
    }

    /// [`Doorbell::listen_from`] on `handle`'s runtime, whatever its flavor.
    fn listen_on(&self, handle: &Handle, publish: impl Fn(T) + Send + Sync + 'static) {
        let mut line = lock(&self.line);
        if line
            .as_ref()
            .is_some_and(|l| l.shared.alive.load(Ordering::Acquire))
        {
            return;
        }
        let Ok((ring, listen)) = UnixStream::pair() else {
            return;
        };
        if ring.set_nonblocking(true).is_err() || listen.set_nonblocking(true).is_err() {
            return;
        }
        // Registering with the reactor needs the runtime's context.
        let _entered = handle.enter();
        let Ok(listen) = tokio::net::UnixStream::from_std(listen) else {
            return;
        };
        let shared = Arc::new(Shared {
            rung: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            latest: Mutex::new(None),
            publish: Box::new(publish),
        });
        handle.spawn(listener(listen, Guard(shared.clone())));
        // A dead line's stored value was published by its guard.
        *line = Some(Line { ring, shared });
    }
}

/// Marks the line dead when the listener ends (its runtime dropped it, or
/// the doorbell went away) and publishes what is still stored.
struct Guard<T>(Arc<Shared<T>>);

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        let mut latest = lock(&self.0.latest);
        self.0.alive.store(false, Ordering::Release);
        if let Some(value) = latest.take() {
            (self.0.publish)(value);
        }
    }
}

/// Publishes each rung value until the ringing end closes.
async fn listener<T>(listen: tokio::net::UnixStream, guard: Guard<T>) {
    let shared = &guard.0;
    let mut buf = [0u8; 64];
    loop {
        if listen.readable().await.is_err() {
            return;
        }
        // Drain every ring; `WouldBlock` clears the readiness.
        loop {
            match listen.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        // Cleared before the take: a value stored after it rings again.
        shared.rung.store(false, Ordering::Release);
        let mut latest = lock(&shared.latest);
        if let Some(value) = latest.take() {
            (shared.publish)(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;

    #[test]
    fn without_a_listener_the_value_comes_back() {
        let bell = Doorbell::new();
        assert_eq!(bell.ring(7), Some(7));
        // Outside a runtime no listener starts, nor in a current-thread one.
        bell.listen_from(|_: u32| {});
        assert_eq!(bell.ring(8), Some(8));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async { bell.listen_from(|_: u32| {}) });
        assert_eq!(bell.ring(9), Some(9));
    }

    fn wait_for(seen: &AtomicU64, value: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::SeqCst) != value {
            assert!(
                std::time::Instant::now() < deadline,
                "{value} never published"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_listener_publishes_the_latest_value_from_inside_its_runtime() {
        let bell = Doorbell::new();
        let seen = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bell-test")
            .enable_all()
            .build()
            .unwrap();
        let published = seen.clone();
        runtime.block_on(async {
            bell.listen_from(move |v: u64| {
                assert_eq!(std::thread::current().name(), Some("bell-test"));
                published.store(v, Ordering::SeqCst);
            })
        });
        for v in 1..=50 {
            assert_eq!(bell.ring(v), None);
        }
        wait_for(&seen, 50);
        drop(runtime);
        // The runtime is gone: the value comes back to be published directly.
        assert_eq!(bell.ring(51), Some(51));
        assert_eq!(bell.ring(52), Some(52));
    }

    #[test]
    fn a_value_the_listener_did_not_take_is_published_when_its_runtime_ends() {
        let bell = Doorbell::new();
        let seen = Arc::new(AtomicU64::new(0));
        // A current-thread runtime runs the listener only inside `block_on`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let published = seen.clone();
        bell.listen_on(runtime.handle(), move |v: u64| {
            published.store(v, Ordering::SeqCst)
        });
        assert_eq!(bell.ring(1), None);
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                while seen.load(Ordering::SeqCst) != 1 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the listener never published");
        });
        assert_eq!(bell.ring(2), None);
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        drop(runtime);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(bell.ring(3), Some(3));
    }
}
