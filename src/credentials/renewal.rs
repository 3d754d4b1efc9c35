//! When each joined peer gets fresh TURN credentials.
//!
//! A peer's credentials are renewed when 80 % of their TTL has passed, so the new ones arrive
//! well before the old ones expire (two minutes early with the default ten-minute TTL), which
//! covers a slow network and the browser applying them with `setConfiguration`. The schedule
//! is a plain state machine in the usual shape: [`RenewalSchedule::issued`] and
//! [`RenewalSchedule::forget`] are inputs, [`RenewalSchedule::poll_timeout`] says when to wake,
//! [`RenewalSchedule::handle_timeout`] returns who is due. The signaling shell drives it and
//! does the sending; a peer that is away when its turn comes simply gets new credentials in its
//! `joined` when it resumes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Renewals for peers identified by `K`.
#[derive(Debug)]
pub struct RenewalSchedule<K> {
    ttl: Duration,
    due_by_peer: HashMap<K, Instant>,
    /// Deadlines in order; an entry whose time no longer matches `due_by_peer` is stale (the
    /// peer was renewed again or forgotten) and is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Clone + Eq + Hash + Ord> RenewalSchedule<K> {
    pub fn new(ttl: Duration) -> RenewalSchedule<K> {
        RenewalSchedule {
            ttl,
            due_by_peer: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// How long after issuing credentials they are renewed: 80 % of the TTL.
    pub fn lead_time(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }

    /// `peer` was just given credentials (in `joined` or a renewal) at `now`.
    pub fn issued(&mut self, peer: K, now: Instant) {
        let due = now + self.lead_time();
        self.due_by_peer.insert(peer.clone(), due);
        self.deadlines.push(Reverse((due, peer)));
    }

    /// `peer` is gone: no more renewals for it.
    pub fn forget(&mut self, peer: &K) {
        self.due_by_peer.remove(peer);
    }

    /// When [`Self::handle_timeout`] next has something to do.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.drop_stale_heads();
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// The peers whose renewal is due at `now`. They leave the schedule; the caller sends them
    /// fresh credentials and reports that with [`Self::issued`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, peer))) = self.deadlines.pop() else {
                break;
            };
            if self.due_by_peer.get(&peer) == Some(&at) {
                self.due_by_peer.remove(&peer);
                due.push(peer);
            }
        }
        due
    }

    /// Peers with a renewal pending.
    pub fn len(&self) -> usize {
        self.due_by_peer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due_by_peer.is_empty()
    }

    fn drop_stale_heads(&mut self) {
        while let Some(Reverse((at, peer))) = self.deadlines.peek() {
            if self.due_by_peer.get(peer) == Some(at) {
                break;
            }
            self.deadlines.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn a_peer_is_renewed_at_eighty_percent_of_the_ttl() {
        let t0 = Instant::now();
        let mut s = RenewalSchedule::new(TTL);
        s.issued("a", t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(480)));
        assert!(s.handle_timeout(t0 + Duration::from_secs(479)).is_empty());
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(480)), ["a"]);
        assert_eq!(s.poll_timeout(), None, "due peers leave the schedule");
    }

    #[test]
    fn renewals_repeat_for_as_long_as_the_peer_stays() {
        let t0 = Instant::now();
        let mut s = RenewalSchedule::new(TTL);
        s.issued("a", t0);
        let mut now = t0;
        for _ in 0..100 {
            now = s.poll_timeout().expect("a renewal is scheduled");
            assert_eq!(s.handle_timeout(now), ["a"]);
            s.issued("a", now);
        }
        assert_eq!(now, t0 + Duration::from_secs(480 * 100));
        assert_eq!(s.deadlines.len(), 1, "no stale entries pile up");
    }

    #[test]
    fn a_forgotten_peer_is_never_due() {
        let t0 = Instant::now();
        let mut s = RenewalSchedule::new(TTL);
        s.issued("a", t0);
        s.issued("b", t0 + Duration::from_secs(1));
        s.forget(&"a");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(481)));
        assert_eq!(s.handle_timeout(t0 + TTL), ["b"]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_peer_that_resumes_is_due_from_its_new_credentials_only() {
        let t0 = Instant::now();
        let mut s = RenewalSchedule::new(TTL);
        s.issued("a", t0);
        s.issued("a", t0 + Duration::from_secs(100));
        assert!(s.handle_timeout(t0 + Duration::from_secs(500)).is_empty());
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(580)), ["a"]);
    }

    #[test]
    fn peers_due_together_are_all_returned_in_deadline_order() {
        let t0 = Instant::now();
        let mut s = RenewalSchedule::new(Duration::from_secs(10));
        s.issued("late", t0 + Duration::from_secs(2));
        s.issued("early", t0);
        assert_eq!(
            s.handle_timeout(t0 + Duration::from_secs(60)),
            ["early", "late"]
        );
    }

    #[test]
    fn a_short_ttl_renews_before_expiry() {
        let s: RenewalSchedule<u8> = RenewalSchedule::new(Duration::from_secs(3));
        assert!(s.lead_time() < Duration::from_secs(3));
        assert_eq!(s.lead_time(), Duration::from_millis(2400));
    }
}
