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

/// Told of each key the sweeper removed (the audit trail, one line per key).
pub trait ExpireLog: Send + Sync {
    /// Whether sweeping must wait (the log cannot record removals now).
    fn paused(&self) -> bool;
    /// `bucket`/`key` was removed by an `expire` delete at `revision`.
    fn removed(&self, bucket: &str, key: &str, revision: u64);
}

/// Sweeps until `stop` turns true, telling `log` (when given) of every key it removes.
pub async fn sweeper(
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    log: Option<Arc<dyn ExpireLog>>,
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
        if log.as_ref().is_some_and(|l| l.paused()) {
            continue;
        }
        if let Err(e) = sweep_logged(&*store, &metrics, now_secs(), log.as_deref()).await {
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
    sweep_logged(store, metrics, now, None).await
}

/// [`sweep`], telling `log` of each removed key.
async fn sweep_logged(
    store: &dyn Storage,
    metrics: &Metrics,
    now: u64,
    log: Option<&dyn ExpireLog>,
) -> Result<u64, super::StoreError> {
    let mut removed = 0u64;
    loop {
        if log.is_some_and(|l| l.paused()) {
            return Ok(removed);
        }
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
        let told = |i: usize, w: &super::Written| {
            if let (Some(log), Some(e)) = (log, due.get(i)) {
                log.removed(&e.bucket, &e.key, w.revision);
            }
        };
        let n = match store.write(&ops).await {
            Ok(w) => {
                let removed: Vec<usize> = (0..ops.len()).filter(|&i| w.existed(i)).collect();
                removed.iter().for_each(|&i| told(i, &w));
                removed.len()
            }
            // A key was renewed or deleted meanwhile: take them one by one.
            Err(e) if e.kind() == ErrorKind::Precondition => {
                let mut n = 0;
                for (i, op) in ops.iter().enumerate() {
                    match store.write(std::slice::from_ref(op)).await {
                        Ok(w) if w.existed(0) => {
                            told(i, &w);
                            n += 1;
                        }
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
