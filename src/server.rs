//! The accept loop, connection serving and graceful shutdown.
//!
//! `run` takes an already bound listener and a shutdown future, so the binary binds the
//! configured address and wires signals, while tests bind `127.0.0.1:0` and shut down when
//! they choose.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::app::App;
use crate::config::Config;
use crate::guards::body::RequestBody;
use crate::ready::Probe;
use crate::response::Body as ResponseBody;
use crate::service;

/// Serves `listener` until `shutdown` resolves, then drains: `/readyz` turns 503 at once,
/// the listener is closed, every connection is told to finish (HTTP/1 closes after the
/// response in flight, HTTP/2 gets GOAWAY), and they get the grace time to do it.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let cfg = &app.cfg;
    let builder = Arc::new(builder(cfg));

    // The open-connections budget: when it is spent the loop waits for a slot instead of
    // accepting, so the kernel backlog absorbs the excess rather than our memory. Getting
    // every slot back is also how the drain knows that all connections are gone.
    let max_connections = cfg.server.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let timers = ConnTimers {
        first_head: cfg.header_read_timeout(),
        idle: cfg.idle_timeout(),
    };
    app.ready.set(Probe::ListenersBound, true);

    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; nothing left to serve if it were
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE, ENOBUFS, ECONNABORTED…: log, back off, carry on.
                    tracing::warn!(cause = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(cause = %e, %peer, "set_nodelay failed");
        }

        // Counts request heads, for the first-head deadline and the idle timer.
        let heads = Arc::new(AtomicU64::new(0));
        let svc_app = Arc::clone(&app);
        let svc_heads = Arc::clone(&heads);
        let svc = service_fn(move |req: Request<Incoming>| {
            svc_heads.fetch_add(1, Ordering::Relaxed);
            let app = Arc::clone(&svc_app);
            async move {
                let answer = AssertUnwindSafe(service::handle(&app, req.map(RequestBody::from)));
                // Handler panics are caught (with their route) inside `handle`; this is the
                // last line for a bug anywhere else in the pipeline.
                let resp = answer
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|payload| service::answer_panic(&app, payload.as_ref()));
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = permit;
            watch_connection(conn, heads, stop, timers, peer).await;
        });
    }

    app.ready.start_draining();
    drop(listener);
    tracing::info!("draining: listener closed, waiting for in-flight requests");
    let _ = stop_tx.send(true);
    let all_closed = slots.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => tracing::info!("drained"),
        () = tokio::time::sleep(cfg.shutdown_grace()) => {
            tracing::warn!(grace_ms = cfg.server.shutdown_grace_ms, "grace time over; closing the remaining connections");
        }
    }
}

/// The connection builder with every protocol limit of the config applied.
fn builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let s = &cfg.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout())
        .keep_alive(true)
        .max_headers(s.h1_max_headers)
        .max_buf_size(s.read_buffer_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(s.h2_max_concurrent_streams)
        .max_header_list_size(s.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(s.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(s.h2_max_local_error_reset_streams);
    builder
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct ConnTimers {
    /// The first request head must arrive within this.
    first_head: Duration,
    /// No new request for this long closes the connection.
    idle: Duration,
}

/// Ticks of the idle clock per idle timeout: the close lands between 1 and 1¼ timeouts after
/// the last request head, for one timer wake-up per quarter timeout instead of a clock read
/// per request.
const IDLE_TICKS: u32 = 4;

/// Drives one connection to its end under the first-head deadline, the idle timer and the
/// server's stop signal.
async fn watch_connection<C>(
    conn: C,
    heads: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    timers: ConnTimers,
    peer: SocketAddr,
) where
    C: Future<Output = Result<(), BoxError>> + GracefulConnection,
{
    tokio::pin!(conn);
    // hyper's HTTP/1 header timer starts only once hyper-util has sniffed the protocol from
    // the first bytes, so a connection that sends nothing would sit forever. This deadline
    // covers the first request head on both protocols; hyper's own timer covers later heads
    // (and so idle keep-alive) on HTTP/1.
    let first_head = tokio::time::sleep(timers.first_head);
    tokio::pin!(first_head);
    let mut awaiting_first = true;
    let tick = timers.idle / IDLE_TICKS;
    let mut idle_clock = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    let (mut seen, mut quiet) = (0, 0);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(cause = %e, %peer, "connection ended with an error");
                }
                return;
            }
            () = &mut first_head, if awaiting_first => {
                if heads.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "closing connection: no request head in time");
                    return;
                }
                awaiting_first = false;
            }
            _ = idle_clock.tick(), if !closing => {
                let now = heads.load(Ordering::Relaxed);
                quiet = if now == seen { quiet + 1 } else { 0 };
                seen = now;
                if quiet >= IDLE_TICKS {
                    tracing::debug!(%peer, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stop.wait_for(|stopping| *stopping), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The one thing the watcher needs of a hyper-util connection besides being a future.
trait GracefulConnection {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S> GracefulConnection for auto::Connection<'static, TokioIo<TcpStream>, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = ResponseBody>,
    S::Error: Into<BoxError>,
    TokioExecutor: auto::HttpServerConnExec<S::Future, ResponseBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}
