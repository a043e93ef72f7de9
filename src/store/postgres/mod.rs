//! The `postgres` engine: records in a PostgreSQL database, so that several nodes can serve
//! one keyspace (docs/STORAGE.md, "PostgreSQL engine").
//!
//! # How the contract maps
//! - **Revisions in commit order.** One counter row (`rev`). A write step locks it first
//!   (`SELECT … FOR UPDATE`) and, if it changes anything, bumps it (`UPDATE … RETURNING`) in
//!   the same transaction: writers of every node queue on that row, so revision order is
//!   commit order. The price is that write transactions are serialized database-wide (one
//!   commit at a time); reads are not. So each node groups its writes: one writer thread
//!   ([`writer`]) runs all the steps waiting for it in one transaction, each step under its
//!   own revision and after a savepoint, and one commit answers them all.
//! - **Visibility = durability.** A call resolves only after `COMMIT` returned; PostgreSQL
//!   made the commit durable (with its default `synchronous_commit = on`) before answering.
//!   Reads see only committed rows.
//! - **Expiry.** Reads, listings and conditions judge `expires_at` against the clock at once;
//!   the sweeper of each node deletes expired rows through the normal write path (a second
//!   node's sweep of the same key fails its condition and is skipped).
//! - **Change feed across nodes.** Every step also writes its events to `changes` and sends
//!   `pg_notify('micronode_changes', '<schema> <revision>')` in its transaction. Each node
//!   keeps a `LISTEN` connection; on a notification (or once a second, in case one was missed)
//!   it reads the `changes` rows after the last revision its feed holds, in order, and
//!   appends them. A local write appends its own events right after its commit, under the
//!   same lock, after first reading any gap left by other nodes' writes — so the feed gets
//!   every revision once, in order.
//!
//! - **TLS.** Every connection (pooled, writer, listener, boot) follows the URL's `sslmode`:
//!   `require`/`verify-*` is TLS with the server verified, anything else plain TCP ([`tls`]).
//!
//! # Threads
//! The trait mixes futures (`get`, `write`, …) with blocking calls (`expired`, `scan`,
//! `applied_revision`, `probe`, `flush_blocking`), and callers come from the server's runtime,
//! from CLI tools' current-thread runtimes and from plain threads. So the engine owns a small
//! multi-thread runtime (2 workers, `micronode-pg`): every pooled connection and its driver
//! task live there, whatever runtime the caller uses, and no caller's worker ever waits on the
//! network. A future call spawns its work there and awaits the join handle; a blocking call
//! spawns it there and waits on a channel (inside `block_in_place` when the caller is a
//! multi-thread runtime worker, so that worker's other tasks move on). Write steps are queued
//! to the node's writer thread and answered through a oneshot channel. The writer has its
//! own connection on its own current-thread runtime and drives the synchronous [`Locked`]
//! view over the open transaction (each statement is a `block_on` on that runtime, which
//! reads the answer on the same thread: no hand-off per statement) — what the shared
//! `run_txn` needs.

mod schema;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::usage::{self, Usage};
use super::{
    Cond, ErrorKind, Event, EventKind, Expiring, Feed, ListOpts, Locked, Page, Read, Record,
    Scanned, StoreCall, StoreError, Txn, TxnOp, TxnOutcome, WriteOp, Written, check_step,
    events_of, judged, now_secs, page_from, run_txn,
};
use crate::config::PostgresCfg;
use schema::Sql;

/// Attempts of a step that failed with a serialization failure or a deadlock.
const ATTEMPTS: usize = 3;
/// How often the listener looks at `changes` without a notification.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Revisions of the change log read per query when catching the feed up.
const CATCH_UP_SLICE: u64 = 1_000;
/// The listener's first wait before reconnecting, and its longest (it doubles in between).
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(4);
/// How often, at most, the listener reads the usage other nodes' writes changed.
const USAGE_EVERY: Duration = Duration::from_millis(250);
/// How often old `changes` rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A database error as a [`StoreError`]: connection trouble, timeouts, an overloaded or
/// shutting-down server and retryable conflicts are [`ErrorKind::Unavailable`] (503 with
/// `Retry-After`), a full disk is [`ErrorKind::DiskFull`], anything else internal.
pub(crate) fn pg_err(message: &'static str, e: tokio_postgres::Error) -> StoreError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::DISK_FULL => ErrorKind::DiskFull,
        Some(c) => {
            let code = c.code();
            let retryable = [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(c);
            if retryable || ["08", "53", "57", "58"].iter().any(|p| code.starts_with(p)) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Internal
            }
        }
        None => {
            let io = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
            if e.is_closed() || io || std::error::Error::source(&e).is_none() {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Internal
            }
        }
    };
    StoreError::new(kind, message).with_source(e)
}

/// A connection that could not be opened, whatever the reason (refused, TLS, authentication,
/// the server starting up): the database is unavailable to this node, an outage (503, not
/// ready), not an internal error.
fn connect_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::new(ErrorKind::Unavailable, "cannot connect to PostgreSQL").with_source(e)
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => connect_err(e),
        PoolError::Timeout(_) => StoreError::new(
            ErrorKind::Unavailable,
            "timed out waiting for a PostgreSQL connection",
        ),
        _ => StoreError::new(ErrorKind::Unavailable, "the PostgreSQL pool is closed"),
    }
}

fn retryable(e: &StoreError) -> bool {
    e.cause()
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
}

/// Whether `e` says the connection itself is gone (closed, an I/O error, or the server
/// ending the session: an administrator's or a shutdown's termination).
fn connection_lost(e: &StoreError) -> bool {
    let Some(source) = e.cause() else {
        return false;
    };
    let Some(pg) = source.downcast_ref::<tokio_postgres::Error>() else {
        return source.downcast_ref::<std::io::Error>().is_some();
    };
    pg.is_closed()
        || std::error::Error::source(pg)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
        || pg.code().is_some_and(|c| {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What every task of the engine shares.
#[derive(Debug)]
struct Shared {
    pool: Pool,
    sql: Sql,
    schema: String,
    feed: Feed,
    /// The last revision appended to the feed. Held from a write's key locks until its events
    /// are appended after `COMMIT`, and by the listener while it catches up: one appender at
    /// a time, in revision order. Never held while waiting for a pooled connection.
    appended: Arc<Mutex<u64>>,
    /// The newest revision any call saw committed.
    seen: AtomicU64,
    healthy: AtomicBool,
    usage: Option<Arc<Usage>>,
    /// Every connection's TLS: used when the URL asks for it (see [`tls::config`]).
    tls: tls::PgTls,
}

impl Shared {
    /// Notes the outcome of a call for [`Storage::health`](super::Storage::health).
    fn track<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match &r {
            Ok(_) => self.healthy.store(true, Ordering::Release),
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(cause = %e, "postgres engine down");
                }
            }
            Err(_) => {}
        }
        r
    }

    fn saw(&self, revision: u64) {
        self.seen.fetch_max(revision, Ordering::AcqRel);
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Appends events already committed, grouped by revision, and releases them. Every
    /// revision has events, so a revision missing before one of them was pruned from the
    /// change log before this node read it: the feed skips past it (see [`Shared::lost`]).
    fn append_committed(&self, last: &mut u64, events: Vec<Event>) {
        let mut step: Vec<Event> = Vec::new();
        for e in events {
            if e.revision <= *last {
                continue;
            }
            if step.first().is_some_and(|f| f.revision != e.revision) {
                *last = step[0].revision;
                self.feed.append(std::mem::take(&mut step));
            }
            if step.is_empty() && e.revision > *last + 1 {
                self.lost(last, e.revision - 1);
            }
            step.push(e);
        }
        if let Some(f) = step.first() {
            *last = f.revision;
            self.feed.append(step);
        }
        self.feed.release(*last);
        self.saw(*last);
    }

    /// Revisions `(*last, upto]` are gone from the change log (pruned while this node was
    /// cut off from the database for longer than the log keeps): the feed restarts after
    /// `upto`, so watchers behind it are told to resume and get 410, rather than silently
    /// missing changes.
    fn lost(&self, last: &mut u64, upto: u64) {
        tracing::warn!(
            after = *last,
            upto,
            "the change log no longer holds revisions this node's feed missed; \
             watchers behind them must resume (410 compacted)"
        );
        self.feed.skip_to(upto);
        *last = upto;
    }

    /// Reads into the feed every change up to the counter's current value; returns that value.
    async fn catch_up(&self, client: &tokio_postgres::Client) -> Result<u64, StoreError> {
        let err = |e| pg_err("cannot read the change log", e);
        let mut last = self.appended.lock().await;
        let counter = client
            .query_one(&self.sql.counter, &[])
            .await
            .map_err(err)?;
        let counter = to_u64(counter.try_get(0).map_err(err)?);
        // In slices of `CATCH_UP_SLICE` revisions, so a node far behind never holds the whole
        // backlog in memory at once.
        while counter > *last {
            let upto = counter.min(last.saturating_add(CATCH_UP_SLICE));
            let rows = client
                .query(&self.sql.changes_between, &[&to_i64(*last), &to_i64(upto)])
                .await
                .map_err(err)?;
            let events = rows.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
            self.append_committed(&mut last, events);
            if *last < upto {
                // Committed revisions up to the counter, with no events left: pruned.
                self.lost(&mut last, upto);
                self.feed.release(upto);
            }
        }
        self.saw(counter);
        Ok(counter.max(*last))
    }
}

fn event_of(row: &tokio_postgres::Row) -> Result<Event, StoreError> {
    let err = |e| pg_err("bad change row", e);
    let kind = match row.try_get::<_, &str>(4).map_err(err)? {
        "put" => EventKind::Put,
        "delete" => EventKind::Delete,
        "expire" => EventKind::Expire,
        _ => {
            return Err(StoreError::internal(
                "unknown change kind in the change log",
            ));
        }
    };
    Ok(Event {
        revision: to_u64(row.try_get(0).map_err(err)?),
        kind,
        bucket: row.try_get::<_, &str>(2).map_err(err)?.into(),
        key: row.try_get::<_, &str>(3).map_err(err)?.into(),
        value: Bytes::copy_from_slice(row.try_get::<_, &[u8]>(5).map_err(err)?),
        content_type: Bytes::copy_from_slice(row.try_get::<_, &[u8]>(6).map_err(err)?),
        expires_at: row.try_get::<_, Option<i64>>(7).map_err(err)?.map(to_u64),
        // The change log does not keep owners: a snapshot taken while a key changes gives
        // that key to `default` (docs/STORAGE.md, "PostgreSQL engine").
        owner: None,
    })
}

/// A record from columns `value, content_type, revision, expires_at` starting at `at`;
/// `None` when the (left-joined) row is absent.
fn record_at(row: &tokio_postgres::Row, at: usize) -> Result<Option<Record>, StoreError> {
    let err = |e| pg_err("bad record row", e);
    let Some(value) = row.try_get::<_, Option<&[u8]>>(at).map_err(err)? else {
        return Ok(None);
    };
    Ok(Some(Record {
        value: Bytes::copy_from_slice(value),
        content_type: Bytes::copy_from_slice(row.try_get::<_, &[u8]>(at + 1).map_err(err)?),
        revision: to_u64(row.try_get(at + 2).map_err(err)?),
        expires_at: row
            .try_get::<_, Option<i64>>(at + 3)
            .map_err(err)?
            .map(to_u64),
    }))
}

/// The PostgreSQL engine. See the module doc.
#[derive(Debug)]
pub struct PgStore {
    shared: Arc<Shared>,
    /// The engine's own runtime; shut down in the background when the store is dropped (a
    /// drop may happen inside another runtime, where a blocking shutdown would panic).
    rt: Option<Runtime>,
    handle: Handle,
    stop: tokio::sync::watch::Sender<bool>,
    /// The writer's queue (see [`writer`]); dropping it stops the writer.
    queue: std::sync::mpsc::Sender<Box<dyn Job>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits for `fut`, spawned on `handle`, from any thread.
fn wait_on<T: Send + 'static>(
    handle: &Handle,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || {
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::new(
                ErrorKind::Unavailable,
                "the postgres engine stopped",
            ))
        })
    };
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl PgStore {
    /// Connects, migrates the schema, seeds the feed from the counter, rebuilds usage from
    /// the records and starts the listener. The error names the cause in one line.
    pub fn open(
        cfg: &PostgresCfg,
        history: usize,
        usage: Option<Arc<Usage>>,
    ) -> Result<PgStore, String> {
        crate::config::valid_pg_schema(&cfg.schema)?;
        let (mut pg, tls) = tls::config(cfg)?;
        let timeout = Duration::from_millis(cfg.connect_timeout_ms);
        pg.connect_timeout(timeout);
        pg.application_name("micronode");
        // A database that vanishes without closing the connection (a partition, a host gone)
        // must fail calls within about half a minute, not after the kernel's two hours.
        // Values given in the URL win.
        if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg.keepalives_idle(Duration::from_secs(10));
        }
        if pg.get_keepalives_interval().is_none() {
            pg.keepalives_interval(Duration::from_secs(5));
        }
        if pg.get_keepalives_retries().is_none() {
            pg.keepalives_retries(3);
        }
        if pg.get_tcp_user_timeout().is_none() {
            pg.tcp_user_timeout(Duration::from_secs(30));
        }
        let manager = Manager::from_config(
            pg.clone(),
            tls.0.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| format!("cannot build the PostgreSQL pool: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(cfg.pool_size.max(2) * 2)
            .thread_name("micronode-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the postgres engine's runtime: {e}"))?;
        let handle = rt.handle().clone();
        let schema = cfg.schema.clone();
        let sql = Sql::new(&schema);
        let boot = {
            let (pg, tls, schema, usage) = (pg.clone(), tls.clone(), schema.clone(), usage.clone());
            let (counter_sql, usage_sql) = (sql.counter.clone(), sql.usage.clone());
            async move {
                let (mut client, conn) = pg.connect(tls.0).await.map_err(connect_err)?;
                let driver = tokio::spawn(conn);
                let result = async {
                    schema::migrate(&mut client, &schema).await?;
                    let err = |e| pg_err("cannot read the revision counter", e);
                    let row = client.query_one(&counter_sql, &[]).await.map_err(err)?;
                    let counter = to_u64(row.try_get(0).map_err(err)?);
                    if let Some(u) = &usage {
                        read_usage(&client, &usage_sql, u).await?;
                    }
                    Ok(counter)
                }
                .await;
                drop(client);
                driver.abort();
                result
            }
        };
        let counter = match wait_on(&handle, boot) {
            Ok(c) => c,
            Err(e) => {
                // Not a plain drop: the caller may be inside a runtime (the server opens its
                // store there), where a blocking runtime shutdown panics.
                rt.shutdown_background();
                return Err(format!("postgres engine: {e}"));
            }
        };
        let shared = Arc::new(Shared {
            pool,
            sql,
            schema,
            feed: Feed::new(counter, history),
            appended: Arc::new(Mutex::new(counter)),
            seen: AtomicU64::new(counter),
            healthy: AtomicBool::new(true),
            usage,
            tls,
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let keep = to_i64(history.max(10_000) as u64);
        // The writer's connection names itself, so a DBA can tell it from the readers.
        let mut writer_pg = pg.clone();
        writer_pg.application_name(format!("micronode writer {}", cfg.schema));
        handle.spawn(listen(Arc::clone(&shared), pg, stop_rx, keep));
        let (queue, jobs) = std::sync::mpsc::channel::<Box<dyn Job>>();
        {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("micronode-pg-writer".to_owned())
                .spawn(move || writer(&shared, &writer_pg, timeout, &jobs))
                .map_err(|e| format!("cannot start the postgres engine's writer: {e}"))?;
        }
        Ok(PgStore {
            shared,
            rt: Some(rt),
            handle,
            stop,
            queue,
        })
    }

    /// A future call: `fut` runs on the engine's runtime.
    fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> StoreCall<T> {
        let shared = Arc::clone(&self.shared);
        let task = self.handle.spawn(async move { shared.track(fut.await) });
        StoreCall::pending(async move {
            task.await.unwrap_or_else(|_| {
                Err(StoreError::new(
                    ErrorKind::Unavailable,
                    "the postgres engine stopped",
                ))
            })
        })
    }

    /// A blocking call: `fut` runs on the engine's runtime while this thread waits.
    fn blocking<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        wait_on(&self.handle, async move { shared.track(fut.await) })
    }

    /// Queues `body` as one write step for the node's writer, which runs it in a batch's
    /// transaction (retried whole on a serialization failure or deadlock) and answers once
    /// the batch committed.
    fn step<T: Send + 'static>(
        &self,
        body: impl Fn(&mut View<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreCall<T> {
        let stopped = || {
            Err(StoreError::new(
                ErrorKind::Unavailable,
                "the postgres engine stopped",
            ))
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Step {
            body,
            result: None,
            reply,
        });
        if self.queue.send(job).is_err() {
            return StoreCall::ready(stopped());
        }
        StoreCall::pending(async move { answer.await.unwrap_or_else(|_| stopped()) })
    }
}

/// Reads every tenant's usage, as of the counter read in the same statement.
async fn read_usage(
    client: &tokio_postgres::Client,
    sql: &str,
    usage: &Usage,
) -> Result<(), StoreError> {
    let err = |e| pg_err("cannot read tenant usage", e);
    let rows = client.query(sql, &[]).await.map_err(err)?;
    let mut at = 0;
    let mut all = Vec::with_capacity(rows.len());
    for row in &rows {
        at = to_u64(row.try_get(0).map_err(err)?);
        if let Some(owner) = row.try_get::<_, Option<String>>(1).map_err(err)? {
            let keys = to_u64(row.try_get::<_, Option<i64>>(2).map_err(err)?.unwrap_or(0));
            let bytes = to_u64(row.try_get::<_, Option<i64>>(3).map_err(err)?.unwrap_or(0));
            all.push((owner, usage::Counts { bytes, keys }));
        }
    }
    usage.set_all(&all, at);
    Ok(())
}

/// The listener: `LISTEN`s for other writes and catches the feed up; reconnects after a
/// second when its connection fails; prunes `changes` rows older than `keep` revisions.
async fn listen(
    shared: Arc<Shared>,
    pg: tokio_postgres::Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
    keep: i64,
) {
    let mut last_prune = tokio::time::Instant::now();
    // Usage other nodes changed is read again at most every `USAGE_EVERY` (this node's own
    // writes set theirs at commit); quotas are judged on the database's counts, not these.
    let mut usage_at = (0u64, tokio::time::Instant::now());
    // Reconnects back off, doubling from `RECONNECT_MIN` to `RECONNECT_MAX` while the
    // database stays away, back to the minimum once a catch-up succeeds.
    let mut backoff = RECONNECT_MIN;
    loop {
        if let Ok((client, mut conn)) = pg.connect(shared.tls.0.clone()).await {
            let wake = Arc::new(tokio::sync::Notify::new());
            let prefix = format!("{} ", shared.schema);
            let driver = {
                let wake = Arc::clone(&wake);
                tokio::spawn(async move {
                    while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                        match msg {
                            Ok(tokio_postgres::AsyncMessage::Notification(n))
                                if n.payload().starts_with(&prefix) =>
                            {
                                wake.notify_one();
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    wake.notify_one();
                })
            };
            if client
                .batch_execute(&format!("LISTEN {}", schema::CHANNEL))
                .await
                .is_ok()
            {
                loop {
                    match shared.catch_up(&client).await {
                        Ok(last) => {
                            backoff = RECONNECT_MIN;
                            if let Some(u) = &shared.usage
                                && last > usage_at.0
                                && usage_at.1.elapsed() >= USAGE_EVERY
                            {
                                usage_at = (last, tokio::time::Instant::now());
                                if let Err(e) = read_usage(&client, &shared.sql.usage, u).await {
                                    tracing::warn!(cause = %e, "reading tenant usage failed");
                                }
                            }
                            if last_prune.elapsed() >= PRUNE_EVERY {
                                last_prune = tokio::time::Instant::now();
                                let below = to_i64(last).saturating_sub(keep);
                                if let Err(e) = client.execute(&shared.sql.prune, &[&below]).await {
                                    tracing::warn!(cause = %e, "pruning the change log failed");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(cause = %e, "postgres listener lost its connection");
                            break;
                        }
                    }
                    if driver.is_finished() {
                        break;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(POLL_EVERY) => {}
                        _ = stop.changed() => { driver.abort(); return; }
                    }
                }
            }
            driver.abort();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// An open write transaction, as [`Locked`] sees it.
struct View<'a> {
    rt: &'a Runtime,
    tx: &'a tokio_postgres::Transaction<'a>,
    /// The writer connection's prepared statements.
    stmts: &'a Stmts,
    shared: &'a Shared,
    /// The counter's value when the step locked it.
    current: u64,
    /// The feed's appender lock, held from the batch's start to the append after commit.
    guard: OwnedMutexGuard<u64>,
    /// The newest revision whose events are in `events` (or in the feed already).
    fed: u64,
    /// Events to append after commit: other nodes' missing ones first, then the steps', in
    /// revision order.
    events: Vec<Event>,
    /// Each writing step's owners' usage after it, from the shared `usage` table, with the
    /// step's revision.
    usage: Vec<(String, usage::Counts, u64)>,
    /// The revision of the current step's write, once it wrote.
    revision: Option<u64>,
    /// The current step's savepoint (in a batch of several steps).
    savepoint: Savepoint,
}

/// Where the current step's savepoint stands. It is sent with the step's first statement (one
/// round trip for both), so a step that never reached the database has none to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    /// A lone step: its failure rolls the whole transaction back.
    None,
    /// To be sent with the step's first statement.
    Pending,
    /// Sent: a failure rolls back to it.
    Made,
}

/// An old row of a locked key.
struct Old {
    revision: u64,
    expires_at: Option<u64>,
    owner: String,
    value_len: u64,
}

impl View<'_> {
    fn q<T>(
        &self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        self.rt
            .block_on(fut)
            .map_err(|e| pg_err("a write statement failed", e))
    }

    fn stmt(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.stmts.get(self.rt, self.tx, sql)
    }

    /// Runs a step's first statement, preceded in the same round trip by its savepoint when
    /// one is pending.
    fn first_q<T>(
        &mut self,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        if self.savepoint != Savepoint::Pending {
            return self.q(fut);
        }
        self.savepoint = Savepoint::Made;
        let tx = self.tx;
        self.q(async { tokio::try_join!(tx.batch_execute("SAVEPOINT step"), fut) })
            .map(|(_, out)| out)
    }
}

impl Locked for View<'_> {
    fn read(&mut self, bucket: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let stmt = self.stmt(&self.shared.sql.get)?;
        let tx = self.tx;
        let row = self.first_q(tx.query_one(&stmt, &[&bucket, &key]))?;
        record_at(&row, 1)
    }

    fn apply(&mut self, ops: &[WriteOp<'_>], now: u64) -> Result<Written, StoreError> {
        check_step(ops)?;
        if self.revision.is_some() {
            return Err(StoreError::internal("one write step per transaction"));
        }
        let (buckets, keys): (Vec<&str>, Vec<&str>) = ops.iter().map(|op| op.bucket_key()).unzip();
        let stmt = self.stmt(&self.shared.sql.lock_keys)?;
        let tx = self.tx;
        let rows = self.first_q(tx.query(&stmt, &[&buckets, &keys]))?;
        let err = |e| pg_err("bad locked row", e);
        let mut old: HashMap<(String, String), Old> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let b: String = row.try_get(0).map_err(err)?;
            let k: String = row.try_get(1).map_err(err)?;
            old.insert(
                (b, k),
                Old {
                    revision: to_u64(row.try_get(2).map_err(err)?),
                    expires_at: row.try_get::<_, Option<i64>>(3).map_err(err)?.map(to_u64),
                    owner: row.try_get(4).map_err(err)?,
                    value_len: to_u64(row.try_get(5).map_err(err)?),
                },
            );
        }
        let mut existed = Vec::with_capacity(ops.len());
        let mut deltas = usage::Deltas::default();
        for op in ops {
            let (bucket, key) = op.bucket_key();
            let o = old.get(&(bucket.to_owned(), key.to_owned()));
            let exists = judged(op, o.map(|r| (r.revision, r.expires_at)), now)?.is_some();
            existed.push(exists);
            let is_put = matches!(op, WriteOp::Put { .. });
            if let Some(r) = o
                && (is_put || exists)
            {
                let owner = usage::owner_in(bucket.as_bytes(), &r.owner);
                deltas.add(owner, usage::size_of(bucket, key, r.value_len), -1);
            }
            if let WriteOp::Put { owner, value, .. } = *op {
                deltas.add(owner, usage::size_of(bucket, key, value.len() as u64), 1);
            }
        }
        let mut written = Written::new(self.current);
        for (i, e) in existed.iter().enumerate() {
            if *e {
                written.set_existed(i);
            }
        }
        if !written.changed(ops) {
            return Ok(written);
        }
        // Usage is kept in the shared table whether or not this node enforces quotas (another
        // node may); the step's owners come back with their new counts, judged below.
        let (mut uo, mut uk, mut ub) = (vec![], vec![], vec![]);
        for (owner, bytes, keys) in deltas.iter() {
            uo.push(owner);
            ub.push(bytes);
            uk.push(keys);
        }
        // The counter row is ours (locked by the step), so the bump gives `current + 1`: every
        // statement of the step can go out at once, pipelined in one round trip (checked
        // against the bump's answer below).
        let revision = self.current + 1;
        let mut w = Written::new(revision);
        for (i, e) in existed.iter().enumerate() {
            if *e {
                w.set_existed(i);
            }
        }
        let (mut pb, mut pk, mut pv, mut pc, mut pe, mut po) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut db, mut dk) = (vec![], vec![]);
        for (i, op) in ops.iter().enumerate() {
            match *op {
                WriteOp::Put {
                    bucket,
                    key,
                    content_type,
                    value,
                    expires_at,
                    owner,
                    ..
                } => {
                    pb.push(bucket);
                    pk.push(key);
                    pv.push(&value[..]);
                    pc.push(content_type);
                    pe.push(expires_at.map(to_i64));
                    po.push(owner);
                }
                WriteOp::Delete { bucket, key, .. } if existed[i] => {
                    db.push(bucket);
                    dk.push(key);
                }
                WriteOp::Delete { .. } => {}
            }
        }
        let events = events_of(ops, &w);
        let rev = to_i64(revision);
        // Other nodes' steps the feed has not got yet: all committed before our lock.
        let gap_from =
            (self.fed + 1 < revision).then_some((to_i64(self.fed), to_i64(revision - 1)));
        let sql = &self.shared.sql;
        let (upsert, delete, gap, usage_add) = (
            self.stmt(&sql.upsert)?,
            self.stmt(&sql.delete)?,
            self.stmt(&sql.changes_between)?,
            self.stmt(&sql.usage_add)?,
        );
        let tx = self.tx;
        // The counter, the change rows and the notification are written once per batch, by
        // `finish_batch`.
        let (_, _, gap_rows, usage_rows) = self.q(async {
            tokio::try_join!(
                async {
                    match pb.is_empty() {
                        true => Ok(0),
                        false => {
                            tx.execute(&upsert, &[&rev, &pb, &pk, &pv, &pc, &pe, &po])
                                .await
                        }
                    }
                },
                async {
                    match db.is_empty() {
                        true => Ok(0),
                        false => tx.execute(&delete, &[&db, &dk]).await,
                    }
                },
                async {
                    match &gap_from {
                        None => Ok(Vec::new()),
                        Some((from, upto)) => tx.query(&gap, &[from, upto]).await,
                    }
                },
                async {
                    match uo.is_empty() {
                        true => Ok(Vec::new()),
                        false => tx.query(&usage_add, &[&uo, &uk, &ub]).await,
                    }
                },
            )
        })?;
        let mut after = Vec::with_capacity(usage_rows.len());
        for row in &usage_rows {
            let owner: String = row.try_get(0).map_err(err)?;
            let keys = to_u64(row.try_get(1).map_err(err)?);
            let bytes = to_u64(row.try_get(2).map_err(err)?);
            after.push((owner, usage::Counts { bytes, keys }));
        }
        if let Some(u) = &self.shared.usage {
            // Judged on the shared counts, under the counter's lock: exact across nodes. A
            // refusal rolls the whole transaction back.
            u.judge(&deltas, |owner| {
                let now = after
                    .iter()
                    .find(|(o, _)| o == owner)
                    .map_or_else(usage::Counts::default, |(_, c)| *c);
                let (bytes, keys) = deltas
                    .iter()
                    .find(|(o, ..)| *o == owner)
                    .map_or((0, 0), |(_, b, k)| (b, k));
                usage::Counts {
                    bytes: now.bytes.saturating_add_signed(-bytes),
                    keys: now.keys.saturating_add_signed(-keys),
                }
            })?;
        }
        for row in &gap_rows {
            self.events.push(event_of(row)?);
        }
        self.events.extend(events);
        self.usage
            .extend(after.into_iter().map(|(o, c)| (o, c, revision)));
        self.fed = revision;
        self.revision = Some(revision);
        Ok(w)
    }
}

/// A queued write step: its body, run inside a batch's transaction (again if the batch is
/// retried), and its answer, sent once the batch's fate is known.
trait Job: Send {
    /// Runs the body on `view`, keeping its result; false if it failed (the caller undoes
    /// what it wrote).
    fn run(&mut self, view: &mut View<'_>) -> bool;
    /// Answers: the kept result if the batch committed (or wrote nothing), else `failed`.
    fn finish(self: Box<Self>, failed: Option<StoreError>);
}

struct Step<T, F> {
    body: F,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Step<T, F>
where
    T: Send,
    F: Fn(&mut View<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, view: &mut View<'_>) -> bool {
        let r = (self.body)(view);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, failed: Option<StoreError>) {
        let answer = match (failed, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => r,
            (None, None) => Err(StoreError::internal("a write step was never run")),
        };
        let _ = self.reply.send(answer);
    }
}

/// Steps one transaction takes at most. Each is a subtransaction (its savepoint); PostgreSQL
/// caches 64 per backend, and more would slow every session's snapshots.
const MAX_BATCH: usize = 64;

/// Statements prepared on the writer's connection, by SQL text.
#[derive(Default)]
struct Stmts(std::cell::RefCell<HashMap<String, tokio_postgres::Statement>>);

impl Stmts {
    fn get(
        &self,
        rt: &Runtime,
        tx: &tokio_postgres::Transaction<'_>,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        if let Some(s) = self.0.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = rt
            .block_on(tx.prepare(sql))
            .map_err(|e| pg_err("cannot prepare a write statement", e))?;
        self.0.borrow_mut().insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// The writer's own connection. It is driven by the writer thread's current-thread runtime,
/// so a statement's answer is read by the thread waiting for it: no hand-off between threads
/// per statement.
struct WriterConn {
    client: tokio_postgres::Client,
    stmts: Stmts,
}

/// The node's writer: takes the queued steps, as many as are waiting (up to [`MAX_BATCH`]),
/// and runs them in one transaction, one commit for all (group commit). Runs until the
/// store is dropped.
fn writer(
    shared: &Shared,
    pg: &tokio_postgres::Config,
    connect_timeout: Duration,
    queue: &std::sync::mpsc::Receiver<Box<dyn Job>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(cause = %e, "the postgres writer cannot start its runtime");
            while let Ok(job) = queue.recv() {
                job.finish(Some(StoreError::internal(
                    "the postgres writer has no runtime",
                )));
            }
            return;
        }
    };
    let mut conn: Option<WriterConn> = None;
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            // Lets the connection task notice a connection the server closed meanwhile.
            rt.block_on(tokio::task::yield_now());
            if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                conn = None;
                match rt.block_on(connect(pg, &shared.tls.0, connect_timeout)) {
                    Ok(c) => conn = Some(c),
                    Err(e) => break Err(e),
                }
            }
            let Some(c) = conn.as_mut() else {
                break Err(StoreError::internal("no writer connection"));
            };
            // A panicking step fails its batch, not the writer (every later write needs it).
            let mut committing = false;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_batch(&rt, shared, c, &mut jobs, &mut committing)
            }));
            let outcome =
                run.unwrap_or_else(|_| Err(StoreError::internal("a write step panicked")));
            // A connection found closed (the server restarted, or dropped it while idle)
            // before `COMMIT` was sent committed nothing: once, the batch is run again on a
            // fresh one, rather than failing every step in it.
            let stale = |e: &StoreError| {
                attempt == 1 && !committing && (c.client.is_closed() || connection_lost(e))
            };
            match outcome {
                Err(e) if attempt < ATTEMPTS && stale(&e) => {
                    conn = None;
                    continue;
                }
                Err(e) if attempt < ATTEMPTS && retryable(&e) => continue,
                other => break other,
            }
        };
        if outcome.is_err() {
            // Whatever state the connection is in, the next batch starts on a fresh one if
            // this one is closed (checked above); an open one is reused.
            if conn.as_ref().is_some_and(|c| c.client.is_closed()) {
                conn = None;
            }
        }
        let failed = shared.track(outcome).err();
        for job in jobs {
            job.finish(failed.clone());
        }
    }
}

/// Opens the writer's connection, its driver spawned on the calling runtime.
async fn connect(
    pg: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    timeout: Duration,
) -> Result<WriterConn, StoreError> {
    let (client, connection) = tokio::time::timeout(timeout, pg.connect(tls.clone()))
        .await
        .map_err(|_| StoreError::new(ErrorKind::Unavailable, "timed out connecting to PostgreSQL"))?
        .map_err(connect_err)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(cause = %e, "the postgres writer's connection ended");
        }
    });
    Ok(WriterConn {
        client,
        stmts: Stmts::default(),
    })
}

/// One attempt of a batch: begin, lock the counter, each step in turn (each after a
/// savepoint when there are several, so one step's failure undoes only its own writes),
/// commit, append. Each writing step takes the next revision, and later steps see the
/// earlier ones' writes, as if they had committed one by one. Nothing is answered before
/// the commit, so no answer (not even a 412 judged on an earlier step's write) shows state
/// that might not become durable.
fn run_batch(
    rt: &Runtime,
    shared: &Shared,
    conn: &mut WriterConn,
    jobs: &mut [Box<dyn Job>],
    committing: &mut bool,
) -> Result<(), StoreError> {
    let err = |e| pg_err("a write transaction failed", e);
    let stmts = &conn.stmts;
    let tx = rt.block_on(conn.client.transaction()).map_err(err)?;
    let lock = stmts.get(rt, &tx, &shared.sql.lock_counter)?;
    let row = rt.block_on(tx.query_one(&lock, &[])).map_err(err)?;
    let first = to_u64(row.try_get(0).map_err(err)?);
    // From here to the append after commit, this batch is the feed's only appender, and
    // `fed` starts from what the feed holds (the listener may not have read every revision
    // up to `first` yet: the first writing step reads those from the log).
    let guard = rt.block_on(Arc::clone(&shared.appended).lock_owned());
    let fed = *guard;
    let mut view = View {
        rt,
        tx: &tx,
        stmts,
        shared,
        current: first,
        guard,
        fed,
        events: Vec::new(),
        usage: Vec::new(),
        revision: None,
        savepoint: Savepoint::None,
    };
    let savepoints = jobs.len() > 1;
    let mut wrote = false;
    for job in jobs.iter_mut() {
        if savepoints {
            view.savepoint = Savepoint::Pending;
        }
        let (events, usage, fed) = (view.events.len(), view.usage.len(), view.fed);
        view.revision = None;
        if job.run(&mut view) {
            if let Some(r) = view.revision {
                view.current = r;
                wrote = true;
            }
        } else {
            // Its writes are undone; a lone step's whole transaction is rolled back below.
            if view.savepoint == Savepoint::Made {
                rt.block_on(view.tx.batch_execute("ROLLBACK TO SAVEPOINT step"))
                    .map_err(err)?;
            }
            view.events.truncate(events);
            view.usage.truncate(usage);
            view.fed = fed;
        }
    }
    let View {
        mut guard,
        events,
        usage,
        current,
        ..
    } = view;
    if !wrote {
        // Nothing written: nothing to commit. A 404/412 names the revision it was judged at.
        let _ = rt.block_on(tx.rollback());
        shared.saw(first);
        return Ok(());
    }
    finish_batch(rt, shared, &tx, stmts, first, current, &events)?;
    *committing = true;
    rt.block_on(tx.commit()).map_err(err)?;
    if let Some(u) = &shared.usage {
        for (owner, counts, revision) in &usage {
            u.set(owner, *counts, *revision);
        }
    }
    shared.append_committed(&mut guard, events);
    *guard = (*guard).max(current);
    Ok(())
}

/// The batch's writes made once for all its steps, in one round trip: the counter moves from
/// `first` (the value locked) to `last`, the steps' events go to the change log (`events`
/// ends with them, after other nodes' events read from the log), and one notification
/// tells the other nodes.
fn finish_batch(
    rt: &Runtime,
    shared: &Shared,
    tx: &tokio_postgres::Transaction<'_>,
    stmts: &Stmts,
    first: u64,
    last: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    let err = |e| pg_err("a write transaction failed", e);
    let own = events
        .iter()
        .rev()
        .take_while(|e| e.revision > first)
        .count();
    let own = &events[events.len() - own..];
    let (mut rev, mut seq) = (Vec::with_capacity(own.len()), Vec::with_capacity(own.len()));
    let mut n = 0i32;
    for (i, e) in own.iter().enumerate() {
        n = if i > 0 && own[i - 1].revision == e.revision {
            n + 1
        } else {
            0
        };
        rev.push(to_i64(e.revision));
        seq.push(n);
    }
    let eb: Vec<&str> = own.iter().map(|e| &*e.bucket).collect();
    let ek: Vec<&str> = own.iter().map(|e| &*e.key).collect();
    let kind: Vec<&str> = own.iter().map(|e| e.kind.as_str()).collect();
    let ev: Vec<&[u8]> = own.iter().map(|e| &e.value[..]).collect();
    let ec: Vec<&[u8]> = own.iter().map(|e| &e.content_type[..]).collect();
    let ee: Vec<Option<i64>> = own.iter().map(|e| e.expires_at.map(to_i64)).collect();
    let payload = format!("{} {last}", shared.schema);
    let (to, from) = (to_i64(last), to_i64(first));
    let sql = &shared.sql;
    let stmt = |q: &str| stmts.get(rt, tx, q);
    let (bump, changes, notify) = (
        stmt(&sql.bump_counter)?,
        stmt(&sql.insert_changes)?,
        stmt(&sql.notify)?,
    );
    let (bumped, _, _) = rt
        .block_on(async {
            let params: [&(dyn ToSql + Sync); 8] = [&rev, &seq, &eb, &ek, &kind, &ev, &ec, &ee];
            let bump_params: [&(dyn ToSql + Sync); 2] = [&to, &from];
            let notify_params: [&(dyn ToSql + Sync); 2] = [&schema::CHANNEL, &payload];
            tokio::try_join!(
                tx.execute(&bump, &bump_params),
                tx.execute(&changes, &params),
                tx.execute(&notify, &notify_params),
            )
        })
        .map_err(err)?;
    if bumped != 1 {
        return Err(StoreError::internal(
            "the revision counter moved under its lock",
        ));
    }
    Ok(())
}

/// A write op with everything it borrows owned, so a step can move to another thread.
#[derive(Debug, Clone)]
enum OwnedOp {
    Put {
        bucket: String,
        key: String,
        content_type: Vec<u8>,
        value: Bytes,
        expires_at: Option<u64>,
        cond: Cond,
        owner: String,
    },
    Delete {
        bucket: String,
        key: String,
        cond: Cond,
        expire: bool,
    },
}

impl OwnedOp {
    fn of(op: &WriteOp<'_>) -> OwnedOp {
        match *op {
            WriteOp::Put {
                bucket,
                key,
                content_type,
                value,
                expires_at,
                cond,
                owner,
            } => OwnedOp::Put {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                content_type: content_type.to_vec(),
                value: value.clone(),
                expires_at,
                cond: cond.clone(),
                owner: owner.to_owned(),
            },
            WriteOp::Delete {
                bucket,
                key,
                cond,
                expire,
            } => OwnedOp::Delete {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                cond: cond.clone(),
                expire,
            },
        }
    }

    fn op(&self) -> WriteOp<'_> {
        match self {
            OwnedOp::Put {
                bucket,
                key,
                content_type,
                value,
                expires_at,
                cond,
                owner,
            } => WriteOp::Put {
                bucket,
                key,
                content_type,
                value,
                expires_at: *expires_at,
                cond,
                owner,
            },
            OwnedOp::Delete {
                bucket,
                key,
                cond,
                expire,
            } => WriteOp::Delete {
                bucket,
                key,
                cond,
                expire: *expire,
            },
        }
    }
}

#[derive(Debug, Clone)]
enum OwnedTxnOp {
    Write(OwnedOp),
    Get { bucket: String, key: String },
}

impl OwnedTxnOp {
    fn of(op: &TxnOp<'_>) -> OwnedTxnOp {
        match op {
            TxnOp::Write(w) => OwnedTxnOp::Write(OwnedOp::of(w)),
            TxnOp::Get { bucket, key } => OwnedTxnOp::Get {
                bucket: (*bucket).to_owned(),
                key: (*key).to_owned(),
            },
        }
    }

    fn op(&self) -> TxnOp<'_> {
        match self {
            OwnedTxnOp::Write(w) => TxnOp::Write(w.op()),
            OwnedTxnOp::Get { bucket, key } => TxnOp::Get { bucket, key },
        }
    }
}

impl super::Storage for PgStore {
    fn get(&self, bucket: &str, key: &str) -> StoreCall<Read> {
        let shared = Arc::clone(&self.shared);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.call(async move {
            let client = shared.client().await?;
            let err = |e| pg_err("a read failed", e);
            let stmt = client.prepare_cached(&shared.sql.get).await.map_err(err)?;
            let row = client
                .query_one(&stmt, &[&bucket, &key])
                .await
                .map_err(err)?;
            let revision = to_u64(row.try_get(0).map_err(err)?);
            shared.saw(revision);
            Ok(Read {
                record: record_at(&row, 1)?.filter(Record::live_now),
                revision,
            })
        })
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> StoreCall<Written> {
        if let Err(e) = check_step(ops) {
            return StoreCall::ready(Err(e));
        }
        let owned: Vec<OwnedOp> = ops.iter().map(OwnedOp::of).collect();
        self.step(move |view| {
            let ops: Vec<WriteOp<'_>> = owned.iter().map(OwnedOp::op).collect();
            view.apply(&ops, now_secs())
        })
    }

    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        opts: ListOpts,
    ) -> StoreCall<Page> {
        let shared = Arc::clone(&self.shared);
        // The same range as `ListRange`: from `prefix` (or strictly after `after`), below the
        // first string that no longer starts with `prefix`.
        let (inclusive, lower) = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => (false, a.to_owned()),
            _ => (true, prefix.to_owned()),
        };
        let upper = prefix_end(prefix);
        let bucket = bucket.to_owned();
        let prefix = prefix.to_owned();
        self.call(async move {
            let client = shared.client().await?;
            let err = |e| pg_err("a listing failed", e);
            let sql = if inclusive {
                &shared.sql.list_from
            } else {
                &shared.sql.list_after
            };
            let stmt = client.prepare_cached(sql).await.map_err(err)?;
            let limit = to_i64(opts.limit as u64).saturating_add(1);
            let now = to_i64(now_secs());
            let rows = client
                .query(
                    &stmt,
                    &[
                        &bucket,
                        &lower,
                        &upper,
                        &now,
                        &limit,
                        &opts.values.is_some(),
                    ],
                )
                .await
                .map_err(err)?;
            let revision = match rows.first() {
                Some(r) => to_u64(r.try_get(0).map_err(err)?),
                None => return Err(StoreError::internal("the revision counter row is missing")),
            };
            shared.saw(revision);
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(key) = row.try_get::<_, Option<String>>(1).map_err(err)? else {
                    continue;
                };
                if !key.starts_with(&prefix) {
                    continue;
                }
                match record_at(row, 2)? {
                    Some(r) => items.push(Ok((key, r))),
                    None => continue,
                }
            }
            page_from(items.into_iter(), opts, revision)
        })
    }

    fn txn(&self, txn: &Txn<'_>) -> StoreCall<TxnOutcome> {
        let compares: Vec<(String, String, Cond)> = txn
            .compares
            .iter()
            .map(|c| (c.bucket.to_owned(), c.key.to_owned(), c.cond.clone()))
            .collect();
        let then: Vec<OwnedTxnOp> = txn.then.iter().map(OwnedTxnOp::of).collect();
        let otherwise: Vec<OwnedTxnOp> = txn.otherwise.iter().map(OwnedTxnOp::of).collect();
        self.step(move |view| {
            let compares: Vec<super::Compare<'_>> = compares
                .iter()
                .map(|(bucket, key, cond)| super::Compare { bucket, key, cond })
                .collect();
            let then: Vec<TxnOp<'_>> = then.iter().map(OwnedTxnOp::op).collect();
            let otherwise: Vec<TxnOp<'_>> = otherwise.iter().map(OwnedTxnOp::op).collect();
            let t = Txn {
                compares: &compares,
                then: &then,
                otherwise: &otherwise,
            };
            let current = view.current;
            let (mut outcome, changed) = run_txn(view, &t, now_secs())?;
            if !changed {
                outcome.revision = current;
            }
            Ok(outcome)
        })
    }

    fn expired(&self, now: u64, limit: usize) -> Result<Vec<Expiring>, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.blocking(async move {
            let client = shared.client().await?;
            let err = |e| pg_err("cannot look for expired records", e);
            let stmt = client
                .prepare_cached(&shared.sql.expired)
                .await
                .map_err(err)?;
            let rows = client
                .query(&stmt, &[&to_i64(now), &to_i64(limit as u64)])
                .await
                .map_err(err)?;
            rows.iter()
                .map(|row| {
                    Ok(Expiring {
                        bucket: row.try_get(0).map_err(err)?,
                        key: row.try_get(1).map_err(err)?,
                        revision: to_u64(row.try_get(2).map_err(err)?),
                    })
                })
                .collect()
        })
    }

    fn scan(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<Vec<Scanned>, StoreError> {
        let shared = Arc::clone(&self.shared);
        let after = match after {
            None => String::new(),
            Some(a) => String::from_utf8(a.to_vec())
                .map_err(|_| StoreError::internal("non-UTF-8 engine key"))?,
        };
        self.blocking(async move {
            let client = shared.client().await?;
            let err = |e| pg_err("a scan failed", e);
            let stmt = client.prepare_cached(&shared.sql.scan).await.map_err(err)?;
            let rows = client
                .query(&stmt, &[&after, &to_i64(now), &to_i64(limit as u64)])
                .await
                .map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let bucket: String = row.try_get(0).map_err(err)?;
                let key: String = row.try_get(1).map_err(err)?;
                let Some(record) = record_at(row, 2)? else {
                    continue;
                };
                let owner: String = row.try_get(6).map_err(err)?;
                out.push(Scanned {
                    engine_key: super::compose(&bucket, &key),
                    bucket,
                    key,
                    record,
                    owner: (owner != crate::config::DEFAULT_TENANT).then_some(owner),
                });
            }
            Ok(out)
        })
    }

    fn revision(&self) -> u64 {
        self.shared.seen.load(Ordering::Acquire)
    }

    /// The counter's value, once the local feed holds every step up to it (snapshots replay
    /// the feed between two of these).
    fn applied_revision(&self) -> Result<u64, StoreError> {
        let shared = Arc::clone(&self.shared);
        self.blocking(async move {
            let client = shared.client().await?;
            shared.catch_up(&client).await
        })
    }

    fn settle(&self, _revision: u64) -> StoreCall<()> {
        // Every revision a call returned was committed, which PostgreSQL made durable.
        StoreCall::ready(Ok(()))
    }

    fn feed(&self) -> &Feed {
        &self.shared.feed
    }

    fn health(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    fn probe(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = self.blocking(async move {
            let client = shared.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| pg_err("probe failed", e))?;
            Ok(())
        });
    }

    fn reads_wait(&self) -> bool {
        true
    }

    fn usage(&self) -> Option<&Usage> {
        self.shared.usage.as_deref()
    }

    fn pool_connections(&self) -> Option<(usize, usize)> {
        let status = self.shared.pool.status();
        Some((
            status.available,
            status.size.saturating_sub(status.available),
        ))
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        // Every write is committed before its call resolves: nothing to flush. Stop the
        // listener.
        let _ = self.stop.send(true);
        Ok(())
    }
}

/// The smallest string greater than every string starting with `prefix` (`None`: no bound).
/// UTF-8 keeps code point order in byte order, so incrementing the last character that can
/// be incremented gives it.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let next = (u32::from(c) + 1..=0x10FFFF).find_map(char::from_u32);
        if let Some(n) = next {
            chars.push(n);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{PgStore, prefix_end};
    use crate::config::PostgresCfg;
    use crate::store::usage::{Counts, Limits, Usage};
    use crate::store::{Cond, ErrorKind, Storage, WriteOp, feed};

    /// Two stores over one fresh schema (two nodes), or `None` when no database is configured
    /// (the shared suite's opener already says so loudly, and fails under CI).
    fn two_nodes() -> Option<(Arc<PgStore>, Arc<PgStore>)> {
        two_nodes_with(|| None)
    }

    /// [`two_nodes`], each node with the usage tracker `usage` makes.
    fn two_nodes_with(
        usage: impl Fn() -> Option<Arc<Usage>>,
    ) -> Option<(Arc<PgStore>, Arc<PgStore>)> {
        let url = std::env::var("MICRONODE_TEST_PG_URL").ok()?;
        let cfg = PostgresCfg {
            url,
            pool_size: 4,
            schema: crate::store::suite::unique_schema(),
            ..Default::default()
        };
        let open = || Arc::new(PgStore::open(&cfg, 10_000, usage()).expect("opens"));
        Some((open(), open()))
    }

    fn put_as(node: &PgStore, key: &str, value: &[u8], owner: &str) -> Result<u64, ErrorKind> {
        let value = Bytes::copy_from_slice(value);
        let op = WriteOp::Put {
            bucket: "u",
            key,
            content_type: b"",
            value: &value,
            expires_at: None,
            cond: &Cond::NONE,
            owner,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(node.write(&[op]))
            .map(|w| w.revision)
            .map_err(|e| e.kind())
    }

    /// Polls (bounded) until `node` reports `want` for `tenant`.
    fn await_usage(node: &PgStore, tenant: &str, want: Counts) {
        let usage = node.usage().expect("tracked");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while usage.of(tenant) != want {
            assert!(
                std::time::Instant::now() < deadline,
                "usage of {tenant}: {:?}, want {want:?}",
                usage.of(tenant)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Quotas hold across nodes: 12 writers split over two nodes race to create keys for a
    /// tenant allowed 5, and exactly 5 are stored; each node then reports the same usage, a
    /// delete on one node makes room for a write on the other, and a node opened later reads
    /// the same counts.
    #[test]
    fn tenant_usage_and_quotas_are_shared_by_the_nodes() {
        let limits = Limits {
            max_bytes: None,
            max_keys: Some(5),
        };
        let Some((a, b)) =
            two_nodes_with(|| Some(Usage::with_limits(Limits::default(), &[("q", limits)])))
        else {
            return;
        };
        let stored: Vec<Result<u64, ErrorKind>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..12)
                .map(|i| {
                    let node = if i % 2 == 0 { &a } else { &b };
                    sc.spawn(move || put_as(node, &format!("k{i}"), b"12345", "q"))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("writer"))
                .collect()
        });
        let ok = stored.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 5, "exactly the quota is stored: {stored:?}");
        assert!(
            stored
                .iter()
                .all(|r| r.is_ok() || *r == Err(ErrorKind::Quota)),
            "the rest are refused for the quota: {stored:?}"
        );
        // bucket "u" (1) + key "kN" (2, or 3 for k10/k11) + value (5) per key.
        let bytes = stored
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| 1 + format!("k{i}").len() as u64 + 5)
            .sum();
        let want = Counts { bytes, keys: 5 };
        await_usage(&a, "q", want);
        await_usage(&b, "q", want);
        assert_eq!(put_as(&a, "more", b"x", "q"), Err(ErrorKind::Quota));
        assert_eq!(put_as(&b, "more", b"x", "q"), Err(ErrorKind::Quota));
        // A delete on A frees a key for B.
        let gone = stored.iter().position(|r| r.is_ok()).expect("one stored");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(a.delete("u", &format!("k{gone}"), &Cond::NONE))
            .expect("delete");
        put_as(&b, "more", b"x", "q").expect("room again after the delete on the other node");
        assert_eq!(put_as(&a, "again", b"x", "q"), Err(ErrorKind::Quota));
        let want = b.usage().expect("tracked").of("q");
        assert_eq!(want.keys, 5);
        await_usage(&a, "q", want);
        // Another tenant is not limited by q's quota.
        put_as(&a, "other", b"x", "r").expect("r is unlimited");
    }

    /// Runs one statement on a connection of its own to the test database, as an
    /// administrator would, and returns its rows.
    fn admin_query(
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let url = std::env::var("MICRONODE_TEST_PG_URL").expect("set");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            let driver = tokio::spawn(conn);
            let rows = client.query(sql, params).await.expect(sql);
            driver.abort();
            rows
        })
    }

    /// The writer's connection dropped by the server while idle (a restart, an idle timeout,
    /// an administrator): the next write is still answered, on a fresh connection, not 503.
    #[test]
    fn a_write_after_the_writers_connection_was_dropped_is_answered() {
        let Some((a, _b)) = two_nodes() else { return };
        put_as(&a, "before", b"1", "default").expect("write");
        let name = format!("micronode writer {}", a.shared.schema);
        let rows = admin_query(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = left($1, 63)) t",
            &[&name],
        );
        let killed: i64 = rows[0].get(0);
        assert_eq!(killed, 1, "the writer's one connection");
        for i in 0..3 {
            put_as(&a, &format!("after{i}"), b"2", "default")
                .expect("answered on a fresh connection");
        }
    }

    /// A node cut off from the change log for longer than it is kept (simulated: its feed is
    /// held while the other node writes and the rows are pruned) does not silently miss the
    /// pruned changes: its feed skips past them, so a watcher behind reads `Compacted` (and
    /// gets 410 when it resumes), and later changes flow again.
    #[test]
    fn a_feed_behind_a_pruned_change_log_skips_and_watchers_behind_are_told() {
        let Some((a, b)) = two_nodes() else { return };
        put_as(&a, "first", b"1", "default").expect("write");
        let start = b.applied_revision().expect("b catches up");
        let mut cursor = start;
        let held = b.shared.appended.blocking_lock();
        let mut last = 0;
        for i in 0..5 {
            last = put_as(&a, &format!("p{i}"), b"v", "default").expect("write");
        }
        // What pruning does, for the revisions b has not read.
        let sql = format!(
            "DELETE FROM {}.changes WHERE revision <= $1",
            b.shared.schema
        );
        admin_query(&sql, &[&super::to_i64(last - 1)]);
        drop(held);
        assert_eq!(b.applied_revision().expect("b catches up"), last);
        let mut out = Vec::new();
        let read = b
            .feed()
            .read(&mut cursor, |_| true, usize::MAX, 100, &mut out);
        assert_eq!(read, feed::Read::Compacted, "the watcher behind is told");
        assert_eq!(
            b.feed().floor(),
            last - 1,
            "history restarts after the pruned revisions"
        );
        // The one revision still in the log was delivered; later ones flow as before.
        let mut cursor = last - 1;
        let read = b
            .feed()
            .read(&mut cursor, |_| true, usize::MAX, 100, &mut out);
        assert_eq!(read, feed::Read::Events);
        assert_eq!(
            out.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![last]
        );
        let next = put_as(&a, "after", b"v", "default").expect("write");
        assert_eq!(b.applied_revision().expect("b catches up"), next);
        out.clear();
        b.feed()
            .read(&mut cursor, |_| true, usize::MAX, 100, &mut out);
        assert_eq!(
            out.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![next]
        );
    }

    /// Writers on both nodes at once: both feeds end up with every step exactly once, in
    /// revision order, with dense revisions — the merge of local appends and the listener.
    #[test]
    fn both_feeds_get_every_step_once_in_order_under_concurrent_writers() {
        let Some((a, b)) = two_nodes() else { return };
        let start = a.revision().max(b.revision());
        let per = 40;
        std::thread::scope(|sc| {
            for t in 0..6 {
                let node = if t % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                sc.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    for i in 0..per {
                        let key = format!("t{t}/{i}");
                        let value = Bytes::from(key.clone());
                        let op = WriteOp::Put {
                            bucket: "f",
                            key: &key,
                            content_type: b"",
                            value: &value,
                            expires_at: None,
                            cond: &Cond::NONE,
                            owner: "default",
                        };
                        rt.block_on(node.write(&[op])).expect("write");
                    }
                });
            }
        });
        let total = 6 * per;
        let end = a.applied_revision().expect("a catches up");
        assert_eq!(b.applied_revision().expect("b catches up"), end);
        for (name, node) in [("a", &a), ("b", &b)] {
            let events = node.feed().between(start, end).expect("history");
            let revs: Vec<u64> = events.iter().map(|e| e.revision).collect();
            assert_eq!(revs.len(), total, "{name}: every step once");
            assert!(
                revs.windows(2).all(|w| w[1] == w[0] + 1),
                "{name}: dense, in order: {revs:?}"
            );
            assert_eq!(
                node.feed().released(),
                end,
                "{name}: released up to the end"
            );
        }
    }

    #[test]
    fn prefix_end_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        for k in ["a/", "a/x", "a/\u{10FFFF}\u{10FFFF}"] {
            assert!(k < prefix_end("a/").expect("bound").as_str());
        }
    }
}
