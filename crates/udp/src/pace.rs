//! When a worker waits: at once on every packet, or once per batch window under load.
//!
//! On a virtual machine much of the CPU a relay spends per packet at moderate rates is not the
//! packet's work but the wake-up around it: the worker blocks in `epoll_wait`, the sender's
//! kernel wakes it, and it runs with cold caches for a packet or two. Measured with the
//! reference forwarder at 30,000 round trips/s, that overhead was more than half the cost
//! (about 9.8 µs per packet against 4.3 µs when saturated). A NIC solves the same problem with
//! interrupt moderation; this is its user-space form. When packets arrive fast enough that a
//! window holds several of them, the worker stops blocking on each one: it sleeps out the rest
//! of the window and then takes everything that queued in one pass of recvmmsg/sendmmsg, so a
//! wake-up serves many packets. A timer wake-up is not free either, so at rates where a window
//! would hold only a packet or two the worker keeps blocking: batching then costs more than it
//! saves. The price is at most one window of added delay per hop, and only under load; a quiet
//! server answers each packet at once. A saturated worker never sleeps: a pass that takes
//! longer than the window is followed straight by the next.
//!
//! [`Pacer`] is pure state: the loop tells it when it woke, whether anything was ready and how
//! many packets a pass handled, and asks how to wait next. Two pieces act, for the server's
//! TURN worker loop and the reference forwarder (`signalbox-bench`) alike: [`Wait::settle`]
//! does the sleep, and [`tighten_timer_slack`] keeps the kernel from stretching it.

use std::time::{Duration, Instant};

/// How often the packet rate is measured.
const MEASURE: Duration = Duration::from_millis(10);
/// Batching starts when a window is expected to hold this many packets…
const ON_PER_WINDOW: f64 = 3.0;
/// …and stops below this many.
const OFF_PER_WINDOW: f64 = 1.5;

/// How the worker waits before its next pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block until something is ready (or the next timer).
    Block,
    /// Sleep this long, then look without blocking.
    Sleep(Duration),
    /// Look without blocking.
    Poll,
}

impl Wait {
    /// Sleeps if asked to and returns how long the poll that follows may block: `block()`
    /// (the caller's next deadline) for [`Wait::Block`], zero otherwise.
    pub fn settle(self, block: impl FnOnce() -> Duration) -> Duration {
        match self {
            Wait::Block => block(),
            Wait::Sleep(d) => {
                std::thread::sleep(d);
                Duration::ZERO
            }
            Wait::Poll => Duration::ZERO,
        }
    }
}

/// The batch-window state of one worker.
#[derive(Debug)]
pub struct Pacer {
    window: Duration,
    /// Under load: passes are paced one per window.
    batching: bool,
    /// When the current pass started.
    pass_start: Option<Instant>,
    /// Start of the current rate measurement and packets handled since.
    epoch: Option<Instant>,
    packets: u64,
}

impl Pacer {
    /// A zero window turns batching off: every wait blocks.
    pub fn new(window: Duration) -> Pacer {
        Pacer {
            window,
            batching: false,
            pass_start: None,
            epoch: None,
            packets: 0,
        }
    }

    /// How to wait before the next pass.
    pub fn next_wait(&self, now: Instant) -> Wait {
        if !self.batching {
            return Wait::Block;
        }
        let elapsed = self
            .pass_start
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or(Duration::ZERO);
        match self.window.checked_sub(elapsed) {
            Some(rest) if !rest.is_zero() => Wait::Sleep(rest),
            _ => Wait::Poll,
        }
    }

    /// The wait returned at `now`; `work` tells whether anything was ready.
    pub fn woke(&mut self, now: Instant, work: bool) {
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        if elapsed >= MEASURE && !self.window.is_zero() {
            let per_window =
                self.packets as f64 * self.window.as_secs_f64() / elapsed.as_secs_f64();
            if per_window >= ON_PER_WINDOW {
                self.batching = true;
            } else if per_window < OFF_PER_WINDOW {
                self.batching = false;
            }
            self.epoch = Some(now);
            self.packets = 0;
        }
        if self.batching && !work {
            // A whole window without a packet: the load is gone; block until the rate says
            // otherwise.
            self.batching = false;
        }
        if work {
            self.pass_start = Some(now);
        }
    }

    /// A pass handled `n` datagrams.
    pub fn handled(&mut self, n: usize) {
        self.packets += n as u64;
    }

    #[cfg(test)]
    pub(crate) fn batching(&self) -> bool {
        self.batching
    }
}

/// The kernel may fire a sleeping thread's timer up to its timer slack late (50 µs by
/// default), which would add a quarter of a 200 µs window again to every batched hop. Setting
/// the calling thread's slack to a tenth of `window` (the server's `[turn] batch_window`) keeps
/// the delay close to what the window promises; a zero window leaves the slack alone.
pub fn tighten_timer_slack(window: Duration) {
    if window.is_zero() {
        return;
    }
    let slack = (window / 10).max(Duration::from_micros(1));
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack.as_nanos() as libc::c_ulong) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(100);

    fn us(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_micros(n)
    }

    /// Runs `ms` milliseconds of traffic at `per_ms` evenly spaced packets per millisecond; a
    /// blocking wait ends at the next arrival, and every pass takes all that arrived. Returns
    /// the time reached, in µs.
    fn drive(p: &mut Pacer, t0: Instant, from_us: u64, ms: u64, per_ms: u64) -> u64 {
        let gap = 1000 / per_ms.max(1);
        let end = from_us + ms * 1000;
        let (mut t, mut taken) = (from_us, 0);
        while t < end {
            match p.next_wait(us(t0, t)) {
                Wait::Block => t = from_us + (taken + 1) * gap,
                Wait::Sleep(d) => t += d.as_micros() as u64,
                Wait::Poll => {}
            }
            let arrived = (t - from_us) / gap;
            p.woke(us(t0, t), arrived > taken);
            p.handled((arrived - taken) as usize);
            taken = arrived;
            t += 5; // the pass itself
        }
        t
    }

    #[test]
    fn sparse_packets_are_answered_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(W);
        // 10 packets per ms: one per window, not worth a timer.
        let t = drive(&mut p, t0, 0, 50, 10);
        assert!(!p.batching());
        assert_eq!(p.next_wait(us(t0, t)), Wait::Block);
    }

    #[test]
    fn dense_packets_are_batched_one_pass_per_window() {
        let t0 = Instant::now();
        let mut p = Pacer::new(W);
        let t = drive(&mut p, t0, 0, 30, 60);
        assert!(p.batching());
        p.woke(us(t0, t), true);
        // The pass started at t and took 10 µs: sleep out the rest of the window.
        assert_eq!(
            p.next_wait(us(t0, t + 10)),
            Wait::Sleep(Duration::from_micros(90))
        );
    }

    #[test]
    fn a_pass_longer_than_the_window_is_followed_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::new(W);
        let t = drive(&mut p, t0, 0, 30, 60);
        p.woke(us(t0, t), true);
        assert_eq!(p.next_wait(us(t0, t + 500)), Wait::Poll);
    }

    #[test]
    fn an_empty_window_ends_batching_until_the_rate_is_back() {
        let t0 = Instant::now();
        let mut p = Pacer::new(W);
        let t = drive(&mut p, t0, 0, 30, 60);
        assert!(p.batching());
        p.woke(us(t0, t + 100), false);
        assert_eq!(p.next_wait(us(t0, t + 101)), Wait::Block);
        let t = drive(&mut p, t0, t + 200, 30, 60);
        assert!(p.batching());
        // The load falls: the next measurement turns batching off.
        drive(&mut p, t0, t, 30, 5);
        assert!(!p.batching());
    }

    #[test]
    fn wake_ups_with_nothing_ready_do_not_start_batching() {
        let t0 = Instant::now();
        let mut p = Pacer::new(W);
        for k in 0..100 {
            p.woke(us(t0, k * 500), false);
        }
        assert_eq!(p.next_wait(us(t0, 60_000)), Wait::Block);
    }

    #[test]
    fn a_zero_window_always_blocks() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::ZERO);
        let t = drive(&mut p, t0, 0, 30, 200);
        assert_eq!(p.next_wait(us(t0, t)), Wait::Block);
    }
}
