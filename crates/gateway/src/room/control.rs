//! A room's control queue: the registry's one sender, the room task's one
//! receiver, carrying [`Control`] messages (joins, HTTP edits, shutdown,
//! eviction).
//!
//! It replaces a tokio `mpsc::unbounded_channel`, which allocates its
//! shared state (cache-padded) and a first block of 32 slots when it is
//! made: ~1 KiB in every open room, even one that never gets another
//! message after its first join. This queue is one small allocation (a
//! mutex over a `VecDeque` and a few flags, plus the room's waker); its
//! `VecDeque` holds memory only while messages are queued, and a room's
//! control messages are rare (a join, an HTTP edit), so the lock is never
//! contended in practice.
//!
//! It keeps what the registry relies on (see `registry`): a send never
//! waits (it is made under the registry lock); a send fails, handing the
//! message back, once the receiver is gone (the room task ended without
//! unregistering: the registry replaces it) or the room closed the queue;
//! `is_empty` is exact; and `close` then `try_recv` takes every message
//! that got in before the close. Like tokio's channel, `recv` yields `None`
//! once the sender is gone and the queue is empty, and dropping the
//! receiver drops whatever is still queued.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::mailbox::Control;

/// Makes a room's control queue: the registry's end, the room's end.
pub(crate) fn queue() -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Queue {
        state: Mutex::default(),
        room_waker: AtomicWaker::new(),
    });
    (ControlSender(shared.clone()), ControlReceiver(shared))
}

/// What both ends share.
struct Queue {
    /// The messages and the ends' flags, behind one short-held lock.
    state: Mutex<State>,
    /// Wakes the room's task: a message, or the sender gone.
    room_waker: AtomicWaker,
}

/// The queued messages and which end has let go.
#[derive(Default)]
struct State {
    /// Messages not yet taken by the room, in order.
    messages: VecDeque<Control>,
    /// The room closed the queue (or dropped its end): sends fail.
    closed: bool,
    /// The registry dropped its end: `recv` yields `None` once empty.
    sender_gone: bool,
}

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The registry's end of a room's control queue (one per room, not
/// cloneable: dropping it is what `recv` sees as the registry letting go).
pub(crate) struct ControlSender(Arc<Queue>);

impl ControlSender {
    /// Queues `message` for the room without waiting; hands it back when
    /// the room can no longer take it (its task ended, or it closed the
    /// queue).
    pub(crate) fn send(&self, message: Control) -> Result<(), Control> {
        {
            let mut state = self.0.state();
            if state.closed {
                return Err(message);
            }
            state.messages.push_back(message);
        }
        self.0.room_waker.wake();
        Ok(())
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        self.0.state().sender_gone = true;
        self.0.room_waker.wake();
    }
}

/// The room task's end of its control queue. Dropping it (the task ended,
/// however) makes later sends fail and drops the messages still queued.
pub(crate) struct ControlReceiver(Arc<Queue>);

impl ControlReceiver {
    /// The next message; `None` once the queue is closed or the sender is
    /// gone, and empty. Cancel-safe (a message is taken only when returned).
    pub(crate) async fn recv(&mut self) -> Option<Control> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (see [`ControlReceiver::recv`]).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Control>> {
        let mut registered = false;
        loop {
            {
                let mut state = self.0.state();
                if let Some(message) = state.messages.pop_front() {
                    if state.messages.is_empty() {
                        state.messages = VecDeque::new(); // hold memory only while in use
                    }
                    return Poll::Ready(Some(message));
                }
                if state.closed || state.sender_gone {
                    return Poll::Ready(None);
                }
            }
            if registered {
                return Poll::Pending;
            }
            // Register, then look again: a message queued in between is not missed.
            self.0.room_waker.register(cx.waker());
            registered = true;
        }
    }

    /// The next message without waiting, if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Control> {
        let mut state = self.0.state();
        let message = state.messages.pop_front();
        if state.messages.is_empty() {
            state.messages = VecDeque::new();
        }
        message
    }

    /// No message is queued (exact: the registry sends under its lock,
    /// which `unregister_if_idle` holds while it asks).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.state().messages.is_empty()
    }

    /// Refuses every later send; messages already queued stay for
    /// [`ControlReceiver::try_recv`].
    pub(crate) fn close(&mut self) {
        self.0.state().closed = true;
    }
}

impl Drop for ControlReceiver {
    fn drop(&mut self) {
        let left = {
            let mut state = self.0.state();
            state.closed = true;
            std::mem::take(&mut state.messages)
        };
        // Dropped outside the lock: a join's link tells its connection the
        // room let go (1011), an edit's reply tells its caller.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use std::task::Waker;

    use super::*;
    use crate::link::tests::Counter;

    fn is_evict(message: Option<Control>) -> bool {
        matches!(message, Some(Control::Evict))
    }

    #[test]
    fn messages_arrive_in_order_and_none_follows_the_sender() {
        let (tx, mut rx) = queue();
        assert!(tx.send(Control::Evict).is_ok());
        assert!(tx.send(Control::Shutdown).is_ok());
        assert!(!rx.is_empty());
        assert!(is_evict(rx.try_recv()));
        assert!(matches!(rx.try_recv(), Some(Control::Shutdown)));
        assert!(rx.is_empty());
        assert!(rx.try_recv().is_none());
        drop(tx);
        let waker = Waker::from(Arc::new(Counter::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_fails_and_hands_the_message_back() {
        let (tx, rx) = queue();
        drop(rx);
        assert!(matches!(tx.send(Control::Evict), Err(Control::Evict)));
    }

    #[test]
    fn close_refuses_later_sends_and_keeps_what_was_queued() {
        let (tx, mut rx) = queue();
        assert!(tx.send(Control::Evict).is_ok());
        rx.close();
        assert!(matches!(tx.send(Control::Shutdown), Err(Control::Shutdown)));
        assert!(is_evict(rx.try_recv()));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_send_wakes_a_waiting_receiver_and_a_dropped_sender_too() {
        let (tx, mut rx) = queue();
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(tx.send(Control::Evict).is_ok());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            rx.poll_recv(&mut cx),
            Poll::Ready(Some(Control::Evict))
        ));
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn no_wakeup_is_lost_across_threads() {
        let (tx, mut rx) = queue();
        let sender = std::thread::spawn(move || {
            for _ in 0..10_000 {
                assert!(tx.send(Control::Evict).is_ok());
            }
        });
        let mut got = 0;
        let all = async {
            while let Some(message) = rx.recv().await {
                assert!(is_evict(Some(message)));
                got += 1;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .expect("every message, then None once the sender is gone");
        sender.join().unwrap();
        assert_eq!(got, 10_000);
    }

    #[test]
    fn dropping_the_receiver_drops_what_is_queued() {
        let (tx, rx) = queue();
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let edit = crate::mailbox::EditRequest {
            edit: crate::mailbox::Edit::ReplaceText(String::new()),
            principal: crate::access::Principal::anonymous(),
            reply,
        };
        assert!(tx.send(Control::Edit(Box::new(edit))).is_ok());
        let mut outcome = std::pin::pin!(outcome);
        let waker = Waker::from(Arc::new(Counter::default()));
        let mut cx = Context::from_waker(&waker);
        assert!(outcome.as_mut().poll(&mut cx).is_pending());
        drop(rx);
        // The edit's reply was dropped with it: its caller learns at once.
        assert!(matches!(
            outcome.as_mut().poll(&mut cx),
            Poll::Ready(Err(_))
        ));
    }
}
