//! Statistics of a run: latency percentiles and medians over rounds.

use std::time::Duration;

/// Round-trip samples of one run, kept exactly (a run is bounded, so the count is too).
#[derive(Clone, Debug, Default)]
pub struct Samples {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples {
            nanos: Vec::with_capacity(n),
            sorted: true,
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.push_nanos(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn push_nanos(&mut self, ns: u64) {
        self.nanos.push(ns);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    pub fn extend(&mut self, other: &Samples) {
        self.nanos.extend_from_slice(&other.nanos);
        self.sorted = false;
    }

    /// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method: the smallest sample
    /// with at least `p` % of all samples at or below it. None without samples.
    pub fn percentile(&mut self, p: f64) -> Option<Duration> {
        if self.nanos.is_empty() {
            return None;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let n = self.nanos.len();
        // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
        let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
        let idx = rank.clamp(1, n) - 1;
        Some(Duration::from_nanos(self.nanos[idx]))
    }
}

/// Median of a list of values (mean of the two middle ones for an even count); None when empty.
/// Values that are NaN are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median of optional values, ignoring the missing ones.
pub fn median_opt(values: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    median(&v)
}

/// Fraction lost: `1 - received / sent`, clamped to [0, 1]; 0 when nothing was sent.
pub fn loss(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    (1.0 - received as f64 / sent as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: impl IntoIterator<Item = u64>) -> Samples {
        let mut s = Samples::default();
        for v in values {
            s.push_nanos(v);
        }
        s
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        // 1..=1000 shuffled: the p-th percentile is exactly p*10.
        let mut s = samples((1..=1000u64).map(|i| (i * 7919) % 1000 + 1));
        assert_eq!(s.percentile(50.0), Some(Duration::from_nanos(500)));
        assert_eq!(s.percentile(99.0), Some(Duration::from_nanos(990)));
        assert_eq!(s.percentile(99.9), Some(Duration::from_nanos(999)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_nanos(1000)));
    }

    #[test]
    fn a_single_outlier_shows_in_p99_9_of_a_thousand_but_not_in_p99() {
        let mut s = samples((0..999).map(|_| 100).chain([1_000_000]));
        assert_eq!(s.percentile(99.0), Some(Duration::from_nanos(100)));
        assert_eq!(s.percentile(99.9), Some(Duration::from_nanos(100)));
        assert_eq!(s.percentile(100.0), Some(Duration::from_nanos(1_000_000)));
        let mut s = samples((0..998).map(|_| 100).chain([1_000_000, 1_000_000]));
        assert_eq!(s.percentile(99.9), Some(Duration::from_nanos(1_000_000)));
    }

    #[test]
    fn small_and_empty_sets_do_not_panic() {
        assert_eq!(Samples::default().percentile(50.0), None);
        let mut one = samples([42]);
        assert_eq!(one.percentile(0.1), Some(Duration::from_nanos(42)));
        assert_eq!(one.percentile(99.9), Some(Duration::from_nanos(42)));
    }

    #[test]
    fn samples_added_after_a_query_are_included_in_the_next() {
        let mut s = samples([5, 1]);
        assert_eq!(s.percentile(100.0), Some(Duration::from_nanos(5)));
        s.push_nanos(9);
        assert_eq!(s.percentile(100.0), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn the_median_of_rounds_ignores_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 7.0]), Some(7.0));
        assert_eq!(median_opt(&[None, Some(1.0), Some(3.0)]), Some(2.0));
    }

    #[test]
    fn loss_is_a_clamped_fraction() {
        assert_eq!(loss(0, 0), 0.0);
        assert!((loss(200, 198) - 0.01).abs() < 1e-12);
        assert_eq!(loss(10, 12), 0.0);
    }
}
