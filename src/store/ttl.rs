//! The TTL sweeper: an expired record is invisible at once to every engine call; this task
//! removes it within about a second, as a write of its own (an `expire` delete naming the
//! record's revision, so a key renewed meanwhile is left alone) that takes a revision and
//! sends an `expire` watch event. Expiry times are stored with the records, so a restart
//! loses none: the first sweep after boot removes what expired while the node was down.
//! While the engine reports itself down (a failed flush, a full disk), the same tick probes it
//! with a flush instead, so the node comes back by itself once the cause is gone.

use std::sync::Arc;
use std::time::Duration;

use super::{Cond, ErrorKind, IfMatch, Storage, WriteOp, now_secs};
use crate::metrics::Metrics;

/// How often the sweeper looks.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Expiries removed per write step (they share its revision).
const STEP: usize = 64;

/// Sweeps until `stop` turns true.
pub async fn sweeper(
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Checked before the timer too: a sweep that blocked (an engine's `expired` waiting
        // on the network) may end after shutdown began, when the runtime's timers are gone.
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if !store.health() {
            // Requests are refused while the engine is down, so nothing else would flush it.
            let probe = Arc::clone(&store);
            let _ = tokio::task::spawn_blocking(move || probe.probe()).await;
            continue;
        }
        if let Err(e) = sweep(&*store, &metrics, now_secs()).await {
            tracing::warn!(cause = %e, "TTL sweep failed; retrying at the next tick");
        }
    }
}

/// Removes everything expired at `now`, in steps of up to 64 keys. Returns how many keys it
/// removed.
pub async fn sweep(
    store: &dyn Storage,
    metrics: &Metrics,
    now: u64,
) -> Result<u64, super::StoreError> {
    let mut removed = 0u64;
    loop {
        let due = store.expired(now, STEP)?;
        if due.is_empty() {
            return Ok(removed);
        }
        let conds: Vec<Cond> = due
            .iter()
            .map(|e| Cond {
                if_match: Some(IfMatch::Versions(vec![e.revision])),
                if_none_match: None,
            })
            .collect();
        let ops: Vec<WriteOp<'_>> = due
            .iter()
            .zip(&conds)
            .map(|(e, cond)| WriteOp::Delete {
                bucket: &e.bucket,
                key: &e.key,
                cond,
                expire: true,
            })
            .collect();
        let n = match store.write(&ops).await {
            Ok(w) => (0..ops.len()).filter(|&i| w.existed(i)).count(),
            // A key was renewed or deleted meanwhile: take them one by one.
            Err(e) if e.kind() == ErrorKind::Precondition => {
                let mut n = 0;
                for op in &ops {
                    match store.write(std::slice::from_ref(op)).await {
                        Ok(w) if w.existed(0) => n += 1,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::Precondition => {}
                        Err(e) => return Err(e),
                    }
                }
                n
            }
            Err(e) => return Err(e),
        };
        removed += n as u64;
        metrics.kv_expired(n as u64);
        if n == 0 {
            // Nothing removable in this batch (all renewed): the next tick looks again.
            return Ok(removed);
        }
    }
}
