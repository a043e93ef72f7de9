//! The accept loop, connection serving and graceful shutdown.
//!
//! `run` takes an already bound listener and a shutdown future, so the binary binds the
//! configured address and wires signals, while tests bind `127.0.0.1:0` and shut down when
//! they choose.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::guards::body::RequestBody;
use crate::ready::Probe;
use crate::service;

/// HTTP/2 streams one connection may have open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Serves `listener` until `shutdown` resolves, then drains: `/readyz` turns 503 at once,
/// the listener is closed, and open connections get the grace time to finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let cfg = &app.cfg;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout())
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);

    // The open-connections budget: when it is spent the loop waits for a slot instead of
    // accepting, so the kernel backlog absorbs the excess rather than our memory.
    let slots = Arc::new(Semaphore::new(cfg.server.max_connections));
    let graceful = GracefulShutdown::new();
    let header_timeout = cfg.header_read_timeout();
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

        // Set by the first request head; until then the connection is on the header clock.
        let saw_request = Arc::new(AtomicBool::new(false));
        let svc_app = Arc::clone(&app);
        let svc_seen = Arc::clone(&saw_request);
        let svc = service_fn(move |req: Request<Incoming>| {
            svc_seen.store(true, Ordering::Relaxed);
            let app = Arc::clone(&svc_app);
            async move { Ok::<_, Infallible>(service::handle(&app, req.map(RequestBody::from)).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = permit;
            tokio::pin!(conn);
            // hyper's HTTP/1 header timer starts only once hyper-util has sniffed the protocol
            // from the first bytes, so a connection that sends nothing would sit forever. This
            // deadline covers the first request head on both protocols; hyper's own timer
            // covers later heads on HTTP/1.
            let first_head = tokio::time::sleep(header_timeout);
            tokio::pin!(first_head);
            let result = tokio::select! {
                r = &mut conn => r,
                () = &mut first_head => {
                    if saw_request.load(Ordering::Relaxed) {
                        conn.await
                    } else {
                        tracing::debug!(%peer, "closing connection: no request head in time");
                        return;
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(cause = %e, %peer, "connection ended with an error");
            }
        });
    }

    app.ready.start_draining();
    drop(listener);
    tracing::info!("draining: listener closed, waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(cfg.shutdown_grace()) => {
            tracing::warn!(grace_ms = cfg.server.shutdown_grace_ms, "grace time over; closing the remaining connections");
        }
    }
}
