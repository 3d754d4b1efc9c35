//! Token buckets for the HTTP API, one per API key and one per client network, in a table of
//! fixed size: a flood from many addresses costs bounded memory.
//!
//! Pure: the time (milliseconds on any monotonic clock) is passed in. When the table is full,
//! buckets that have refilled completely carry no information and are dropped first; if every
//! bucket is still draining, the one closest to full is evicted, so an attacker who cycles
//! through addresses can at worst give one of them a fresh burst, never grow the table.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A rate: `per_minute` requests on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// One token is [`UNIT`] units, and a bucket gains `per_minute` units per millisecond: integer
/// arithmetic, exact at every rate.
const UNIT: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    updated_ms: u64,
}

/// Buckets keyed by `K`, at most `capacity` of them.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    pub fn new(rate: Rate, capacity: usize) -> Buckets<K> {
        Buckets {
            rate,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key` at `now_ms`: `Ok(())`, or `Err(wait)` with how long until the
    /// next request would be allowed (for `Retry-After`).
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), Duration> {
        let full = u64::from(self.rate.burst.max(1)) * UNIT;
        let per_ms = u64::from(self.rate.per_minute);
        if !self.buckets.contains_key(key) {
            self.make_room(now_ms, full);
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            units: full,
            updated_ms: now_ms,
        });
        let gained = now_ms
            .saturating_sub(bucket.updated_ms)
            .saturating_mul(per_ms);
        bucket.units = bucket.units.saturating_add(gained).min(full);
        bucket.updated_ms = now_ms.max(bucket.updated_ms);
        if bucket.units >= UNIT {
            bucket.units -= UNIT;
            return Ok(());
        }
        if per_ms == 0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_millis(
            (UNIT - bucket.units).div_ceil(per_ms),
        ))
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now_ms: u64, full: u64) {
        if self.buckets.len() < self.capacity {
            return;
        }
        let per_ms = u64::from(self.rate.per_minute);
        let level = |b: &Bucket| {
            let gained = now_ms.saturating_sub(b.updated_ms).saturating_mul(per_ms);
            b.units.saturating_add(gained).min(full)
        };
        self.buckets.retain(|_, b| level(b) < full);
        if self.buckets.len() < self.capacity {
            return;
        }
        let fullest = self
            .buckets
            .iter()
            .max_by_key(|(_, b)| level(b))
            .map(|(k, _)| k.clone());
        if let Some(k) = fullest {
            self.buckets.remove(&k);
        }
    }
}

/// Refusal lines logged per listener and minute; the rest are summed up in the next line.
pub const LOG_PER_MINUTE: u32 = 10;

/// The log budget of one listener's refusals: [`LOG_PER_MINUTE`] lines a minute.
#[derive(Debug, Default)]
pub struct RefusalLog {
    window: Option<Instant>,
    logged: u32,
    unlogged: u64,
}

impl RefusalLog {
    const WINDOW: Duration = Duration::from_secs(60);

    /// `Some(refusals not logged since the last line)` when this refusal may be logged.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window {
            Some(start) => now.saturating_duration_since(start) >= Self::WINDOW,
            None => true,
        };
        if fresh {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged >= LOG_PER_MINUTE {
            self.unlogged += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn a_burst_is_allowed_then_one_request_per_refill() {
        let mut b = Buckets::new(RATE, 10);
        for _ in 0..3 {
            assert_eq!(b.take(&"k", 0), Ok(()));
        }
        assert_eq!(b.take(&"k", 0), Err(Duration::from_secs(1)));
        assert_eq!(b.take(&"k", 999), Err(Duration::from_millis(1)));
        assert_eq!(b.take(&"k", 1000), Ok(()));
    }

    #[test]
    fn keys_have_separate_buckets() {
        let mut b = Buckets::new(RATE, 10);
        for _ in 0..3 {
            b.take(&"a", 0).unwrap();
        }
        assert!(b.take(&"a", 0).is_err());
        assert!(b.take(&"b", 0).is_ok());
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let mut b = Buckets::new(RATE, 100);
        for i in 0..10_000u32 {
            let _ = b.take(&i, u64::from(i % 7));
            assert!(b.len() <= 100);
        }
    }

    #[test]
    fn a_limited_client_stays_limited_while_others_come_and_go() {
        let mut b = Buckets::new(RATE, 4);
        for _ in 0..3 {
            b.take(&0u32, 0).unwrap();
        }
        // Other clients each take one token; the drained bucket of client 0 is the emptiest,
        // so it is not the one evicted.
        for i in 1..50u32 {
            let _ = b.take(&i, 0);
        }
        assert!(b.take(&0, 0).is_err());
    }

    #[test]
    fn refusals_are_logged_within_a_budget_and_the_rest_summed_up() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for _ in 0..LOG_PER_MINUTE {
            assert_eq!(log.take(t0), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(log.take(t0 + Duration::from_secs(30)), None);
        }
        assert_eq!(log.take(t0 + Duration::from_secs(60)), Some(25));
        assert_eq!(log.take(t0 + Duration::from_secs(61)), Some(0));
    }
}
