//! A lock-free token bucket (GCRA): one atomic "theoretical arrival time", updated with a
//! compare-and-swap. No mutex, no background refill task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    origin: Instant,
    /// Nanoseconds after `origin` at which the bucket would be full again.
    tat: AtomicU64,
    /// Nanoseconds per token (changes on a reload).
    interval: AtomicU64,
    /// How far ahead of now `tat` may run: (burst - 1) tokens.
    tolerance: AtomicU64,
}

fn rates(rps: u32, burst: u32) -> (u64, u64) {
    let interval = 1_000_000_000 / u64::from(rps.max(1));
    (interval, interval * (u64::from(burst.max(1)) - 1))
}

impl TokenBucket {
    /// `rps` tokens per second, `burst` deep (at least 1). `rps` must be > 0.
    pub fn new(rps: u32, burst: u32) -> Self {
        let (interval, tolerance) = rates(rps, burst);
        Self {
            origin: Instant::now(),
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(interval),
            tolerance: AtomicU64::new(tolerance),
        }
    }

    /// A new rate and depth (a configuration reload); tokens already taken stay taken.
    pub fn set(&self, rps: u32, burst: u32) {
        let (interval, tolerance) = rates(rps, burst);
        self.interval.store(interval, Ordering::Release);
        self.tolerance.store(tolerance, Ordering::Release);
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let now = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let interval = self.interval.load(Ordering::Relaxed);
        let tolerance = self.tolerance.load(Ordering::Relaxed);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            let ahead = base - now;
            if ahead > tolerance {
                return Err(Duration::from_nanos(ahead - tolerance));
            }
            match self.tat.compare_exchange_weak(
                tat,
                base + interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Controlled time: the clock is an argument, so no test sleeps.
    #[test]
    fn burst_then_refusal_then_refill() {
        let b = TokenBucket::new(10, 3);
        let t0 = b.origin + Duration::from_secs(5);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).expect_err("bucket is empty");
        assert_eq!(wait, Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(99)).is_err());
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn long_idle_does_not_bank_more_than_burst() {
        let b = TokenBucket::new(1, 2);
        let t = b.origin + Duration::from_secs(3600);
        assert!(b.try_take(t).is_ok());
        assert!(b.try_take(t).is_ok());
        assert!(b.try_take(t).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
