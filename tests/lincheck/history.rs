//! What a history is: one record per client request — who sent it, on which key, what it asked,
//! when it was sent, and when and how it was answered (or that it never was).

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Nanoseconds since the history's clock started.
pub type Time = u64;

/// The precondition a write carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    None,
    /// `If-Match: <etag>` (the ETag exactly as the server sent it; never parsed).
    IfMatch(String),
    /// `If-None-Match: *` (create-only).
    IfNoneMatchAny,
}

/// What the client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    Get,
    /// Every PUT writes a value no other PUT writes, so the value names the write.
    Put {
        value: String,
        cond: Cond,
    },
    Delete {
        cond: Cond,
    },
    /// `POST /v1/txn` on one key: if `cond` holds (`IfMatch(tag)`: an `etag` compare;
    /// `IfNoneMatchAny`: `exists: false`; `None`: no compare), then put `value`, else get the
    /// key — judged and applied at one point. Like a PUT, `value` names the write.
    Txn {
        value: String,
        cond: Cond,
    },
}

/// What the server answered, reduced to what it claims about the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    /// GET 200 with this body and ETag; or a txn whose compare did not hold, whose else-branch
    /// get found this value with this ETag.
    Found { value: String, etag: String },
    /// 404 (GET or DELETE): the key is absent; or a txn whose compare did not hold, whose
    /// else-branch get found nothing.
    NotFound,
    /// PUT 201 (`created`) or 204, with the new ETag.
    Written { created: bool, etag: String },
    /// DELETE 204.
    Deleted,
    /// 412: the precondition did not hold.
    PreconditionFailed,
    /// A txn answered `succeeded: true`: its put wrote the value, with this ETag.
    TxnApplied { etag: String },
}

/// One operation. `ret == None` means indeterminate: the request was sent but no answer came
/// (timeout, connection died, server killed, or a 5xx): it may have taken effect at any point
/// after `invoke`, or never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub call: Call,
    pub invoke: Time,
    pub ret: Option<(Time, Ret)>,
}

fn ms(t: Time) -> String {
    format!("{:.3}ms", t as f64 / 1e6)
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::None => Ok(()),
            Cond::IfMatch(tag) => write!(f, " if-match {tag}"),
            Cond::IfNoneMatchAny => f.write_str(" if-none-match *"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match &self.ret {
            Some((t, _)) => ms(*t),
            None => "never".to_owned(),
        };
        write!(
            f,
            "client {:>2} [{} .. {}] ",
            self.client,
            ms(self.invoke),
            end
        )?;
        match &self.call {
            Call::Get => write!(f, "GET {}", self.key)?,
            Call::Put { value, cond } => write!(f, "PUT {} = {value:?}{cond}", self.key)?,
            Call::Delete { cond } => write!(f, "DELETE {}{cond}", self.key)?,
            Call::Txn { value, cond } => {
                let k = &self.key;
                match cond {
                    Cond::None => write!(f, "TXN {k}: PUT {value:?}")?,
                    Cond::IfMatch(tag) => write!(f, "TXN if {k} etag {tag}")?,
                    Cond::IfNoneMatchAny => write!(f, "TXN if {k} absent")?,
                }
                if *cond != Cond::None {
                    write!(f, " then PUT {value:?} else GET")?;
                }
            }
        }
        let txn = matches!(self.call, Call::Txn { .. });
        match &self.ret {
            None => {
                f.write_str(" -> ? (no answer: may take effect any time after the call, or never)")
            }
            Some((_, Ret::Found { value, etag })) if txn => {
                write!(f, " -> else, found {value:?} etag {etag}")
            }
            Some((_, Ret::NotFound)) if txn => f.write_str(" -> else, not found"),
            Some((_, Ret::Found { value, etag })) => write!(f, " -> 200 {value:?} etag {etag}"),
            Some((_, Ret::NotFound)) => f.write_str(" -> 404"),
            Some((_, Ret::Written { created, etag })) => {
                write!(f, " -> {} etag {etag}", if *created { 201 } else { 204 })
            }
            Some((_, Ret::Deleted)) => f.write_str(" -> 204"),
            Some((_, Ret::PreconditionFailed)) => f.write_str(" -> 412"),
            Some((_, Ret::TxnApplied { etag })) => write!(f, " -> applied, etag {etag}"),
        }
    }
}

/// A recorded history: operations plus notes about the server's life (restarts, kills), which
/// the checker ignores and a witness prints for orientation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub events: Vec<(Time, String)>,
}

/// Collects a history from concurrent clients against one clock.
pub struct Recorder {
    start: Instant,
    inner: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(History::default()),
        }
    }
}

impl Recorder {
    pub fn now(&self) -> Time {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a test runs for less than 584 years")
    }

    pub fn record(&self, op: Op) {
        self.inner.lock().expect("recorder lock").ops.push(op);
    }

    pub fn event(&self, what: impl Into<String>) {
        let t = self.now();
        self.inner
            .lock()
            .expect("recorder lock")
            .events
            .push((t, what.into()));
    }

    pub fn snapshot(&self) -> History {
        self.inner.lock().expect("recorder lock").clone()
    }
}
