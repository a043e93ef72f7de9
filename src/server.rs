//! The accept loop, connection serving and graceful shutdown.
//!
//! `run` takes an already bound listener and a shutdown future, so the binary binds the
//! configured address and wires signals, while tests bind `127.0.0.1:0` and shut down when
//! they choose.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::app::App;
use crate::config::Config;
use crate::ready::Probe;
use crate::service::{self, Service};
use crate::wire::{ConnInfo, RequestBody};

/// How an accepted TCP connection becomes the byte stream HTTP is served over: as it is, or
/// after a handshake (TLS). The handshake runs in the connection's own task, bounded by the
/// header read timeout and holding a slot of the connection budget, so a client that never
/// finishes it costs one slot for one header timeout, like a slowloris head.
pub trait Transport: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Completes the handshake; may add what it learned (a peer identity) to `conn`.
    fn handshake(
        &self,
        tcp: TcpStream,
        conn: &mut ConnInfo,
    ) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

/// Plain TCP: no handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainTcp;

impl Transport for PlainTcp {
    type Io = TcpStream;

    fn handshake(
        &self,
        tcp: TcpStream,
        _conn: &mut ConnInfo,
    ) -> impl Future<Output = std::io::Result<TcpStream>> + Send {
        std::future::ready(Ok(tcp))
    }
}

/// Serves `listener` over plain TCP until `shutdown` resolves; see [`run_with`].
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    run_with(listener, app, PlainTcp, shutdown).await;
}

/// Serves `listener` until `shutdown` resolves, then drains: `/readyz` turns 503 at once,
/// the listener is closed, every connection is told to finish (HTTP/1 closes after the
/// response in flight, HTTP/2 gets GOAWAY), and they get the grace time to do it.
pub async fn run_with<T: Transport>(
    listener: TcpListener,
    app: Arc<App>,
    transport: T,
    shutdown: impl Future<Output = ()>,
) {
    let cfg = &app.cfg;
    let builder = Arc::new(builder(cfg));
    let service = Arc::new(Service::new(Arc::clone(&app)));
    let transport = Arc::new(transport);

    // The open-connections budget: when it is spent the loop waits for a slot instead of
    // accepting, so the kernel backlog absorbs the excess rather than our memory. Getting
    // every slot back is also how the drain knows that all connections are gone.
    let max_connections = cfg.server.max_connections;
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    app.ready.set(Probe::ListenersBound, true);
    let expire_log = app
        .audit
        .is_some()
        .then(|| Arc::clone(&app) as Arc<dyn crate::store::ttl::ExpireLog>);
    tokio::spawn(crate::store::ttl::sweeper(
        Arc::clone(&app.store),
        Arc::clone(&app.metrics),
        app.streams.stopping(),
        expire_log,
    ));
    if app.auth.is_some() {
        tokio::spawn(crate::app::follow_revocations(
            Arc::clone(&app),
            app.streams.stopping(),
        ));
    }

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
        // The clocks of the configuration in force when the connection came (reloadable).
        let now_cfg = app.config();
        let timers = ConnTimers {
            header: now_cfg.header_read_timeout(),
            idle: now_cfg.idle_timeout(),
        };
        let conn = Connection {
            service: Arc::clone(&service),
            builder: Arc::clone(&builder),
            transport: Arc::clone(&transport),
            stop: stop_rx.clone(),
            timers,
        };
        tokio::spawn(async move {
            let _slot = permit;
            conn.serve(stream, peer).await;
        });
    }

    app.ready.start_draining();
    // Watch streams end cleanly now rather than being cut at the end of the grace time.
    app.streams.stop();
    drop(listener);
    tracing::info!("draining: listener closed, waiting for in-flight requests");
    let _ = stop_tx.send(true);
    let all_closed = slots.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => tracing::info!("drained"),
        () = tokio::time::sleep(app.config().shutdown_grace()) => {
            tracing::warn!(grace_ms = app.config().server.shutdown_grace_ms, "grace time over; closing the remaining connections");
        }
    }
}

/// What one connection's task needs from the server.
struct Connection<T> {
    service: Arc<Service>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    transport: Arc<T>,
    stop: watch::Receiver<bool>,
    timers: ConnTimers,
}

impl<T: Transport> Connection<T> {
    /// Handshake, then HTTP until the connection ends or the watchdog closes it.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr) {
        let mut info = ConnInfo { peer, tls: None };
        let mut stop = self.stop.clone();
        let io = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => return,
            r = tokio::time::timeout(self.timers.header, self.transport.handshake(tcp, &mut info)) => match r {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => {
                    tracing::debug!(cause = %e, %peer, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "handshake not finished within the header timeout");
                    return;
                }
            },
        };

        // One per connection: the pipeline, what the connection knows, and the counters the
        // watchdog reads.
        let conn_state = Arc::new(ConnState {
            service: self.service,
            info: Arc::new(info),
            heads: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        });
        let svc_state = Arc::clone(&conn_state);
        let svc = service_fn(move |req: Request<Incoming>| {
            let inflight = InFlight::enter(&svc_state);
            if req.version() == Version::HTTP_2 {
                inflight.0.h2.store(true, Ordering::Relaxed);
            }
            let state = &inflight.0;
            // Handler panics are caught (with their route) inside `handle`, and the waiting path
            // catches its own; this is the last line for a bug anywhere else in the pipeline.
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                state
                    .service
                    .handle(&state.info, req.map(RequestBody::from))
            }))
            .unwrap_or_else(|payload| {
                service::Answer::now(service::answer_panic(&state.service.app, payload.as_ref()))
            });
            answer.map(move |resp| {
                drop(inflight);
                Ok::<_, Infallible>(resp)
            })
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), svc)
            .into_owned();
        let (close_tx, close_rx) = oneshot::channel();
        tokio::spawn(watchdog(close_tx, conn_state, self.stop, self.timers, peer));
        drive(conn, close_rx, peer).await;
    }
}

/// The connection builder with every protocol limit of the config applied.
fn builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let s = &cfg.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header timer: re-arming it costs a clock read and a timer-wheel update per
    // request; the connection watchdog enforces the same bound from two counters instead.
    builder
        .http1()
        .header_read_timeout(None)
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

/// What the service of one connection shares with its watchdog.
struct ConnState {
    service: Arc<Service>,
    info: Arc<ConnInfo>,
    /// Request heads received.
    heads: AtomicU64,
    /// Requests whose future ended (so `heads - answered` are in flight).
    answered: AtomicU64,
    /// Set by the first HTTP/2 request.
    h2: AtomicBool,
}

/// One request in flight on a connection: counted in at the head, out when its future ends,
/// answered or dropped (a reset stream, a closed connection).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: &Arc<ConnState>) -> InFlight {
        state.heads.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct ConnTimers {
    /// A request head must arrive within this: the first one, and on HTTP/1 every next one
    /// once the previous answer is out (slowloris, idle keep-alive).
    header: Duration,
    /// No new request for this long closes the connection.
    idle: Duration,
}

/// Watchdog ticks per timeout: a close lands between 1 and 1¼ timeouts after the connection
/// went quiet, for one timer wake-up per quarter timeout instead of timer work per request.
const TICKS: u32 = 4;

/// How the watchdog asks a connection to end.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// Drop it: no request head ever came.
    Now,
    /// Finish what is in flight, then close (HTTP/2: GOAWAY).
    Graceful,
}

/// Drives one connection to its end. The hot path polls the connection and one oneshot
/// receiver, nothing else: the clocks live in the connection's [`watchdog`] task, so a busy
/// connection never touches a timer.
async fn drive<C>(conn: C, close: oneshot::Receiver<Close>, peer: SocketAddr)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        why = close => match why {
            Ok(Close::Now) => {
                tracing::debug!(%peer, "closing connection: no request head in time");
                return;
            }
            Ok(Close::Graceful) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            // The watchdog only ends without a word once this task is gone; not reached.
            Err(_) => conn.await,
        },
    };
    if let Err(e) = result {
        tracing::debug!(cause = %e, %peer, "connection ended with an error");
    }
}

/// The clocks of one connection, in their own task, ending as soon as the connection does:
/// - no request head within the header timeout of the connection opening → dropped;
/// - HTTP/1 with nothing in flight and no new head for the header timeout (an idle keep-alive
///   or a head dribbled byte by byte) → graceful close, which hyper makes immediate between
///   messages;
/// - no new request for the idle timeout → graceful close (HTTP/2: GOAWAY);
/// - the server's stop signal → graceful close.
async fn watchdog(
    mut close: oneshot::Sender<Close>,
    state: Arc<ConnState>,
    mut stop: watch::Receiver<bool>,
    timers: ConnTimers,
    peer: SocketAddr,
) {
    let tick = timers.header.min(timers.idle) / TICKS;
    let mut clock = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    let (mut seen, mut quiet) = (0, Duration::ZERO);
    let why = loop {
        tokio::select! {
            () = close.closed() => return,
            _ = stop.wait_for(|stopping| *stopping) => break Close::Graceful,
            _ = clock.tick() => {}
        }
        let heads = state.heads.load(Ordering::Relaxed);
        let busy = heads != state.answered.load(Ordering::Relaxed);
        if busy || heads != seen {
            (seen, quiet) = (heads, Duration::ZERO);
            continue;
        }
        quiet += tick;
        if heads == 0 && quiet >= timers.header {
            break Close::Now; // never sent a request head
        }
        let h2 = state.h2.load(Ordering::Relaxed);
        if !h2 && quiet >= timers.header {
            // HTTP/1: the next head did not come in time. Graceful, not dropped: hyper closes
            // at once a connection that is between messages (idle, or mid-way through a
            // dribbled head) and lets one still writing the last answer — a large value to a
            // slow reader — finish it first.
            break Close::Graceful;
        }
        if quiet >= timers.idle {
            tracing::debug!(%peer, "closing idle connection");
            break Close::Graceful;
        }
    };
    let _ = close.send(why);
}
