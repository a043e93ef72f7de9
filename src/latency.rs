//! Server-side service time per route (request head parsed → response head ready) in
//! HdrHistograms, for `GET /dev/latency` and `POST /dev/latency/reset`. Only built with
//! `MICRONODE_DEV_METRICS=1`; otherwise the request path pays one `Option` check.
//!
//! One mutex-guarded histogram per route: a lock is uncontended on the one or two workers a
//! bench runs, and the record is an index computation and an add.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest recordable value; longer requests are recorded as this (request timeouts are
/// shorter anyway).
const MAX_NS: u64 = 60_000_000_000;

#[derive(Debug)]
pub struct ServiceTimes {
    /// Route templates in route-id order, then "unmatched".
    labels: Box<[&'static str]>,
    /// One per label.
    routes: Box<[Mutex<Histogram<u64>>]>,
}

impl ServiceTimes {
    /// Histograms for these route templates (in route-id order) and one for unmatched paths.
    pub fn new(templates: &[&'static str]) -> ServiceTimes {
        let mut labels = templates.to_vec();
        labels.push("unmatched");
        let routes = (0..labels.len())
            .map(|_| {
                // 3 significant figures: p99 of a 5 µs answer is exact to 5 ns.
                let h = Histogram::new_with_bounds(1, MAX_NS, 3)
                    .expect("static bounds are valid (1 ≤ low, high ≥ 2·low, sigfig ≤ 5)");
                Mutex::new(h)
            })
            .collect();
        ServiceTimes {
            labels: labels.into_boxed_slice(),
            routes,
        }
    }

    /// Records one answer of route `route` (its index in the templates; past them: unmatched).
    pub fn record(&self, route: usize, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(MAX_NS).max(1);
        if let Some(h) = self.routes.get(route) {
            h.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .saturating_record(ns);
        }
    }

    pub fn reset(&self) {
        for h in self.routes.iter() {
            h.lock().unwrap_or_else(PoisonError::into_inner).reset();
        }
    }

    /// `{"unit":"us","routes":[{"route":…,"count":…,"mean":…,"p50":…,"p90":…,"p99":…,
    /// "p999":…,"max":…}, …]}` in route-table order, unmatched last; times in microseconds.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"unit\":\"us\",\"routes\":[");
        for (id, h) in self.routes.iter().enumerate() {
            let h = h.lock().unwrap_or_else(PoisonError::into_inner);
            let route = self.labels[id];
            let us = |ns: u64| ns as f64 / 1_000.0;
            if id > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"route\":\"{route}\",\"count\":{},\"mean\":{:.3},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}}",
                h.len(),
                h.mean() / 1_000.0,
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.9)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
            );
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reports_and_resets() {
        let st = ServiceTimes::new(&["/healthz", "/readyz"]);
        for us in 1..=100 {
            st.record(0, Duration::from_micros(us));
        }
        let v: serde_json::Value = serde_json::from_str(&st.to_json()).expect("valid JSON");
        let healthz = &v["routes"][0];
        assert_eq!(healthz["route"], "/healthz");
        assert_eq!(healthz["count"], 100);
        let p50 = healthz["p50"].as_f64().unwrap_or(0.0);
        assert!((49.9..=50.1).contains(&p50), "p50 {p50}");
        let p99 = healthz["p99"].as_f64().unwrap_or(0.0);
        assert!((98.9..=99.1).contains(&p99), "p99 {p99}");
        assert_eq!(v["routes"][1]["count"], 0);
        assert_eq!(v["routes"][2]["route"], "unmatched");
        st.reset();
        let v: serde_json::Value = serde_json::from_str(&st.to_json()).expect("valid JSON");
        assert_eq!(v["routes"][0]["count"], 0);
    }
}
