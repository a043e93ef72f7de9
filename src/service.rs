//! The per-request pipeline, in the order docs/API.md gives: request id → metrics timer → route match →
//! rate limit → decode guard → body cap → concurrency permit → timeout → handler. Everything
//! before the handler looks at the request head only; the body is first polled by a handler.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
    VARY,
};
use http::request::Parts;
use http::{HeaderValue, Method, Request};
use tracing::Instrument;

use crate::app::{App, valid_request_id};
use crate::error::{ApiError, Code};
use crate::guards::auth::Access;
use crate::guards::budget::Permit;
use crate::guards::rate_limit::{TokenBucket, retry_after_secs};
use crate::guards::{BodyPlan, Bound, Bucket, check_head};
use crate::handlers::{self, Cx, Detached, Step};
use crate::response::{self, Resp};
use crate::router::{Endpoint, Plane, ROUTES, RouteId, Router, UNMATCHED};
use crate::wire::{ConnInfo, PathParams, Query, RequestBody, Verb, X_REQUEST_ID};

mod trail;
use trail::Who;

/// The answer to one request: ready now (the fast path — no future, no allocation beyond the
/// response), or a boxed future for the endpoints that have to wait (a body, a commit, a
/// tarpit, a dev sleep).
pub struct Answer(Inner);

enum Inner {
    Now(Option<Resp>),
    Later(Pin<Box<dyn Future<Output = Resp> + Send>>),
}

impl Answer {
    pub fn now(resp: Resp) -> Answer {
        Answer(Inner::Now(Some(resp)))
    }
}

impl Future for Answer {
    type Output = Resp;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resp> {
        match &mut self.0 {
            // A second poll after `Ready` would be a caller bug; it just never completes.
            Inner::Now(resp) => resp.take().map_or(Poll::Pending, Poll::Ready),
            Inner::Later(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// The request pipeline of one server: the shared state and the route table it matches
/// against. The server builds one and every connection shares it.
#[derive(Debug)]
pub struct Service {
    pub app: Arc<App>,
    router: Router,
}

impl Service {
    pub fn new(app: Arc<App>) -> Service {
        let router = Router::new(app.cfg.dev.routes, app.cfg.dev.metrics);
        Service { app, router }
    }

    /// Answers one request. Never fails: every error becomes an envelope here.
    pub fn handle(self: &Arc<Self>, conn: &Arc<ConnInfo>, req: Request<RequestBody>) -> Answer {
        let app = &self.app;
        let start = Instant::now();
        let (head, body) = req.into_parts();
        let request_id = match head.headers.get(&X_REQUEST_ID) {
            Some(v) if valid_request_id(v) => {
                let mut v = v.clone();
                v.set_sensitive(true); // per-request value: never worth an HPACK table entry
                v
            }
            _ => app.new_request_id(),
        };
        let verb = Verb::of(&head.method);
        // One atomic load while CORS is off.
        let cors = app.live.cors_origin(head.headers.get(ORIGIN));

        let (route, result) = match check_protocol_limits(app, &head) {
            Err(e) => (UNMATCHED, Err(e)),
            Ok(()) => match self.router.at(head.uri.path()) {
                None => (UNMATCHED, Err(ApiError::NotFound)),
                Some((id, _)) if cors.is_some() && is_preflight(&head) => {
                    (id, Ok(preflight(self.router.allow(id))))
                }
                Some((id, params)) => match ROUTES[id].endpoint(verb) {
                    None => (
                        id,
                        Err(ApiError::MethodNotAllowed {
                            allow: self.router.allow(id).clone(),
                        }),
                    ),
                    Some(ep) if waits(app, ep) => {
                        let req = Owned {
                            start,
                            route: id,
                            ep,
                            verb,
                            params,
                            head,
                            body,
                            request_id,
                            cors,
                        };
                        return later(Arc::clone(app), Arc::clone(conn), req);
                    }
                    Some(ep) => {
                        let matched = Matched {
                            ep,
                            verb,
                            conn,
                            head: &head,
                            params,
                            request_id: &request_id,
                        };
                        match run_now(app, matched, body) {
                            Ran::Done(result) => (id, result),
                            Ran::Detached(rest) => {
                                let ended = Ended {
                                    start,
                                    route: id,
                                    verb,
                                    method: head.method,
                                    request_id,
                                    cors,
                                };
                                return detached(Arc::clone(app), ended, ep, rest);
                            }
                        }
                    }
                },
            },
        };
        let ended = Ended {
            start,
            route,
            verb,
            method: head.method,
            request_id,
            cors,
        };
        Answer::now(finish(app, ended, result))
    }
}

/// Whether an endpoint may have to wait, and so runs as a boxed future.
fn waits(app: &App, ep: &Endpoint) -> bool {
    let tarpit = app.live.tarpit_ms() > 0
        && match ep.guards.bucket {
            Bucket::None => false,
            Bucket::Global => app.rl_global().is_some(),
            Bucket::Dev => true,
        };
    tarpit || handlers::waits(ep.handler, app)
}

/// A matched request that waits: everything it needs, owned by its boxed future.
struct Owned {
    start: Instant,
    route: RouteId,
    ep: &'static Endpoint,
    verb: Verb,
    params: PathParams,
    head: Parts,
    body: RequestBody,
    request_id: HeaderValue,
    /// The allowed CORS origin of the request, to echo back.
    cors: Option<HeaderValue>,
}

/// The waiting path: the request moves into a boxed future that owns it. The route was
/// matched once, on the way in; its parameters travel as ranges of the owned path.
fn later(app: Arc<App>, conn: Arc<ConnInfo>, req: Owned) -> Answer {
    Answer(Inner::Later(Box::pin(async move {
        let Owned {
            start,
            route,
            ep,
            verb,
            params,
            head,
            body,
            request_id,
            cors,
        } = req;
        let run = async {
            let span = tracing::debug_span!(
                "request",
                request_id = ?request_id,
                method = %head.method,
                route = ROUTES[route].template,
            );
            let matched = Matched {
                ep,
                verb,
                conn: &conn,
                head: &head,
                params,
                request_id: &request_id,
            };
            let result = run_waiting(&app, matched, body).instrument(span).await;
            let ended = Ended {
                start,
                route,
                verb,
                method: head.method,
                request_id,
                cors,
            };
            finish(&app, ended, result)
        };
        AssertUnwindSafe(run)
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| answer_panic(&app, payload.as_ref()))
    })))
}

/// Error envelope, HEAD stripping, request id, CORS headers, metrics, error window, debug
/// access line.
fn finish(app: &App, e: Ended, result: Result<Resp, ApiError>) -> Resp {
    let Ended {
        start,
        route,
        verb,
        method,
        request_id,
        cors,
    } = e;
    let method = &method;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            app.metrics.reject(err.code());
            err.into_response(&request_id)
        }
    };
    if *method == Method::HEAD {
        resp = response::strip_body_for_head(resp);
    }
    let status = resp.status().as_u16();
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    if let Some(origin) = cors {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(VARY, HeaderValue::from_static("Origin"));
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    } else if app.live.cors_on() {
        // The answer would differ for an allowed origin: shared caches must know.
        resp.headers_mut()
            .append(VARY, HeaderValue::from_static("Origin"));
    }
    let now = Instant::now();
    let elapsed = now.duration_since(start);
    app.metrics.observe_request(route, verb, status, elapsed);
    if let Some(times) = &app.service_times {
        times.record(route, elapsed);
    }
    if (route == UNMATCHED || ROUTES[route].plane != Plane::Admin)
        && status != Code::QuotaStorage.status().as_u16()
    {
        // Admin answers stay out of the error window: a 503 from /readyz must not feed the
        // gate that produced it. So does a tenant's 507 over its own storage quota: one
        // tenant must not make the node unready for all.
        app.ready.record(now, status);
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let route_label = ROUTES.get(route).map_or("unmatched", |r| r.template);
        tracing::debug!(
            request_id = ?resp.headers().get(&X_REQUEST_ID),
            method = %method,
            route = route_label,
            status,
            micros = now.duration_since(start).as_micros() as u64,
            "request"
        );
    }
    resp
}

/// Response headers a browser script may read on a cross-origin answer.
const EXPOSED: HeaderValue = HeaderValue::from_static(
    "ETag, Micronode-Revision, Micronode-Expires-At, Micronode-Oldest-Revision, Retry-After, x-request-id",
);
/// Request headers a cross-origin script may send.
const ALLOWED_HEADERS: HeaderValue = HeaderValue::from_static(
    "authorization, content-type, if-match, if-none-match, x-request-id, last-event-id",
);

/// A CORS preflight: `OPTIONS` with `Access-Control-Request-Method`.
fn is_preflight(head: &Parts) -> bool {
    head.method == Method::OPTIONS && head.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed origin: 204 naming the route's methods (its
/// exact `Allow`) and the headers a script may send; `finish` adds the origin. It needs no
/// token and takes no budget.
fn preflight(allow: &HeaderValue) -> Resp {
    let mut resp = response::empty(http::StatusCode::NO_CONTENT);
    let h = resp.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_METHODS, allow.clone());
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS);
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    resp
}

/// Protocol limits judged before the route table is consulted, on both HTTP versions: path
/// and query length (414) and the summed size of the header fields (431).
fn check_protocol_limits(app: &App, head: &Parts) -> Result<(), ApiError> {
    let limits = &app.cfg.server;
    let uri_len = head.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(ApiError::UriTooLong {
            limit: limits.max_uri_bytes,
        });
    }
    // As on the wire in HTTP/1: "name: value\r\n".
    let header_bytes: usize = head
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ApiError::HeaderTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    Ok(())
}

/// A request matched to an endpoint, as its guards and handler see it.
#[derive(Clone, Copy)]
struct Matched<'a> {
    ep: &'a Endpoint,
    verb: Verb,
    conn: &'a ConnInfo,
    head: &'a Parts,
    params: PathParams,
    request_id: &'a HeaderValue,
}

/// The guards after the rate limit, on the head alone — decode guard, body cap, store
/// readiness, concurrency permit — then the handler's context. The permit is held by the
/// caller until the answer is built.
///
/// With an audit trail, `who` is filled from the verified token when the route is audited or
/// the token is refused (403), for the request's audit line.
fn admit<'a>(
    app: &'a App,
    m: Matched<'a>,
    body: RequestBody,
    who: &mut Option<Who>,
) -> Result<(Cx<'a>, Option<Permit<'a>>), ApiError> {
    let guards = m.ep.guards;
    let query = match m.head.uri.query() {
        Some(raw) => Query::parse(raw, m.ep.query).map_err(ApiError::BadRequest)?,
        None => Query::default(),
    };
    let token = match &app.auth {
        None => None,
        Some(state) => authorize(app, state, &m, &query, who)?,
    };
    if app.audit.is_some() && trail::audited(m.ep.handler) {
        *who = token.as_ref().map(Who::of);
    }
    if app.tenants.active() && guards.bucket == Bucket::Global {
        let tenant = token
            .as_ref()
            .map_or(crate::config::DEFAULT_TENANT, |t| t.tenant());
        app.tenants
            .admit(tenant, Instant::now())
            .map_err(|wait| ApiError::Quota {
                retry_after_secs: retry_after_secs(wait),
            })?;
    }
    let plan = if guards.edge {
        check_head(m.verb, &m.head.headers, app.head_limits())?
    } else {
        BodyPlan::default()
    };
    if guards.needs_store && !app.store.health() {
        return Err(ApiError::StorageUnavailable);
    }
    let permit = match guards.budget {
        Some(id) => Some(app.budget(id).try_acquire().ok_or(ApiError::Concurrency)?),
        None => None,
    };
    let cx = Cx {
        app,
        conn: m.conn,
        head: m.head,
        params: m.params,
        request_id: m.request_id,
        query,
        token,
        plan,
        body,
    };
    Ok((cx, permit))
}

/// The token check of an endpoint (auth on): `None` for the open ones.
fn authorize(
    app: &App,
    state: &crate::app::AuthState,
    m: &Matched<'_>,
    query: &Query,
    who: &mut Option<Who>,
) -> Result<Option<crate::auth::Verified>, ApiError> {
    let access = m.ep.access;
    if access == Access::Open {
        return Ok(None);
    }
    let cfg = app.config();
    if matches!(access, Access::Meta(_)) && cfg.auth.open_metrics {
        return Ok(None);
    }
    let path = m.head.uri.path();
    let bucket = m
        .params
        .get(path, "bucket")
        .filter(|b| handlers::kv::valid_bucket(b));
    let key = m
        .params
        .get(path, "key")
        .and_then(|k| handlers::kv::decode_key(k).ok());
    let req = crate::guards::auth::Request {
        headers: &m.head.headers,
        bucket,
        key: key.as_deref(),
        query,
    };
    let verified = crate::guards::auth::verify(state, cfg.auth.leeway_ms, &app.metrics, &req)?;
    if let Err(e) = crate::guards::auth::decide(&app.metrics, &verified, access, &req) {
        if app.audit.is_some() {
            *who = Some(Who::of(&verified));
        }
        return Err(e);
    }
    Ok(Some(verified))
}

/// The bucket of an endpoint, if it has one and it is on.
fn bucket<'a>(app: &'a App, ep: &Endpoint) -> Option<&'a TokenBucket> {
    match ep.guards.bucket {
        Bucket::None => None,
        Bucket::Global => app.rl_global(),
        Bucket::Dev => Some(&app.rl_dev),
    }
}

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimit {
        retry_after_secs: retry_after_secs(wait),
    }
}

/// How a handler on the fast path ended.
enum Ran {
    Done(Result<Resp, ApiError>),
    /// It answered, but its answer must wait (a read that would show a write not yet durable
    /// waits for that write's commit); the rest owns everything it needs.
    Detached(Detached),
}

/// Guards and handler of an endpoint that answers at once. A handler that answers at once
/// needs no timer: nothing could interrupt it anyway.
fn run_now(app: &App, m: Matched<'_>, body: RequestBody) -> Ran {
    if let Some(bucket) = bucket(app, m.ep)
        && let Err(wait) = bucket.try_take(Instant::now())
    {
        return Ran::Done(Err(rate_limited(wait)));
    }
    let (ep, request_id) = (m.ep, m.request_id);
    let mut who = None;
    let (cx, _permit) = match admit(app, m, body, &mut who) {
        Ok(admitted) => admitted,
        Err(e) => return trail::refused_now(app, &m, who.as_ref(), e),
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| handlers::call(ep.handler, cx))) {
        Ok(Step::Done(result)) => Ran::Done(result),
        Ok(Step::Detached(rest)) => Ran::Detached(rest),
        Ok(Step::Pending(_)) => {
            // `handlers::waits` said it would not wait: a bug in the handler table.
            tracing::error!(request_id = ?request_id, route = ?ep.handler, "handler waited on the fast path");
            Ran::Done(Err(ApiError::Internal))
        }
        Err(payload) => Ran::Done(Err(handler_panicked(app, request_id, payload.as_ref()))),
    }
}

/// What `finish` needs of a request once its handler is done.
struct Ended {
    start: Instant,
    route: RouteId,
    verb: Verb,
    method: Method,
    request_id: HeaderValue,
    cors: Option<HeaderValue>,
}

/// The rest of a fast-path answer that has to wait, boxed only now (so a read costs a box only
/// when it really waits), under the route's time bound. It holds no budget permit.
fn detached(app: Arc<App>, e: Ended, ep: &'static Endpoint, rest: Detached) -> Answer {
    Answer(Inner::Later(Box::pin(async move {
        let rest = AssertUnwindSafe(rest).catch_unwind();
        let result = match ep.guards.timeout {
            None => rest.await,
            Some(bound) => match tokio::time::timeout(bound_of(&app, bound), rest).await {
                Ok(r) => r,
                Err(_) => Ok(Err(ApiError::Timeout)),
            },
        };
        let result = result
            .unwrap_or_else(|payload| Err(handler_panicked(&app, &e.request_id, payload.as_ref())));
        finish(&app, e, result)
    })))
}

fn bound_of(app: &App, bound: Bound) -> Duration {
    match bound {
        Bound::Ready => app.live.ready_timeout(),
        Bound::Request => app.live.request_timeout(),
    }
}

/// Guards and handler of an endpoint that may wait: the tarpit before a 429, then the handler
/// under the route's time bound.
async fn run_waiting(app: &App, m: Matched<'_>, body: RequestBody) -> Result<Resp, ApiError> {
    if let Some(bucket) = bucket(app, m.ep)
        && let Err(wait) = bucket.try_take(Instant::now())
    {
        let tarpit = app.live.tarpit_ms();
        if tarpit > 0 {
            // Holds no budget permit while it waits.
            let _in_tarpit = app.tarpit.enter();
            tokio::time::sleep(Duration::from_millis(tarpit)).await;
        }
        return Err(rate_limited(wait));
    }
    let Some(audit) = &app.audit else {
        return admit_and_run(app, m, body, &mut None).await;
    };
    let mut who = None;
    // Fail closed: while the trail is broken nothing audited runs (nothing is applied).
    let result = if trail::audited(m.ep.handler) && audit.is_broken() {
        Err(ApiError::StorageUnavailable)
    } else {
        admit_and_run(app, m, body, &mut who).await
    };
    trail::answer(app, audit, &m, who.as_ref(), result).await
}

/// The rest of [`run_waiting`] past the rate limit: the guards, then the handler under the
/// route's time bound.
async fn admit_and_run(
    app: &App,
    m: Matched<'_>,
    body: RequestBody,
    who: &mut Option<Who>,
) -> Result<Resp, ApiError> {
    let (ep, request_id) = (m.ep, m.request_id);
    // Held until this future ends, whatever ends it: answer, timeout, or the client leaving.
    let (cx, _permit) = admit(app, m, body, who)?;
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| handlers::call(ep.handler, cx)));
    let pending = match called {
        Ok(Step::Done(result)) => return result,
        Ok(Step::Pending(pending)) => pending,
        Ok(Step::Detached(rest)) => rest,
        Err(payload) => return Err(handler_panicked(app, request_id, payload.as_ref())),
    };
    let handler = AssertUnwindSafe(pending).catch_unwind();
    let result = match ep.guards.timeout {
        None => handler.await,
        Some(bound) => match tokio::time::timeout(bound_of(app, bound), handler).await {
            Ok(result) => result,
            Err(_) => return Err(ApiError::Timeout),
        },
    };
    result.unwrap_or_else(|payload| Err(handler_panicked(app, request_id, payload.as_ref())))
}

/// A panic in a handler answers 500 `internal` for that request only: it is logged with the
/// request id and counted, and the handler's state (its permit included, which the caller
/// holds) is dropped as usual.
fn handler_panicked(app: &App, request_id: &HeaderValue, payload: &(dyn Any + Send)) -> ApiError {
    app.metrics.handler_panic();
    tracing::error!(
        request_id = ?request_id,
        panic = panic_message(payload),
        "handler panicked; answered 500"
    );
    ApiError::Internal
}

/// The answer to a panic outside any handler: 500 `internal`, logged and counted.
pub fn answer_panic(app: &App, payload: &(dyn Any + Send)) -> Resp {
    app.metrics.handler_panic();
    app.metrics.reject(Code::Internal);
    let request_id = app.new_request_id();
    tracing::error!(request_id = ?request_id, panic = panic_message(payload), "request pipeline panicked; answered 500");
    ApiError::Internal.into_response(&request_id)
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
