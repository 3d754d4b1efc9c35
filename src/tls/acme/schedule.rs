//! When to ask the CA: renewal at one third of the lifetime left, and after a failure an
//! exponential back-off that never comes back sooner than the CA's `Retry-After`. Pure
//! arithmetic on Unix seconds, so the rules are tested without a clock.

use std::time::Duration;

/// First wait after a failed attempt; each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(120);
/// The longest wait between attempts. Let's Encrypt allows 5 failed validations per name and
/// hour; 2, 4, 8, 16 and 32 minutes apart stay within that, and the cap keeps a certificate
/// that is due still being tried twice a day.
pub const MAX_RETRY: Duration = Duration::from_secs(12 * 3600);

/// The Unix time at which a certificate valid from `not_before` to `not_after` is renewed:
/// when a third of its lifetime is left (30 days of Let's Encrypt's 90).
pub fn renew_at(not_before: u64, not_after: u64) -> u64 {
    not_after - not_after.saturating_sub(not_before) / 3
}

/// The retry state after failed attempts.
#[derive(Debug, Default)]
pub struct Retry {
    failures: u32,
    /// When to try again, while the last attempt failed.
    at: Option<u64>,
    /// Until when the CA asked not to be asked again.
    ca_wait_until: u64,
}

impl Retry {
    /// Records a failure at `now`; returns how long until the next attempt.
    pub fn failed(&mut self, now: u64, ca_wait: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if let Some(wait) = ca_wait {
            self.ca_wait_until = now.saturating_add(wait.as_secs());
        }
        let delay = retry_delay(self.failures, ca_wait);
        self.at = Some(now.saturating_add(delay.as_secs()));
        delay
    }

    pub fn succeeded(&mut self) {
        *self = Retry::default();
    }

    /// When to try again after a failure; `None` while nothing failed.
    pub fn due(&self) -> Option<u64> {
        self.at
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An operator's reload asks for an attempt now: granted (`Ok`) after a failure unless the
    /// CA asked to wait (`Err` with until when); `Ok(false)` when nothing failed.
    pub fn retry_now(&mut self, now: u64) -> Result<bool, u64> {
        if self.at.is_none() {
            return Ok(false);
        }
        if self.ca_wait_until > now {
            return Err(self.ca_wait_until);
        }
        self.at = Some(now);
        Ok(true)
    }
}

/// How long to wait after the `failures`-th failure in a row (1 for the first); `ca_wait` is
/// what the CA's `Retry-After` asked for, if anything.
pub fn retry_delay(failures: u32, ca_wait: Option<Duration>) -> Duration {
    let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    let backoff = FIRST_RETRY.saturating_mul(doubling).min(MAX_RETRY);
    backoff.max(ca_wait.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn a_certificate_is_renewed_with_a_third_of_its_lifetime_left() {
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        assert_eq!(renew_at(1000, 1000 + 6 * DAY), 1000 + 4 * DAY);
        assert_eq!(
            renew_at(500, 100),
            100,
            "a backwards validity is due at its end"
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let mins = |n| retry_delay(n, None).as_secs() / 60;
        assert_eq!(
            [mins(1), mins(2), mins(3), mins(4), mins(5)],
            [2, 4, 8, 16, 32]
        );
        assert_eq!(retry_delay(30, None), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX, None), MAX_RETRY);
    }

    #[test]
    fn a_reload_retries_a_failed_order_now_unless_the_ca_asked_to_wait() {
        let mut retry = Retry::default();
        assert_eq!(
            retry.retry_now(1000),
            Ok(false),
            "nothing failed: nothing to retry"
        );
        assert_eq!(retry.failed(1000, None), FIRST_RETRY);
        assert_eq!(retry.due(), Some(1120));
        assert_eq!(retry.retry_now(1010), Ok(true));
        assert_eq!(retry.due(), Some(1010));
        assert_eq!(
            retry.failed(1010, Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(retry.failures(), 2);
        assert_eq!(
            retry.retry_now(1020),
            Err(4610),
            "the CA's Retry-After wins"
        );
        assert_eq!(retry.due(), Some(4610));
        assert_eq!(retry.retry_now(4610), Ok(true));
        retry.succeeded();
        assert_eq!((retry.due(), retry.failures()), (None, 0));
    }

    #[test]
    fn the_cas_retry_after_is_never_undercut() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_delay(1, Some(hour)), hour);
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(10))),
            FIRST_RETRY,
            "a short Retry-After does not shorten the back-off"
        );
        assert_eq!(retry_delay(40, Some(3 * MAX_RETRY)), 3 * MAX_RETRY);
    }
}
