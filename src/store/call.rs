//! [`StoreCall`]: the answer of an engine call, complete at once or later — and
//! [`StoreError`], what a failed call says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What kind of failure a [`StoreError`] is. The HTTP layer maps kinds to statuses in one
/// place (`handlers/kv.rs`); engines only say what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A condition of the write (`If-Match`, `If-None-Match`) did not hold.
    Precondition,
    /// The key a write needed is not there (a DELETE of a missing key).
    NotFound,
    /// A quota refused the write.
    Quota,
    /// The engine cannot answer now but may soon (a lost connection, a closing store):
    /// the caller may retry.
    Unavailable,
    /// The disk (or the database) is full; reads still work.
    DiskFull,
    /// Anything else: a bug, corruption, an I/O error that will not go away by retrying.
    Internal,
}

/// A failed engine call: a kind, a short message for the log, and the underlying cause.
/// Cheap to clone (the cause is shared), because one group-commit failure answers many
/// writers.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}{}", cause_suffix(.source))]
pub struct StoreError {
    kind: ErrorKind,
    message: &'static str,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// ": cause: its cause: …", the whole chain: some causes name only their kind ("db error",
/// "error performing TLS handshake") and leave the reason to their own source. One line of
/// each: PostgreSQL's DETAIL lines may quote row data, which has no place in a log.
fn cause_suffix(source: &Option<Arc<dyn std::error::Error + Send + Sync>>) -> String {
    let mut out = String::new();
    let mut next = source
        .as_deref()
        .map(|s| s as &(dyn std::error::Error + 'static));
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(e.to_string().lines().next().unwrap_or_default());
        next = e.source();
    }
    out
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: &'static str) -> StoreError {
        StoreError {
            kind,
            message,
            source: None,
        }
    }

    /// The same error with its cause attached (shown in the log line, never to a client).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn precondition() -> StoreError {
        StoreError::new(ErrorKind::Precondition, "precondition failed")
    }

    pub fn not_found() -> StoreError {
        StoreError::new(ErrorKind::NotFound, "not found")
    }

    pub fn internal(message: &'static str) -> StoreError {
        StoreError::new(ErrorKind::Internal, message)
    }

    /// An I/O error: `ENOSPC` / `EDQUOT` are [`ErrorKind::DiskFull`], anything else
    /// [`ErrorKind::Internal`].
    pub fn io(message: &'static str, e: std::io::Error) -> StoreError {
        let kind = if is_disk_full(&e) {
            ErrorKind::DiskFull
        } else {
            ErrorKind::Internal
        };
        StoreError::new(kind, message).with_source(e)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The attached cause itself, to inspect by type (`downcast_ref`). Not the same as
    /// [`std::error::Error::source`], which goes through the shared wrapper and so never
    /// downcasts to the cause's type.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

/// Whether an I/O error means "no space left" (`ENOSPC`, or `EDQUOT` for a user quota).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The answer of an engine call. Engines that finish at once (`sled` and `mem` reads, writes in
/// `periodic` mode) return [`StoreCall::ready`]: no future is allocated and a `sync` handler
/// can take the result with [`StoreCall::into_ready`] without polling. Engines that wait — a
/// group commit in `sync` mode, a network round trip — return [`StoreCall::pending`].
/// The same trick as the service's `Answer`.
pub struct StoreCall<T>(Inner<T>);

enum Inner<T> {
    Ready(Option<Result<T, StoreError>>),
    Pending(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>),
}

impl<T> StoreCall<T> {
    pub fn ready(result: Result<T, StoreError>) -> StoreCall<T> {
        StoreCall(Inner::Ready(Some(result)))
    }

    pub fn pending(fut: impl Future<Output = Result<T, StoreError>> + Send + 'static) -> Self {
        StoreCall(Inner::Pending(Box::pin(fut)))
    }

    /// The result if the call completed at once; the call itself if it has to be awaited.
    pub fn into_ready(self) -> Result<Result<T, StoreError>, StoreCall<T>> {
        match self.0 {
            Inner::Ready(Some(r)) => Ok(r),
            other => Err(StoreCall(other)),
        }
    }

    /// Whether the result is already there.
    pub fn is_ready(&self) -> bool {
        matches!(self.0, Inner::Ready(Some(_)))
    }

    /// Maps the success value. Free on a ready call; a pending call gets a new box.
    pub fn map<U>(self, f: impl FnOnce(T) -> Result<U, StoreError> + Send + 'static) -> StoreCall<U>
    where
        T: Send + 'static,
    {
        match self.0 {
            Inner::Ready(r) => StoreCall(Inner::Ready(r.map(|r| r.and_then(f)))),
            Inner::Pending(fut) => StoreCall::pending(async move { fut.await.and_then(f) }),
        }
    }
}

// The ready value is never pinned in place (it is moved out whole), so the call is `Unpin`
// whatever `T` is.
impl<T> Unpin for StoreCall<T> {}

impl<T> Future for StoreCall<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            // A second poll after `Ready` would be a caller bug; it just never completes.
            Inner::Ready(r) => r.take().map_or(Poll::Pending, Poll::Ready),
            Inner::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for StoreCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Ready(_) => "StoreCall::Ready",
            Inner::Pending(_) => "StoreCall::Pending",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_calls_answer_without_polling_and_map_in_place() {
        let call = StoreCall::ready(Ok(2)).map(|v| Ok(v * 10));
        assert!(call.is_ready());
        assert_eq!(call.into_ready().expect("ready").expect("ok"), 20);
        let call: StoreCall<u8> = StoreCall::pending(async { Ok(1) });
        assert!(!call.is_ready());
        assert!(call.into_ready().is_err(), "a pending call must be awaited");
    }

    /// A cause that names only its kind, with the reason in its own source and a second line.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("db error\nDETAIL: Failing row contains (secret)")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_whole_cause_chain_is_shown_one_line_each() {
        let e = StoreError::new(ErrorKind::Internal, "cannot write")
            .with_source(Outer(std::io::Error::other("the reason")));
        assert_eq!(e.to_string(), "cannot write: db error: the reason");
    }

    #[test]
    fn disk_full_is_its_own_kind_and_the_cause_is_logged() {
        let e = StoreError::io("flush failed", std::io::Error::from_raw_os_error(28));
        assert_eq!(e.kind(), ErrorKind::DiskFull);
        assert!(e.to_string().starts_with("flush failed: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let io = e.cause().and_then(|c| c.downcast_ref::<std::io::Error>());
        assert!(io.is_some(), "the cause downcasts to its own type");
        let e = StoreError::io("read failed", std::io::Error::other("boom"));
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
