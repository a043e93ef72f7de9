//! The route table: one static entry per route template, naming its plane, and per method its
//! handler and guard spec. A `matchit` radix tree maps a path to a small route id that indexes
//! the table; 404 and 405 are explicit branches.

use http::HeaderValue;

use crate::auth::Op;
use crate::guards::GuardSpec;
use crate::guards::auth::Access;
use crate::handlers::{Handler, statuses as handler_statuses};
use crate::metrics::RouteLabels;
use crate::wire::{PathParams, Verb};

/// Where a route lives; dev routes exist only with `MICRONODE_DEV_ROUTES=1`, the service-time
/// routes only with `MICRONODE_DEV_METRICS=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    Admin,
    Feature,
    Dev,
    DevMetrics,
}

impl Plane {
    /// Whether routes of this plane are served under these dev flags.
    pub(crate) fn served(self, dev_routes: bool, dev_metrics: bool) -> bool {
        match self {
            Plane::Admin | Plane::Feature => true,
            Plane::Dev => dev_routes,
            Plane::DevMetrics => dev_metrics,
        }
    }
}

/// One method of a route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    pub verb: Verb,
    pub handler: Handler,
    pub guards: GuardSpec,
    /// The query parameters it accepts; any other is 400 before the handler runs.
    pub query: &'static [&'static str],
    /// What it touches, for the token check when auth is on.
    pub access: Access,
}

/// One route template.
#[derive(Debug)]
pub(crate) struct Route {
    pub template: &'static str,
    pub plane: Plane,
    pub endpoints: &'static [Endpoint],
}

const fn ep(verb: Verb, handler: Handler, guards: GuardSpec) -> Endpoint {
    Endpoint {
        verb,
        handler,
        guards,
        query: &[],
        access: Access::Token,
    }
}

impl Endpoint {
    /// The same endpoint accepting these query parameters.
    const fn query(self, names: &'static [&'static str]) -> Endpoint {
        Endpoint {
            query: names,
            ..self
        }
    }

    /// The same endpoint with this token requirement (the default: any valid token).
    const fn access(self, access: Access) -> Endpoint {
        Endpoint { access, ..self }
    }
}

/// THE route table (docs/API.md lists it). HEAD is served for every GET endpoint without a body.
/// One line per route, kept unformatted so the table reads as a table.
#[rustfmt::skip]
pub(crate) static ROUTES: &[Route] = &[
    Route { template: "/healthz", plane: Plane::Admin, endpoints: &[ep(Verb::Get, Handler::GetHealthz, GuardSpec::ADMIN).access(Access::Open)] },
    Route { template: "/readyz", plane: Plane::Admin, endpoints: &[ep(Verb::Get, Handler::GetReadyz, GuardSpec::READY).access(Access::Open)] },
    Route { template: "/version", plane: Plane::Admin, endpoints: &[ep(Verb::Get, Handler::GetVersion, GuardSpec::ADMIN).access(Access::Meta(None))] },
    Route { template: "/metrics", plane: Plane::Admin, endpoints: &[ep(Verb::Get, Handler::GetMetrics, GuardSpec::ADMIN).access(Access::Meta(Some(Op::Admin)))] },
    Route { template: "/openapi.json", plane: Plane::Admin, endpoints: &[ep(Verb::Get, Handler::GetOpenapi, GuardSpec::ADMIN).access(Access::Meta(None))] },
    Route { template: "/v1/ping", plane: Plane::Feature, endpoints: &[ep(Verb::Get, Handler::GetPing, GuardSpec::FEATURE)] },
    Route { template: "/v1/kv/{bucket}/{*key}", plane: Plane::Feature, endpoints: &[
        ep(Verb::Get, Handler::GetKv, GuardSpec::KV_READ).access(Access::Key(Op::Get)),
        ep(Verb::Put, Handler::PutKv, GuardSpec::KV_WRITE).query(&["ttl"]).access(Access::Key(Op::Put)),
        ep(Verb::Delete, Handler::DeleteKv, GuardSpec::KV_WRITE).access(Access::Key(Op::Delete)),
    ] },
    Route { template: "/v1/kv/{bucket}", plane: Plane::Feature, endpoints: &[ep(Verb::Get, Handler::ListKv, GuardSpec::KV_READ).query(&["prefix", "limit", "after", "values"]).access(Access::Prefix(Op::List))] },
    Route { template: "/v1/watch/{bucket}", plane: Plane::Feature, endpoints: &[ep(Verb::Get, Handler::GetWatch, GuardSpec::WATCH).query(&["prefix", "since", "values"]).access(Access::Prefix(Op::Watch))] },
    Route { template: "/v1/txn", plane: Plane::Feature, endpoints: &[ep(Verb::Post, Handler::PostTxn, GuardSpec::KV_WRITE).access(Access::Txn)] },
    Route { template: "/v1/auth/whoami", plane: Plane::Feature, endpoints: &[ep(Verb::Get, Handler::GetWhoami, GuardSpec::FEATURE)] },
    Route { template: "/v1/auth/tokens", plane: Plane::Feature, endpoints: &[ep(Verb::Post, Handler::PostTokens, GuardSpec::FEATURE).access(Access::Node(Op::Admin))] },
    Route { template: "/v1/auth/revoke", plane: Plane::Feature, endpoints: &[ep(Verb::Post, Handler::PostRevoke, GuardSpec::KV_WRITE).access(Access::Node(Op::Admin))] },
    Route { template: "/v1/admin/snapshot", plane: Plane::Feature, endpoints: &[ep(Verb::Get, Handler::GetSnapshot, GuardSpec::SNAPSHOT).access(Access::Node(Op::Admin))] },
    Route { template: "/dev/echo", plane: Plane::Dev, endpoints: &[ep(Verb::Post, Handler::PostEcho, GuardSpec::DEV_BUDGETED)] },
    Route { template: "/dev/rl", plane: Plane::Dev, endpoints: &[ep(Verb::Get, Handler::GetRl, GuardSpec::DEV_RL)] },
    Route { template: "/dev/panic", plane: Plane::Dev, endpoints: &[ep(Verb::Get, Handler::GetPanic, GuardSpec::DEV_BUDGETED)] },
    Route { template: "/dev/latency", plane: Plane::DevMetrics, endpoints: &[ep(Verb::Get, Handler::GetLatency, GuardSpec::ADMIN)] },
    Route { template: "/dev/latency/reset", plane: Plane::DevMetrics, endpoints: &[ep(Verb::Post, Handler::PostLatencyReset, GuardSpec::ADMIN)] },
];

/// Index of a route in [`ROUTES`]; `ROUTES.len()` stands for "unmatched" in metrics.
pub(crate) type RouteId = usize;
pub(crate) const UNMATCHED: RouteId = ROUTES.len();

/// Every route template, in route-id order.
pub(crate) fn templates() -> Vec<&'static str> {
    ROUTES.iter().map(|r| r.template).collect()
}

/// The label sets of every route, in route-id order, for the metrics registry: dev routes are
/// counted (and prewarmed) only when dev routes and dev metrics are both on; each endpoint's
/// series are its handler's statuses, its guards' rejects and 500; other methods get 405.
pub(crate) fn metric_labels(dev_routes: bool, dev_metrics: bool) -> Vec<RouteLabels> {
    let main_verbs = [Verb::Get, Verb::Head, Verb::Post, Verb::Put, Verb::Delete];
    ROUTES
        .iter()
        .map(|route| {
            let recorded = route.plane.served(dev_routes && dev_metrics, dev_metrics);
            let mut prewarm = Vec::new();
            if recorded {
                for verb in main_verbs {
                    match route.endpoint(verb) {
                        None => prewarm.push((verb, 405)),
                        Some(ep) => {
                            // With auth on, every endpoint but the open ones may answer
                            // 401 and 403; prewarmed always (auth can be turned on later).
                            let auth: &[u16] = match ep.access {
                                Access::Open => &[],
                                _ => &[401, 403],
                            };
                            let statuses = handler_statuses(ep.handler)
                                .iter()
                                .copied()
                                .chain(ep.guards.statuses(verb))
                                .chain(auth.iter().copied())
                                .chain([500]);
                            prewarm.extend(statuses.map(|s| (verb, s)));
                        }
                    }
                }
            }
            RouteLabels {
                template: route.template,
                recorded,
                prewarm,
            }
        })
        .collect()
}

impl Route {
    /// The endpoint serving `verb`, with HEAD falling back to GET.
    pub(crate) fn endpoint(&self, verb: Verb) -> Option<&Endpoint> {
        let find = |v: Verb| self.endpoints.iter().find(|e| e.verb == v);
        match verb {
            Verb::Head => find(Verb::Head).or_else(|| find(Verb::Get)),
            v => find(v),
        }
    }

    /// The verbs this route answers, HEAD included for GET routes, in table order.
    pub(crate) fn verbs(&self) -> Vec<Verb> {
        let mut out = Vec::new();
        for e in self.endpoints {
            out.push(e.verb);
            if e.verb == Verb::Get && !self.endpoints.iter().any(|x| x.verb == Verb::Head) {
                out.push(Verb::Head);
            }
        }
        out
    }
}

/// The compiled router: matchit tree plus the exact `Allow` header of each route.
#[derive(Debug)]
pub(crate) struct Router {
    tree: matchit::Router<RouteId>,
    allow: Vec<HeaderValue>,
}

impl Router {
    /// Registers every route of the table served under the dev flags. A bad template is a bug
    /// in the table, caught by the unit test below, so this panics with its name.
    pub(crate) fn new(dev_routes: bool, dev_metrics: bool) -> Router {
        let mut tree = matchit::Router::new();
        for (id, route) in ROUTES.iter().enumerate() {
            if !route.plane.served(dev_routes, dev_metrics) {
                continue;
            }
            if let Err(e) = tree.insert(route.template, id) {
                panic!("route table: cannot register {}: {e}", route.template);
            }
        }
        let allow = ROUTES
            .iter()
            .map(|r| {
                let names: Vec<&str> = r.verbs().iter().map(|v| v.as_str()).collect();
                HeaderValue::from_str(&names.join(", "))
                    .expect("method names are ASCII tokens, a valid header value")
            })
            .collect();
        Router { tree, allow }
    }

    /// Matches a raw path. `None` is a 404.
    pub(crate) fn at(&self, path: &str) -> Option<(RouteId, PathParams)> {
        match self.tree.at(path) {
            Ok(m) => {
                let id = *m.value;
                let params =
                    PathParams::new(ROUTES[id].template, path, m.params.iter().map(|(_, v)| v));
                Some((id, params))
            }
            Err(matchit::MatchError::NotFound) => None,
        }
    }

    /// The `Allow` header of a route, for 405 answers.
    pub(crate) fn allow(&self, id: RouteId) -> &HeaderValue {
        &self.allow[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_registers_with_dev_routes_on() {
        let r = Router::new(true, true);
        assert_eq!(r.at("/healthz").map(|m| m.0), Some(0));
        assert!(r.at("/dev/echo").is_some());
    }

    #[test]
    fn dev_routes_are_absent_when_off() {
        let r = Router::new(false, false);
        assert!(r.at("/dev/echo").is_none());
        assert!(r.at("/dev/rl").is_none());
    }

    #[test]
    fn kv_paths_match_with_slashes_in_the_key() {
        let r = Router::new(false, false);
        let path = "/v1/kv/b1/a/b/c";
        let (id, params) = r.at(path).expect("kv route");
        assert_eq!(ROUTES[id].template, "/v1/kv/{bucket}/{*key}");
        assert_eq!(params.get(path, "bucket"), Some("b1"));
        assert_eq!(params.get(path, "key"), Some("a/b/c"));
        let (id, _) = r.at("/v1/kv/b1").expect("list route");
        assert_eq!(ROUTES[id].template, "/v1/kv/{bucket}");
    }

    #[test]
    fn allow_header_lists_head_after_get() {
        let r = Router::new(false, false);
        let (id, _) = r.at("/v1/kv/b/k").expect("kv route");
        assert_eq!(r.allow(id), "GET, HEAD, PUT, DELETE");
        let (id, _) = r.at("/healthz").expect("healthz");
        assert_eq!(r.allow(id), "GET, HEAD");
    }
}
