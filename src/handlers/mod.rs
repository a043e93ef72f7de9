//! Handlers: plain async functions, one per route method, named `verb_noun`. The
//! [`handlers!`] list below is the one place a handler is named for the route table; it
//! generates the `Handler` id used by the table, the dispatch `match` (one state machine, no
//! boxing per request) and the statuses each handler can answer (for metric prewarming).

pub mod admin;
pub mod dev;
pub mod kv;

use bytes::Bytes;
use http::HeaderValue;
use http::request::Parts;

use crate::app::App;
use crate::error::ApiError;
use crate::guards::BodyPlan;
use crate::guards::body::{self, RequestBody};
use crate::response::Resp;

/// What a handler gets: the app, the request head, the route's path parameters, and the body
/// (not yet polled) with the plan the head checks made for it.
pub struct Cx<'a> {
    pub app: &'a App,
    pub head: &'a Parts,
    pub params: &'a matchit::Params<'a, 'a>,
    pub request_id: &'a HeaderValue,
    pub plan: BodyPlan,
    pub body: RequestBody,
}

impl Cx<'_> {
    /// Reads the body under the body cap, stall bound and decode cap.
    pub async fn read_body(&mut self) -> Result<Bytes, ApiError> {
        let body = std::mem::replace(&mut self.body, RequestBody::from(Bytes::new()));
        body::read(body, self.plan, self.app.body_limits).await
    }

    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).unwrap_or("")
    }
}

macro_rules! handlers {
    ($($variant:ident => $path:path, answers [$($status:literal),*];)*) => {
        /// Names a handler in the route table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Handler { $($variant),* }

        /// Runs a handler.
        pub async fn call(handler: Handler, cx: Cx<'_>) -> Result<Resp, ApiError> {
            match handler { $(Handler::$variant => $path(cx).await),* }
        }

        /// The statuses a handler itself can answer (guards add theirs).
        pub fn statuses(handler: Handler) -> &'static [u16] {
            match handler { $(Handler::$variant => &[$($status),*]),* }
        }
    };
}

handlers! {
    GetHealthz => admin::get_healthz, answers [200];
    GetReadyz => admin::get_readyz, answers [200, 503];
    GetVersion => admin::get_version, answers [200];
    GetMetrics => admin::get_metrics, answers [200];
    GetPing => admin::get_ping, answers [200];
    GetKv => kv::get_kv, answers [200, 304, 400, 404];
    PutKv => kv::put_kv, answers [201, 204, 400, 412];
    DeleteKv => kv::delete_kv, answers [204, 400, 404, 412];
    ListKv => kv::list_kv, answers [200, 400];
    PostEcho => dev::post_echo, answers [200, 400];
    GetRl => dev::get_rl, answers [200];
    GetPanic => dev::get_panic, answers [];
}
