//! The one retry policy of the cloud stores (S3 and GCS alike): which answers are worth
//! another attempt, how many attempts, how long to wait between them, and how long a
//! request may spend retrying in all. A store that stays down past that is reported as
//! `StoreError::Unavailable` (503 with `Retry-After` to clients), never a hang.

use std::time::Duration;

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Cap of the wait before the first retry; it doubles per retry...
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// ...up to this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Time one request may spend on attempts and waits before giving up.
pub const RETRY_BUDGET: Duration = Duration::from_secs(15);

/// Whether an HTTP status is worth another attempt: request timeout, throttling, and
/// server errors (501 excepted: it will not change).
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Full-jitter backoff before retry number `retry` (1-based): uniform in
/// `0..=min(BACKOFF_CAP, BACKOFF_BASE * 2^(retry-1))`.
pub fn backoff(retry: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(BACKOFF_CAP);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand_core::RngCore::next_u64(&mut rand_core::OsRng) % (ms + 1))
}

/// Whether, after `attempts` attempts and `elapsed` time, another attempt after `delay`
/// is still within the policy.
pub fn may_retry(attempts: u32, elapsed: Duration, delay: Duration) -> bool {
    attempts < MAX_ATTEMPTS && elapsed + delay <= RETRY_BUDGET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 412, 416, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_is_jittered_and_bounded() {
        for retry in 1..40 {
            assert!(backoff(retry) <= BACKOFF_CAP);
        }
        assert!((0..100).all(|_| backoff(1) <= BACKOFF_BASE));
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(5)).collect();
        assert!(spread.len() > 10, "jittered");
    }

    #[test]
    fn attempts_and_time_are_bounded() {
        assert!(may_retry(1, Duration::ZERO, BACKOFF_CAP));
        assert!(!may_retry(MAX_ATTEMPTS, Duration::ZERO, Duration::ZERO));
        assert!(!may_retry(1, RETRY_BUDGET, Duration::from_millis(1)));
    }
}
