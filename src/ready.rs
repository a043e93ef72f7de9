//! Readiness truth: the four probes, the draining flag, and the windowed 5xx error-rate gate.
//! `/readyz` and the `micronode_ready_*` gauges read the same state.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

/// Probe names, in the order of the `/readyz` body and the `micronode_ready_probe` series.
pub(crate) const PROBES: [&str; 4] = ["listeners_bound", "cfg_loaded", "metrics_bound", "deps_ok"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    ListenersBound = 0,
    CfgLoaded = 1,
    MetricsBound = 2,
    DepsOk = 3,
}

/// One second of answers in the sliding window.
#[derive(Debug, Default)]
struct Slot {
    /// The second (since boot) this slot currently counts.
    second: AtomicU64,
    total: AtomicU64,
    errors: AtomicU64,
}

/// Counts answers per second over the last `len` seconds; lock-free.
#[derive(Debug)]
pub(crate) struct ErrorWindow {
    origin: Instant,
    slots: Box<[Slot]>,
}

impl ErrorWindow {
    pub(crate) fn new(secs: u64) -> Self {
        let len = usize::try_from(secs.max(1)).unwrap_or(1);
        Self {
            origin: Instant::now(),
            slots: (0..len).map(|_| Slot::default()).collect(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        // +1 so that a fresh slot (second 0) never looks current.
        now.saturating_duration_since(self.origin).as_secs() + 1
    }

    pub(crate) fn record(&self, now: Instant, is_error: bool) {
        let sec = self.second(now);
        let slot = &self.slots[(sec % self.slots.len() as u64) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != sec
            && slot
                .second
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This thread moved the slot to a new second: clear the old counts. A request
            // racing this reset may be lost from the window; the window is a gauge, not a
            // ledger, and the exact totals live in `micronode_http_requests_total`.
            slot.total.store(0, Ordering::Release);
            slot.errors.store(0, Ordering::Release);
        }
        slot.total.fetch_add(1, Ordering::AcqRel);
        if is_error {
            slot.errors.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// 5xx share over the window, in percent (0 when nothing was answered).
    pub(crate) fn error_rate_pct(&self, now: Instant) -> f64 {
        let sec = self.second(now);
        let len = self.slots.len() as u64;
        let (mut total, mut errors) = (0u64, 0u64);
        for slot in self.slots.iter() {
            let s = slot.second.load(Ordering::Acquire);
            if s != 0 && s + len > sec && s <= sec {
                total += slot.total.load(Ordering::Acquire);
                errors += slot.errors.load(Ordering::Acquire);
            }
        }
        if total == 0 {
            0.0
        } else {
            errors as f64 * 100.0 / total as f64
        }
    }
}

#[derive(Debug)]
pub struct Readiness {
    probes: [AtomicBool; 4],
    draining: AtomicBool,
    /// `MICRONODE_DEV_READY=1`: always ready (benches only).
    forced: bool,
    /// Gate threshold in percent; 0 = off.
    gate_pct: u32,
    window: ErrorWindow,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ready: bool,
    pub forced: bool,
    pub probes: [bool; 4],
    pub draining: bool,
    pub error_rate_pct: f64,
    pub gate_pct: u32,
    pub gate_tripped: bool,
}

impl Readiness {
    pub fn new(forced: bool, gate_pct: u32, window_secs: u64) -> Self {
        Self {
            probes: Default::default(),
            draining: AtomicBool::new(false),
            forced,
            gate_pct,
            window: ErrorWindow::new(window_secs),
        }
    }

    pub fn set(&self, probe: Probe, ok: bool) {
        self.probes[probe as usize].store(ok, Ordering::Release);
    }

    pub fn probe(&self, probe: Probe) -> bool {
        self.probes[probe as usize].load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records one answered request in the error window.
    pub fn record(&self, now: Instant, status: u16) {
        self.window.record(now, status >= 500);
    }

    pub fn error_rate_pct(&self, now: Instant) -> f64 {
        self.window.error_rate_pct(now)
    }

    pub fn probes(&self) -> [bool; 4] {
        [0, 1, 2, 3].map(|i| self.probes[i].load(Ordering::Acquire))
    }

    pub fn verdict(&self, now: Instant) -> Verdict {
        let probes = self.probes();
        let draining = self.is_draining();
        let error_rate_pct = self.error_rate_pct(now);
        let gate_tripped = self.gate_pct > 0 && error_rate_pct >= f64::from(self.gate_pct);
        let truthful = probes.iter().all(|&p| p) && !draining && !gate_tripped;
        Verdict {
            ready: self.forced || truthful,
            forced: self.forced,
            probes,
            draining,
            error_rate_pct,
            gate_pct: self.gate_pct,
            gate_tripped,
        }
    }
}

impl Verdict {
    /// The error rate in hundredths of a percent, as the body shows it.
    fn rate_hundredths(&self) -> u64 {
        (self.error_rate_pct * 100.0).round() as u64
    }

    /// Everything the body depends on, packed: equal keys render equal bodies.
    fn key(&self) -> u64 {
        let mut bits = u64::from(self.ready)
            | u64::from(self.forced) << 1
            | u64::from(self.draining) << 2
            | u64::from(self.gate_tripped) << 3;
        for (i, p) in self.probes.iter().enumerate() {
            bits |= u64::from(*p) << (4 + i);
        }
        bits | u64::from(self.gate_pct) << 8 | self.rate_hundredths() << 16
    }

    /// The body, rendered once per state per worker thread: a probe is answered with a
    /// reference-counted copy instead of formatting JSON every time.
    pub fn json_body(&self) -> Bytes {
        thread_local! {
            static LAST: RefCell<Option<(u64, Bytes)>> = const { RefCell::new(None) };
        }
        let key = self.key();
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((k, body)) if *k == key => body.clone(),
                _ => {
                    let body = Bytes::from(self.to_json());
                    *last = Some((key, body.clone()));
                    body
                }
            }
        })
    }

    /// The `/readyz` JSON body (docs/API.md), plus the error gate so an operator sees which gate
    /// tripped.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(256);
        let b = |v: bool| if v { "true" } else { "false" };
        let _ = write!(
            s,
            "{{\"ready\":{},\"mode\":\"{}\",\"probes\":{{",
            b(self.ready),
            if self.forced { "forced" } else { "truthful" }
        );
        for (i, (name, ok)) in PROBES.iter().zip(self.probes).enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(s, "{comma}\"{name}\":{}", b(ok));
        }
        let _ = write!(
            s,
            "}},\"draining\":{},\"error_gate\":{{\"enabled\":{},\"threshold_pct\":{},\"error_rate_pct\":{}.{:02},\"tripped\":{}}}}}",
            b(self.draining),
            b(self.gate_pct > 0),
            self.gate_pct,
            self.rate_hundredths() / 100,
            self.rate_hundredths() % 100,
            b(self.gate_tripped)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn window_forgets_old_seconds() {
        let w = ErrorWindow::new(2);
        let t = w.origin;
        w.record(t, true);
        w.record(t, false);
        assert_eq!(w.error_rate_pct(t), 50.0);
        assert_eq!(w.error_rate_pct(t + Duration::from_millis(1500)), 50.0);
        assert_eq!(w.error_rate_pct(t + Duration::from_secs(2)), 0.0);
        w.record(t + Duration::from_secs(3), false);
        assert_eq!(w.error_rate_pct(t + Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn gate_trips_at_threshold_and_recovers() {
        let r = Readiness::new(false, 50, 1);
        for p in [
            Probe::ListenersBound,
            Probe::CfgLoaded,
            Probe::MetricsBound,
            Probe::DepsOk,
        ] {
            r.set(p, true);
        }
        let t = r.window.origin;
        r.record(t, 503);
        r.record(t, 200);
        let v = r.verdict(t);
        assert!(v.gate_tripped && !v.ready);
        let later = t + Duration::from_secs(1);
        let v = r.verdict(later);
        assert!(!v.gate_tripped && v.ready);
    }

    #[test]
    fn cached_body_follows_every_change() {
        let r = Readiness::new(false, 50, 10);
        let t = r.window.origin;
        let first = r.verdict(t).json_body();
        assert_eq!(r.verdict(t).json_body(), first, "same state, same body");
        r.set(Probe::CfgLoaded, true);
        let probed = r.verdict(t).json_body();
        assert_ne!(probed, first);
        r.record(t, 503);
        r.record(t, 200);
        r.record(t, 200);
        let rated = r.verdict(t).json_body();
        assert!(std::str::from_utf8(&rated).is_ok_and(|b| b.contains("\"error_rate_pct\":33.33")));
        r.start_draining();
        let drained = r.verdict(t).json_body();
        assert!(std::str::from_utf8(&drained).is_ok_and(|b| b.contains("\"draining\":true")));
        for body in [first, probed, rated, drained] {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert!(v["ready"].is_boolean());
        }
    }

    #[test]
    fn body_is_json_with_spec_fields() {
        let r = Readiness::new(false, 0, 10);
        r.set(Probe::CfgLoaded, true);
        let v: serde_json::Value =
            serde_json::from_str(&r.verdict(Instant::now()).to_json()).expect("json");
        assert_eq!(v["ready"], false);
        assert_eq!(v["mode"], "truthful");
        assert_eq!(v["probes"]["cfg_loaded"], true);
        assert_eq!(v["probes"]["deps_ok"], false);
        assert_eq!(v["draining"], false);
    }
}
