//! Per-route in-flight budgets: non-blocking, never a queue. A full budget is a 429 at once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts requests in flight on one route; `try_acquire` fails instead of waiting.
#[derive(Debug)]
pub struct InflightBudget {
    current: AtomicUsize,
    /// Changes on a reload; requests in flight above a lowered max finish normally.
    max: AtomicUsize,
}

/// Held for the life of a request; dropping it (response sent, timeout, or the client going
/// away and hyper dropping the request future) gives the slot back.
#[derive(Debug)]
pub struct Permit<'a>(&'a InflightBudget);

impl InflightBudget {
    pub fn new(max: usize) -> Self {
        Self {
            current: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// A new limit (a configuration reload).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let max = self.max.load(Ordering::Relaxed);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self))
    }

    /// Counts one more in flight, unconditionally (for gauges without a limit).
    pub fn enter(&self) -> Permit<'_> {
        self.current.fetch_add(1, Ordering::AcqRel);
        Permit(self)
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.current() >= self.max()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_budget_refuses_and_a_dropped_permit_frees_a_slot() {
        let b = InflightBudget::new(2);
        let p1 = b.try_acquire().expect("slot 1");
        let _p2 = b.try_acquire().expect("slot 2");
        assert!(b.try_acquire().is_none());
        assert!(b.is_full());
        drop(p1);
        assert_eq!(b.current(), 1);
        assert!(b.try_acquire().is_some());
    }
}
