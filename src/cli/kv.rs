//! `micronode kv get|put|delete|list|watch`: the KV routes from the command line
//! (docs/CLI.md). `get` prints the value's raw bytes; everything else prints JSON.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::{Bytes, BytesMut};
use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::client::{Call, Client, ClientArgs, Failure, encode_path, encode_query};
use super::out;

/// Exit code of `kv watch` when the server ended the stream because the watcher fell behind
/// (`overflow`): resume with `--since` the revision named on stderr.
const EXIT_OVERFLOW: u8 = 3;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: KvCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum KvCommand {
    /// Print a key's value (raw bytes, nothing else) to stdout.
    Get { bucket: String, key: String },
    /// Store a value: VALUE, or --file F, or stdin when neither is given. Prints
    /// {"status":201|204,"etag":"…"}.
    Put {
        bucket: String,
        key: String,
        /// The value (else --file, else stdin).
        #[arg(conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        /// Content-Type to store (the server's default is application/octet-stream).
        #[arg(long, value_name = "CT")]
        content_type: Option<String>,
        /// Expire the key after this many seconds.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
        /// Only write if the key's current ETag is this one.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
        /// `*`: only create; a tag: only write if the current ETag is not this one.
        #[arg(long, value_name = "ETAG|*")]
        if_none_match: Option<String>,
    },
    /// Delete a key. Prints {"status":204}.
    Delete {
        bucket: String,
        key: String,
        /// Only delete if the key's current ETag is this one.
        #[arg(long, value_name = "ETAG")]
        if_match: Option<String>,
    },
    /// List keys in byte order; prints the server's JSON page (or, with --all, every page
    /// merged into one object).
    List {
        bucket: String,
        /// Only keys starting with P.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Keys per page (1 to 1000; the server's default is 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start after this key.
        #[arg(long, value_name = "K")]
        after: Option<String>,
        /// Include values, content types and ETags (`items` instead of `keys`).
        #[arg(long)]
        values: bool,
        /// Follow `next` until the listing ends; print one object with every key.
        #[arg(long)]
        all: bool,
    },
    /// Follow changes under a bucket: one JSON line per event
    /// ({"id":…,"event":"put|delete|expire|overflow","data":{…}}) until the server ends the
    /// stream (exit 0). On `overflow` exits 3 naming the revision to resume from.
    Watch {
        bucket: String,
        /// Only keys starting with P.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Resume: every event after revision R (else only events from now on).
        #[arg(long, value_name = "R")]
        since: Option<u64>,
        /// Include values in `put` events.
        #[arg(long)]
        values: bool,
    },
}

pub(crate) fn run(args: Args) -> ExitCode {
    let client = match Client::new(&args.client) {
        Ok(c) => c,
        Err(f) => return f.report(),
    };
    let result = match args.command {
        KvCommand::Get { bucket, key } => client.block_on(get(&client, &bucket, &key)),
        KvCommand::Put {
            bucket,
            key,
            value,
            file,
            content_type,
            ttl,
            if_match,
            if_none_match,
        } => read_value(value, file.as_deref()).and_then(|v| {
            let opts = PutOpts {
                content_type,
                ttl,
                if_match,
                if_none_match,
            };
            client.block_on(put(&client, &bucket, &key, v, opts))
        }),
        KvCommand::Delete {
            bucket,
            key,
            if_match,
        } => client.block_on(delete(&client, &bucket, &key, if_match)),
        KvCommand::List {
            bucket,
            prefix,
            limit,
            after,
            values,
            all,
        } => {
            let q = ListQuery {
                prefix,
                limit,
                after,
                values,
            };
            client.block_on(list(&client, &bucket, q, all))
        }
        KvCommand::Watch {
            bucket,
            prefix,
            since,
            values,
        } => client.block_on(watch(&client, &bucket, prefix, since, values)),
    };
    result.unwrap_or_else(Failure::report)
}

fn kv_path(bucket: &str, key: &str) -> String {
    format!("/v1/kv/{}/{}", encode_path(bucket), encode_path(key))
}

/// Query string from `(name, value)` pairs, or nothing.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode_query(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Prints one JSON value and a newline (a struct's fields in declaration order).
fn print_json(v: &impl serde::Serialize) -> Result<ExitCode, Failure> {
    let text = serde_json::to_string(v)
        .map_err(|e| Failure::new(format!("cannot write the answer as JSON: {e}")))?;
    Ok(out::print(text + "\n"))
}

async fn get(client: &Client, bucket: &str, key: &str) -> Result<ExitCode, Failure> {
    let a = client
        .send(Call::new(Method::GET, kv_path(bucket, key)))
        .await?;
    Ok(out::print(&a.body))
}

struct PutOpts {
    content_type: Option<String>,
    ttl: Option<u64>,
    if_match: Option<String>,
    if_none_match: Option<String>,
}

/// The value: the argument, the file, or all of stdin.
fn read_value(value: Option<String>, file: Option<&std::path::Path>) -> Result<Bytes, Failure> {
    match (value, file) {
        (Some(v), _) => Ok(Bytes::from(v)),
        (None, Some(f)) => std::fs::read(f)
            .map(Bytes::from)
            .map_err(|e| Failure::new(format!("cannot read {}: {e}", f.display()))),
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
            Ok(Bytes::from(buf))
        }
    }
}

async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    value: Bytes,
    o: PutOpts,
) -> Result<ExitCode, Failure> {
    let path = kv_path(bucket, key) + &query(&[("ttl", o.ttl.map(|t| t.to_string()))]);
    let mut call = Call::new(Method::PUT, path).body(value);
    if let Some(ct) = &o.content_type {
        call = call.header(CONTENT_TYPE, ct)?;
    }
    if let Some(t) = &o.if_match {
        call = call.header(IF_MATCH, t)?;
    }
    if let Some(t) = &o.if_none_match {
        call = call.header(IF_NONE_MATCH, t)?;
    }
    let a = client.send(call).await?;
    #[derive(serde::Serialize)]
    struct Put<'a> {
        status: u16,
        etag: Option<&'a str>,
    }
    let put = Put {
        status: a.status.as_u16(),
        etag: a.header("etag"),
    };
    print_json(&put)
}

async fn delete(
    client: &Client,
    bucket: &str,
    key: &str,
    if_match: Option<String>,
) -> Result<ExitCode, Failure> {
    let mut call = Call::new(Method::DELETE, kv_path(bucket, key));
    if let Some(t) = &if_match {
        call = call.header(IF_MATCH, t)?;
    }
    let a = client.send(call).await?;
    print_json(&json!({"status": a.status.as_u16()}))
}

struct ListQuery {
    prefix: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
    values: bool,
}

impl ListQuery {
    fn path(&self, bucket: &str) -> String {
        format!("/v1/kv/{}", encode_path(bucket))
            + &query(&[
                ("prefix", self.prefix.clone()),
                ("limit", self.limit.map(|l| l.to_string())),
                ("after", self.after.clone()),
                ("values", self.values.then(|| "true".to_owned())),
            ])
    }
}

/// One page, or with `all` every page: `keys` (or `items`) concatenated, `next` null, and the
/// first page's `revision` (later pages may show later writes, so watching from the first
/// page's revision misses nothing).
async fn list(
    client: &Client,
    bucket: &str,
    mut q: ListQuery,
    all: bool,
) -> Result<ExitCode, Failure> {
    let field = if q.values { "items" } else { "keys" };
    let mut merged: Vec<Value> = Vec::new();
    let mut revision = None;
    loop {
        let a = client.send(Call::new(Method::GET, q.path(bucket))).await?;
        if !all {
            let mut body = a.body.to_vec();
            if body.last() != Some(&b'\n') {
                body.push(b'\n');
            }
            return Ok(out::print(body));
        }
        let page: Value = serde_json::from_slice(&a.body)
            .map_err(|e| Failure::new(format!("the list page is not JSON: {e}")))?;
        let Some(Value::Array(items)) = page.get(field) else {
            return Err(Failure::new(format!(
                "the list page has no {field:?} array"
            )));
        };
        if revision.is_none() {
            revision = Some(page.get("revision").cloned().unwrap_or(Value::Null));
        }
        merged.extend(items.iter().cloned());
        match page.get("next") {
            Some(Value::String(next)) => q.after = Some(next.clone()),
            _ => break,
        }
    }
    let mut obj = serde_json::Map::new();
    obj.insert(field.to_owned(), Value::Array(merged));
    obj.insert("next".to_owned(), Value::Null);
    if let Some(r) = revision.filter(|r| !r.is_null()) {
        obj.insert("revision".to_owned(), r);
    }
    print_json(&Value::Object(obj))
}

/// Reads the SSE stream and prints one JSON line per event, flushed at once.
async fn watch(
    client: &Client,
    bucket: &str,
    prefix: Option<String>,
    since: Option<u64>,
    values: bool,
) -> Result<ExitCode, Failure> {
    let path = format!("/v1/watch/{}", encode_path(bucket))
        + &query(&[
            ("prefix", prefix),
            ("since", since.map(|s| s.to_string())),
            ("values", values.then(|| "true".to_owned())),
        ]);
    let call = Call::new(Method::GET, path).header(ACCEPT, "text/event-stream")?;
    let mut body = client.open(call).await?.body;
    let mut sse = Sse::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::new(format!("the watch stream broke: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in sse.push(&data) {
            let overflow = event.event == "overflow";
            let line = event.to_json();
            let code = print_json(&line)?;
            if code != ExitCode::SUCCESS {
                return Ok(code);
            }
            if overflow {
                let from = line.data["resume_from"].to_string();
                return Err(Failure {
                    message: format!(
                        "the watch fell behind and the server ended it; resume with --since \
                         {from} (resume_from={from})"
                    ),
                    code: EXIT_OVERFLOW,
                });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One printed line of `kv watch` (fields in this order).
#[derive(Debug, serde::Serialize)]
struct WatchLine<'a> {
    id: Value,
    event: &'a str,
    data: Value,
}

/// One dispatched server-sent event.
#[derive(Debug, Default, PartialEq)]
struct Event {
    id: Option<String>,
    event: String,
    data: String,
}

impl Event {
    /// `{"id":…,"event":…,"data":…}`: the id as a number when it is one, the data parsed as
    /// JSON when it is JSON (else kept as a string).
    fn to_json(&self) -> WatchLine<'_> {
        let id = match &self.id {
            Some(id) => id
                .parse::<u64>()
                .map_or_else(|_| Value::String(id.clone()), Value::from),
            None => Value::Null,
        };
        let data =
            serde_json::from_str(&self.data).unwrap_or_else(|_| Value::String(self.data.clone()));
        WatchLine {
            id,
            event: &self.event,
            data,
        }
    }
}

/// An incremental `text/event-stream` parser: bytes in, complete events out. Comments
/// (`: keep-alive`) and unknown fields are skipped; lines end in LF, CRLF or CR.
#[derive(Debug, Default)]
struct Sse {
    buf: BytesMut,
    current: Event,
    has_data: bool,
}

impl Sse {
    fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of a CRLF: wait for the next byte.
            if self.buf[end] == b'\r' && end + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[end] == b'\r' && self.buf.get(end + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line = self.buf.split_to(end + skip);
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if let Some(e) = self.line(&line) {
                events.push(e);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.current = Event::default();
                return None;
            }
            self.has_data = false;
            let mut e = std::mem::take(&mut self.current);
            if e.event.is_empty() {
                e.event = "message".to_owned();
            }
            return Some(e);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks_and_line_endings() {
        let mut p = Sse::default();
        let stream = b": keep-alive\n\nid: 1042\nevent: put\ndata: {\"key\":\"a\",\"revision\":1042}\n\nid: 1043\r\nevent: delete\r\ndata: {\"key\":\"b\"}\r\n\r\nevent: overflow\ndata: {\"resume_from\":1043}\n\n";
        let mut events = Vec::new();
        for chunk in stream.chunks(5) {
            events.extend(p.push(chunk));
        }
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            serde_json::to_string(&events[0].to_json()).expect("JSON"),
            r#"{"id":1042,"event":"put","data":{"key":"a","revision":1042}}"#
        );
        assert_eq!(events[1].event, "delete");
        assert_eq!(events[1].id.as_deref(), Some("1043"));
        assert_eq!(
            serde_json::to_string(&events[2].to_json()).expect("JSON"),
            r#"{"id":null,"event":"overflow","data":{"resume_from":1043}}"#
        );
    }

    #[test]
    fn list_query_encodes_every_value() {
        let q = ListQuery {
            prefix: Some("a b/".to_owned()),
            limit: Some(5),
            after: None,
            values: true,
        };
        assert_eq!(
            q.path("app"),
            "/v1/kv/app?prefix=a%20b%2F&limit=5&values=true"
        );
    }
}
