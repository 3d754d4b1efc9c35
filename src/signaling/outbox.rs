//! One connection's outbound queue and the hub's kill switch for it, in one small allocation.
//!
//! Bounded like a channel: the hub and the connection task queue messages with `try_send`,
//! which fails once `capacity` messages wait (that client stopped reading). The connection task
//! alone takes them out. Beside the queue sits the hub's verdict: a [`Kill`], or, when the hub
//! let go of its end ([`HubEnd`] dropped) without one, the news that the hub stopped.
//!
//! Why not tokio's `mpsc` and `oneshot`: a bounded `mpsc` channel allocates its first block
//! of 32 message slots and a cache-padded shared state as soon as it is made; with the
//! `oneshot` beside it that was 1.9 KiB of heap per connection, for queues that an idle
//! connection keeps empty. Here a connection holds one allocation of about 100 bytes, plus a
//! few slots once messages have passed; the signaling bench's resident memory per idle
//! connection fell by 1.5 KiB.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::protocol::ServerMessage;

/// A queue that grew past this many slots in a burst is given back once it is empty again.
const KEEP_SLOTS: usize = 8;

/// Why the hub ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Its outbound queue was full: the client is not reading.
    Overflow,
    /// Its peer was resumed on another connection.
    Replaced,
    /// Its room or space lived on a node of the cluster that is gone: the client should
    /// reconnect and join again.
    HomeLost,
}

/// The queue already holds `capacity` messages; the one given was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A new outbox holding at most `capacity` messages: the hub's end and the connection's end.
pub fn outbox(capacity: usize) -> (HubEnd, ConnEnd) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity,
            kill: None,
            hub_gone: false,
            waker: None,
        }),
    });
    (HubEnd(shared.clone()), ConnEnd(shared))
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<ServerMessage>,
    capacity: usize,
    kill: Option<Kill>,
    hub_gone: bool,
    /// The connection task, waiting for a message or a verdict. One slot is enough: only that
    /// task ever waits here.
    waker: Option<Waker>,
}

impl State {
    fn pop(&mut self) -> Option<ServerMessage> {
        let msg = self.queue.pop_front();
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue.shrink_to(KEEP_SLOTS);
        }
        msg
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one step, so the state is consistent even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_send(&self, msg: ServerMessage) -> Result<(), Full> {
        let mut s = self.lock();
        if s.queue.len() >= s.capacity {
            return Err(Full);
        }
        s.queue.push_back(msg);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Changes the state under the lock, then wakes the connection task.
    fn tell(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        change(&mut s);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The hub's end of an outbox.
pub struct HubEnd(Arc<Shared>);

impl HubEnd {
    /// Queues `msg` for the connection.
    pub fn try_send(&self, msg: ServerMessage) -> Result<(), Full> {
        self.0.try_send(msg)
    }

    /// Ends the connection for `why`; only the first verdict counts.
    pub fn kill(&self, why: Kill) {
        self.0.tell(|s| {
            s.kill.get_or_insert(why);
        });
    }
}

impl Drop for HubEnd {
    fn drop(&mut self) {
        self.0.tell(|s| s.hub_gone = true);
    }
}

impl fmt::Debug for HubEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubEnd")
    }
}

/// The connection task's end of an outbox; handed back to the hub when the connection ends.
pub struct ConnEnd(Arc<Shared>);

impl ConnEnd {
    /// Queues a reply of the connection's own, behind what the hub queued.
    pub fn try_send(&self, msg: ServerMessage) -> Result<(), Full> {
        self.0.try_send(msg)
    }

    /// The next queued message, if any.
    pub fn try_recv(&self) -> Option<ServerMessage> {
        self.0.lock().pop()
    }

    /// The next queued message, once there is one.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<ServerMessage> {
        let mut s = self.0.lock();
        match s.pop() {
            Some(msg) => Poll::Ready(msg),
            None => {
                register(&mut s.waker, cx);
                Poll::Pending
            }
        }
    }

    /// The hub's verdict, once there is one: `Some(kill)`, or `None` when the hub let go of
    /// this connection without one (it stopped).
    pub fn poll_verdict(&self, cx: &mut Context<'_>) -> Poll<Option<Kill>> {
        let mut s = self.0.lock();
        if let Some(kill) = s.kill {
            return Poll::Ready(Some(kill));
        }
        if s.hub_gone {
            return Poll::Ready(None);
        }
        register(&mut s.waker, cx);
        Poll::Pending
    }

    /// Everything still queued, oldest first, for the hub once the connection has ended.
    pub fn drain(self) -> Vec<ServerMessage> {
        let mut s = self.0.lock();
        std::mem::take(&mut s.queue).into()
    }
}

impl fmt::Debug for ConnEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnEnd")
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    fn msg(n: u64) -> ServerMessage {
        ServerMessage::ServerShutdown {
            grace_s: n,
            reconnect: false,
        }
    }

    #[test]
    fn messages_come_out_in_order_and_a_full_queue_refuses_more() {
        let (hub, conn) = outbox(2);
        assert_eq!(hub.try_send(msg(1)), Ok(()));
        assert_eq!(conn.try_send(msg(2)), Ok(()));
        assert_eq!(hub.try_send(msg(3)), Err(Full));
        assert_eq!(conn.try_send(msg(3)), Err(Full));
        assert_eq!(conn.try_recv(), Some(msg(1)));
        assert_eq!(hub.try_send(msg(4)), Ok(()));
        assert_eq!(conn.drain(), [msg(2), msg(4)]);
    }

    #[test]
    fn a_queue_grown_in_a_burst_is_given_back_once_empty() {
        let (hub, conn) = outbox(256);
        for n in 0..100 {
            assert_eq!(hub.try_send(msg(n)), Ok(()));
        }
        for n in 0..100 {
            assert_eq!(conn.try_recv(), Some(msg(n)));
        }
        assert!(conn.0.lock().queue.capacity() <= KEEP_SLOTS);
        assert_eq!(conn.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_connection_wakes_for_a_message() {
        let (hub, conn) = outbox(4);
        let waiter = tokio::spawn(async move { poll_fn(|cx| conn.poll_recv(cx)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(hub.try_send(msg(7)), Ok(()));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok), Some(msg(7)));
    }

    #[tokio::test]
    async fn the_first_kill_is_the_verdict_and_outlives_the_hub_end() {
        let (hub, conn) = outbox(4);
        let waiter = tokio::spawn(async move { poll_fn(|cx| conn.poll_verdict(cx)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.kill(Kill::Replaced);
        hub.kill(Kill::Overflow);
        drop(hub);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok), Some(Some(Kill::Replaced)));
    }

    #[tokio::test]
    async fn a_dropped_hub_end_without_a_kill_means_the_hub_is_gone() {
        let (hub, conn) = outbox(4);
        let waiter = tokio::spawn(async move { poll_fn(|cx| conn.poll_verdict(cx)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(hub);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok), Some(None));
    }
}
