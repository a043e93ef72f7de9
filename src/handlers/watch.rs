//! `GET /v1/watch/{bucket}?prefix=&since=&values=`: the change feed as server-sent events
//! (docs/API.md, "Watch").
//!
//! Each stream is one small task reading the store's [`Feed`](crate::store::Feed) from its
//! cursor and handing frames to the response body through a channel of one frame. When the
//! client stops reading, the channel stays full, the task stops reading the feed, and its
//! cursor falls behind; once more than `MICRONODE_WATCH_BUFFER` matching events wait, it sends
//! `overflow` and ends. A stream that starts behind (a resume) replays the history as fast as
//! the client reads; the buffer applies from the moment it has caught up. Writers never wait for a watcher and the server never buffers for one.
//!
//! Events of one revision (a transaction) are written together and only the last carries the
//! `id:` line, so a client resuming from its last id never splits a transaction.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::Cx;
use super::kv::{parse_bool, tag_revision, valid_bucket};
use crate::app::WatcherSlot;
use crate::error::ApiError;
use crate::guards::tenant::{TenantResult, TenantWatcher};
use crate::metrics::{KvOp, Metrics};
use crate::response::{self, Body, ChannelBody, Resp};
use crate::store::feed::Read;
use crate::store::{Event, EventKind, Storage};
use crate::wire::MICRONODE_REVISION;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
/// One message of a stream's channel: a frame of SSE text (a stream never fails midway).
type Frame = Result<Bytes, std::convert::Infallible>;

/// Events per frame at most (a revision is never split, so a frame may hold more).
const FRAME_EVENTS: usize = 256;

/// What one stream watches.
struct Watch {
    bucket: String,
    prefix: String,
    values: bool,
}

impl Watch {
    fn matches(&self, e: &Event) -> bool {
        *e.bucket == *self.bucket && e.key.starts_with(self.prefix.as_str())
    }
}

// GET /v1/watch/{bucket}
pub async fn get_watch(cx: Cx<'_>) -> Result<Resp, ApiError> {
    let bucket = cx.param("bucket");
    if !valid_bucket(bucket) {
        return Err(ApiError::BadRequest("invalid bucket name"));
    }
    let prefix = cx.query.get("prefix").unwrap_or("").to_owned();
    if prefix.len() > crate::store::MAX_KEY_BYTES {
        return Err(ApiError::BadRequest("prefix must be at most 1024 bytes"));
    }
    let values = match cx.query.get("values") {
        Some(raw) => parse_bool(raw, "values must be true or false")?,
        None => false,
    };
    let since = match (cx.query.get("since"), cx.head.headers.get(&LAST_EVENT_ID)) {
        (Some(raw), _) => Some(raw),
        (None, Some(h)) => Some(
            h.to_str()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be a revision"))?,
        ),
        (None, None) => None,
    };
    let since = since
        .map(|raw| {
            tag_revision(raw.trim()).ok_or(ApiError::BadRequest(
                "since and Last-Event-ID must be a revision (decimal)",
            ))
        })
        .transpose()?;
    if cx.head.method == http::Method::HEAD {
        // The headers a GET would get, without opening a stream or taking a watcher slot.
        let since_ok = since.is_none_or(|r| r >= cx.app.store.feed().floor());
        if !since_ok {
            return Err(ApiError::Compacted {
                oldest: cx.app.store.feed().floor(),
            });
        }
        let mut resp = response::empty(StatusCode::OK);
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, EVENT_STREAM);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let at = since.unwrap_or_else(|| cx.app.store.feed().released());
        headers.insert(MICRONODE_REVISION, HeaderValue::from(at));
        return Ok(resp);
    }
    let slot = cx.app.streams.try_watch().ok_or(ApiError::Concurrency)?;
    let tenant = cx.tenant();
    let tenant_slot = cx.app.tenants.watcher(tenant).ok_or_else(|| {
        cx.app.tenants.count(tenant, TenantResult::Quota);
        ApiError::Quota {
            retry_after_secs: 1,
        }
    })?;
    cx.app.metrics.kv_op(KvOp::Watch);
    let store = Arc::clone(&cx.app.store);
    let feed = store.feed();
    let cursor = match since {
        Some(r) if r < feed.floor() => {
            return Err(ApiError::Compacted {
                oldest: feed.floor(),
            });
        }
        Some(r) => r,
        None => feed.released(),
    };
    let watch = Watch {
        bucket: bucket.to_owned(),
        prefix,
        values,
    };
    let cfg = cx.app.config();
    let (tx, rx) = mpsc::channel(1);
    let stream = Stream {
        store,
        metrics: Arc::clone(&cx.app.metrics),
        watch,
        cursor,
        buffer: cfg.watch.buffer,
        caught_up: false,
        keepalive: Duration::from_millis(cfg.watch.keepalive_ms),
        stop: cx.app.streams.stopping(),
        _slot: slot,
        _tenant_slot: tenant_slot,
    };
    tokio::spawn(stream.run(tx));
    let mut resp = http::Response::new(Body::stream(ChannelBody(rx)));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, EVENT_STREAM);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(MICRONODE_REVISION, HeaderValue::from(cursor));
    Ok(resp)
}

/// Resolves once the server stops.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// One watcher's task.
struct Stream {
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    watch: Watch,
    /// The last revision delivered (or skipped as not matching).
    cursor: u64,
    buffer: usize,
    /// The cursor has reached the head once: from then on falling behind is an overflow.
    caught_up: bool,
    keepalive: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: WatcherSlot,
    /// Counted against the tenant's `max_watchers`.
    _tenant_slot: TenantWatcher,
}

impl Stream {
    async fn run(mut self, tx: mpsc::Sender<Frame>) {
        // Sent at once so the client sees the stream open even before the first event.
        if tx
            .send(Ok(Bytes::from_static(b": watching\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let mut events = Vec::new();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let store = Arc::clone(&self.store);
            let feed = store.feed();
            // Registered before reading, so a release in between is not missed.
            let changed = feed.changed();
            events.clear();
            // A stream replaying history (a resume) reads it as fast as the client takes it;
            // only once it has caught up with the head can it fall behind.
            let buffer = if self.caught_up {
                self.buffer
            } else {
                usize::MAX
            };
            let head = feed.released();
            let read = feed.read(
                &mut self.cursor,
                |e| self.watch.matches(e),
                buffer,
                FRAME_EVENTS,
                &mut events,
            );
            self.caught_up |= self.cursor >= head;
            let frame = match read {
                Read::Events if events.is_empty() => None,
                Read::Events => Some(self.frame(&events)),
                Read::Overflow | Read::Compacted => {
                    self.metrics.watch_overflow();
                    let end = format!(
                        "event: overflow\ndata: {{\"resume_from\":{}}}\n\n",
                        self.cursor
                    );
                    // The client is behind: wait for it to read, but not past a stop.
                    tokio::select! {
                        _ = tx.send(Ok(Bytes::from(end))) => {}
                        _ = stopped(&mut self.stop) => {}
                    }
                    return;
                }
            };
            if let Some(frame) = frame {
                // Waits while the client is not reading: the cursor stays behind meanwhile.
                tokio::select! {
                    sent = tx.send(Ok(frame)) => if sent.is_err() { return },
                    _ = stopped(&mut self.stop) => return,
                }
                last_sent = tokio::time::Instant::now();
                continue;
            }
            tokio::select! {
                _ = changed => {}
                // Counted from the last bytes sent, so a quiet stream gets its keep-alive even
                // while other keys of the store change all the time.
                _ = tokio::time::sleep_until(last_sent + self.keepalive) => {
                    tokio::select! {
                        sent = tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))) => {
                            if sent.is_err() { return }
                        }
                        _ = stopped(&mut self.stop) => return,
                    }
                    last_sent = tokio::time::Instant::now();
                }
                _ = tx.closed() => return,
                _ = stopped(&mut self.stop) => return,
            }
        }
    }

    /// The SSE text of some events; the `id:` line goes with the last event of a revision.
    fn frame(&self, events: &[Event]) -> Bytes {
        let mut out = String::with_capacity(events.len() * 128);
        let mut counts = [0u64; 3];
        for (i, e) in events.iter().enumerate() {
            let last_of_revision = events.get(i + 1).is_none_or(|n| n.revision != e.revision);
            if last_of_revision {
                let _ = writeln!(out, "id: {}", e.revision);
            }
            let _ = writeln!(out, "event: {}", e.kind.as_str());
            let mut data = serde_json::Map::new();
            data.insert("bucket".into(), (*e.bucket).into());
            data.insert("key".into(), (*e.key).into());
            data.insert("revision".into(), e.revision.into());
            if e.kind == EventKind::Put {
                data.insert("etag".into(), format!("\"{}\"", e.revision).into());
                if let Some(at) = e.expires_at {
                    data.insert("expires_at".into(), at.into());
                }
                if self.watch.values {
                    data.insert("value".into(), BASE64.encode(&e.value).into());
                    data.insert(
                        "content_type".into(),
                        String::from_utf8_lossy(&e.content_type).into_owned().into(),
                    );
                }
            }
            let _ = writeln!(out, "data: {}\n", serde_json::Value::Object(data));
            counts[e.kind as usize] += 1;
        }
        for (i, n) in counts.into_iter().enumerate() {
            if n > 0 {
                self.metrics.watch_events(i, n);
            }
        }
        Bytes::from(out)
    }
}
