//! `GET /v1/admin/snapshot`: the whole store as of one revision, streamed as NDJSON while
//! writes go on (docs/API.md, "Snapshots"; the file format is in `crate::snapshot`, the
//! point-in-time method in `crate::store::dump`).
//!
//! The dump runs on a blocking thread and hands the body chunks of about 256 KiB through a
//! channel of four, so memory stays bounded whatever the store's size and however slowly the
//! client reads. A dump that fails midway ends the body with an error: the client sees a cut
//! stream with no end line, which `micronode snapshot verify` refuses.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::Cx;
use crate::config::Engine;
use crate::error::ApiError;
use crate::response::{Body, ChannelBody, Resp};
use crate::snapshot::{EntryRef, Header, Writer};
use crate::store::dump::{self, Item, Sink};
use crate::store::now_secs;

/// A body chunk is sent once it holds this much.
const CHUNK_BYTES: usize = 256 << 10;

type Chunk = Result<Bytes, std::io::Error>;

// GET /v1/admin/snapshot
pub async fn get_snapshot(cx: Cx<'_>) -> Result<Resp, ApiError> {
    // One at a time: each spools the whole store to disk.
    let slot = cx.app.streams.try_snapshot().ok_or(ApiError::Concurrency)?;
    let store = Arc::clone(&cx.app.store);
    let spool_dir = spool_dir(cx.app);
    let request_id = cx.request_id.clone();
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut sink = Lines {
            tx: tx.clone(),
            writer: None,
            buf: Vec::with_capacity(CHUNK_BYTES + (64 << 10)),
        };
        let settle = |revision| runtime.block_on(store.settle(revision));
        let result = dump::dump(&*store, &spool_dir, settle, &mut sink);
        match result
            .map_err(|e| e.to_string())
            .and_then(|_| sink.finish())
        {
            Ok(()) => {}
            Err(cause) => {
                tracing::error!(request_id = ?request_id, cause = %cause, "snapshot failed");
                let _ = tx.blocking_send(Err(std::io::Error::other("snapshot failed")));
            }
        }
    });
    let mut resp = http::Response::new(Body::stream(ChannelBody(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::snapshot::CONTENT_TYPE),
    );
    Ok(resp)
}

/// Where the dump spools: beside the data directory for `sled` (the same disk, which has
/// room for the data), the temp directory for `mem` and `postgres`.
fn spool_dir(app: &crate::app::App) -> PathBuf {
    match app.cfg.storage.effective_engine() {
        Engine::Mem | Engine::Postgres => std::env::temp_dir(),
        Engine::Sled => match app.cfg.storage.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    }
}

/// Formats the dump into snapshot lines and sends them in chunks.
struct Lines {
    tx: mpsc::Sender<Chunk>,
    writer: Option<Writer>,
    buf: Vec<u8>,
}

impl Lines {
    fn send_if_full(&mut self, force: bool) -> std::io::Result<()> {
        if self.buf.len() >= CHUNK_BYTES || (force && !self.buf.is_empty()) {
            let chunk = Bytes::from(std::mem::take(&mut self.buf));
            self.tx
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the client went away"))?;
            self.buf.reserve(CHUNK_BYTES);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        let writer = self
            .writer
            .take()
            .ok_or_else(|| "the dump never started".to_owned())?;
        writer.end(&mut self.buf);
        self.send_if_full(true).map_err(|e| e.to_string())
    }
}

impl Sink for Lines {
    fn cancelled(&self) -> bool {
        self.tx.is_closed()
    }

    fn start(&mut self, revision: u64) -> std::io::Result<()> {
        let header = Header::new(revision, now_secs());
        self.writer = Some(Writer::new(&header, &mut self.buf));
        // The header goes out at once, so the client knows the snapshot has begun.
        self.send_if_full(true)
    }

    fn item(&mut self, item: &Item) -> std::io::Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(std::io::Error::other("item before the header"));
        };
        if item.bucket == crate::app::AUTH_BUCKET {
            // The node's own records go out as system records, never as keys.
            if let Some(nonce) = item.key.strip_prefix("revoked/") {
                let mut map = serde_json::Map::new();
                map.insert("system".into(), "revocation".into());
                map.insert("nonce".into(), nonce.into());
                let when = std::str::from_utf8(&item.record.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                map.insert("revoked_unix".into(), when.into());
                writer
                    .system(&map, &mut self.buf)
                    .map_err(std::io::Error::other)?;
            }
            return self.send_if_full(false);
        }
        let etag = format!("\"{}\"", item.record.revision);
        let content_type = String::from_utf8_lossy(&item.record.content_type);
        writer.entry(
            EntryRef {
                bucket: &item.bucket,
                key: &item.key,
                content_type: &content_type,
                etag: &etag,
                value: &item.record.value,
                expires_at: item.record.expires_at,
                tenant: item.owner.as_deref(),
            },
            &mut self.buf,
        );
        self.send_if_full(false)
    }
}
