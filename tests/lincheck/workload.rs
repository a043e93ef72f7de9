//! The workload: N concurrent clients (tokio tasks, one keep-alive HTTP/1.1 connection each,
//! hyper's client) sending a random mix of GET / PUT / CAS (`If-Match`) / create-only PUT
//! (`If-None-Match: *`) / DELETE / conditional DELETE / single-key `POST /v1/txn` (if etag or
//! absent, then put, else get) on a few keys, every request recorded in a [`History`]; and the
//! scenarios that run it across clean restarts and `kill -9`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::history::{Call, Cond, History, Op, Recorder, Ret};
use super::server::{Engine, Server};

/// Longest a client waits for one answer before calling the op indeterminate.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one phase may run, whatever its op count.
const PHASE_TIME: Duration = Duration::from_secs(30);
const BUCKET: &str = "lin";

/// What happens between phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Between {
    /// One server for the whole run.
    Nothing,
    /// Clients finish the phase; SIGTERM; wait for exit 0; start again on the same data.
    CleanRestart,
    /// SIGKILL while requests are in flight (at a random point of the phase); start again on
    /// the same data. The last phase runs to its end.
    Kill9,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub engine: Engine,
    pub between: Between,
    pub phases: usize,
    pub ops_per_phase: usize,
    pub clients: usize,
    pub keys: usize,
    pub seed: u64,
}

/// Counts of what happened, for the report.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ops: usize,
    pub indeterminate: usize,
    /// Answers that were 5xx/429/408 (recorded as indeterminate).
    pub server_errors: usize,
    pub restarts: usize,
    pub kills: usize,
    pub by_outcome: HashMap<&'static str, usize>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut outcomes: Vec<_> = self.by_outcome.iter().collect();
        outcomes.sort();
        write!(
            f,
            "{} ops ({} indeterminate, {} server errors), {} clean restarts, {} kill -9, {:.1}s; {:?}",
            self.ops,
            self.indeterminate,
            self.server_errors,
            self.restarts,
            self.kills,
            self.elapsed.as_secs_f64(),
            outcomes
        )
    }
}

/// splitmix64: small, seedable, good enough to pick ops.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A seed from the environment (`MICRONODE_LINCHECK_SEED`) or the clock; printed by callers so
/// a failing run can be repeated.
pub fn seed() -> u64 {
    std::env::var("MICRONODE_LINCHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5EED)
        })
}

/// Runs a scenario against the real binary; returns the history and what happened.
pub fn run(scn: &Scenario) -> (History, Stats) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let data: PathBuf = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rec = Arc::new(Recorder::default());
    let errors = Arc::new(AtomicUsize::new(0));
    let mut stats = Stats::default();
    let mut rng = Rng::new(scn.seed);
    let mut server = Server::start(scn.engine, &data);
    rec.event(format!("server started (pid {})", server.pid()));
    // postgres: a second node over the same schema; odd clients talk to it.
    let mut second = (scn.engine == Engine::Postgres).then(|| Server::start(scn.engine, &data));
    if let Some(s) = &second {
        rec.event(format!("second node started (pid {})", s.pid()));
    }
    for phase in 0..scn.phases {
        let last = phase + 1 == scn.phases;
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + PHASE_TIME;
        let tasks: Vec<_> = (0..scn.clients)
            .map(|c| {
                let addr = match &second {
                    Some(s) if c % 2 == 1 => s.addr,
                    _ => server.addr,
                };
                let client = ClientCfg {
                    id: phase * scn.clients + c,
                    addr,
                    keys: scn.keys,
                    ops: scn.ops_per_phase,
                    deadline,
                    seed: rng.next(),
                };
                rt.spawn(client_loop(
                    client,
                    Arc::clone(&rec),
                    Arc::clone(&stop),
                    Arc::clone(&issued),
                    Arc::clone(&done),
                    Arc::clone(&errors),
                ))
            })
            .collect();
        let kill = scn.between == Between::Kill9 && !last;
        if kill {
            // Kill somewhere in the middle of the phase, while requests are in flight.
            let at = scn.ops_per_phase / 4 + rng.below(scn.ops_per_phase as u64 / 2) as usize;
            while done.load(Ordering::Relaxed) < at && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            rec.event(format!("SIGKILL to server (pid {})", server.pid()));
            server.kill_9();
            stop.store(true, Ordering::Relaxed);
            stats.kills += 1;
        }
        for t in tasks {
            rt.block_on(t).expect("client task");
        }
        if last {
            break;
        }
        if !kill {
            match scn.between {
                Between::Nothing => continue,
                Between::CleanRestart => {
                    let pid = server.pid();
                    rec.event(format!("SIGTERM to server (pid {pid})"));
                    let code = server.stop();
                    assert_eq!(code, Some(0), "clean stop exits 0");
                    rec.event(format!("server exited 0 (pid {pid})"));
                    stats.restarts += 1;
                }
                Between::Kill9 => unreachable!("a kill phase killed the server above"),
            }
        }
        server = Server::start(scn.engine, &data);
        rec.event(format!("server started (pid {})", server.pid()));
    }
    // A final read of every key, once everything else has returned.
    let addr = server.addr;
    let final_client = ClientCfg {
        id: scn.phases * scn.clients,
        addr,
        keys: scn.keys,
        ops: 0,
        deadline: Instant::now() + PHASE_TIME,
        seed: 0,
    };
    rt.block_on(read_all(final_client, Arc::clone(&rec)));
    let code = server.stop();
    assert_eq!(code, Some(0), "clean stop at the end exits 0");
    if let Some(s) = &mut second {
        assert_eq!(s.stop(), Some(0), "the second node's clean stop exits 0");
    }
    let history = rec.snapshot();
    stats.ops = history.ops.len();
    stats.indeterminate = history.ops.iter().filter(|o| o.ret.is_none()).count();
    stats.server_errors = errors.load(Ordering::Relaxed);
    for op in &history.ops {
        *stats.by_outcome.entry(outcome_name(op)).or_default() += 1;
    }
    stats.elapsed = started.elapsed();
    (history, stats)
}

fn outcome_name(op: &Op) -> &'static str {
    match (&op.call, &op.ret) {
        (_, None) => "indeterminate",
        (Call::Get, Some((_, Ret::Found { .. }))) => "get 200",
        (Call::Get, Some((_, Ret::NotFound))) => "get 404",
        (
            Call::Put {
                cond: Cond::None, ..
            },
            Some(_),
        ) => "put",
        (
            Call::Put {
                cond: Cond::IfMatch(_),
                ..
            },
            Some((_, Ret::Written { .. })),
        ) => "cas ok",
        (
            Call::Put {
                cond: Cond::IfMatch(_),
                ..
            },
            Some(_),
        ) => "cas 412",
        (
            Call::Put {
                cond: Cond::IfNoneMatchAny,
                ..
            },
            Some((_, Ret::Written { .. })),
        ) => "create ok",
        (
            Call::Put {
                cond: Cond::IfNoneMatchAny,
                ..
            },
            Some(_),
        ) => "create 412",
        (Call::Delete { .. }, Some((_, Ret::Deleted))) => "delete 204",
        (Call::Delete { .. }, Some((_, Ret::NotFound))) => "delete 404",
        (Call::Delete { .. }, Some(_)) => "delete 412",
        (Call::Txn { .. }, Some((_, Ret::TxnApplied { .. }))) => "txn ok",
        (Call::Txn { .. }, Some((_, Ret::Found { .. }))) => "txn else 200",
        (Call::Txn { .. }, Some((_, Ret::NotFound))) => "txn else 404",
        (Call::Get | Call::Txn { .. }, Some(_)) => "? (impossible answer)",
    }
}

struct ClientCfg {
    id: usize,
    addr: SocketAddr,
    keys: usize,
    ops: usize,
    deadline: Instant,
    seed: u64,
}

fn key_name(k: usize) -> String {
    format!("k{k}")
}

/// One client: sequential requests on one connection (reopened after a failure), until the
/// phase's op count is issued, its time is up, or `stop` is set.
async fn client_loop(
    cfg: ClientCfg,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
) {
    let mut rng = Rng::new(cfg.seed);
    let mut tags: HashMap<usize, String> = HashMap::new();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed)
        && Instant::now() < cfg.deadline
        && issued.fetch_add(1, Ordering::Relaxed) < cfg.ops
    {
        let k = rng.below(cfg.keys as u64) as usize;
        let known = tags.get(&k).cloned();
        let mut value = || {
            seq += 1;
            format!("c{}.{}", cfg.id, seq)
        };
        let call = match (rng.below(100), known) {
            (0..32, _) => Call::Get,
            (32..50, _) => Call::Put {
                value: value(),
                cond: Cond::None,
            },
            (50..68, Some(tag)) => Call::Put {
                value: value(),
                cond: Cond::IfMatch(tag),
            },
            (50..77, _) => Call::Put {
                value: value(),
                cond: Cond::IfNoneMatchAny,
            },
            (77..84, _) | (84..90, None) => Call::Delete { cond: Cond::None },
            (84..90, Some(tag)) => Call::Delete {
                cond: Cond::IfMatch(tag),
            },
            (90.., Some(tag)) => Call::Txn {
                value: value(),
                cond: Cond::IfMatch(tag),
            },
            (90.., None) => Call::Txn {
                value: value(),
                cond: Cond::IfNoneMatchAny,
            },
        };
        if conn.is_none() {
            match connect(cfg.addr).await {
                Ok(c) => conn = Some(c),
                // The server is gone (killed): this client's phase is over.
                Err(_) => break,
            }
        }
        let sender = conn.as_mut().expect("connected above");
        let invoke = rec.now();
        let answer = tokio::time::timeout(OP_TIMEOUT, send(sender, &key_name(k), &call)).await;
        let ret = match answer {
            Ok(Ok(Answer::Ret(r))) => Some((rec.now(), r)),
            Ok(Ok(Answer::ServerError)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(Err(_)) | Err(_) => {
                conn = None;
                None
            }
        };
        match &ret {
            Some((
                _,
                Ret::Found { etag, .. } | Ret::Written { etag, .. } | Ret::TxnApplied { etag },
            )) => {
                tags.insert(k, etag.clone());
            }
            Some((_, Ret::NotFound | Ret::Deleted)) => {
                tags.remove(&k);
            }
            _ => {}
        }
        rec.record(Op {
            client: cfg.id,
            key: key_name(k),
            call,
            invoke,
            ret,
        });
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// GETs every key once.
async fn read_all(cfg: ClientCfg, rec: Arc<Recorder>) {
    let mut sender = connect(cfg.addr)
        .await
        .expect("connect for the final reads");
    for k in 0..cfg.keys {
        let invoke = rec.now();
        let ret = match send(&mut sender, &key_name(k), &Call::Get).await {
            Ok(Answer::Ret(r)) => Some((rec.now(), r)),
            _ => None,
        };
        rec.record(Op {
            client: cfg.id,
            key: key_name(k),
            call: Call::Get,
            invoke,
            ret,
        });
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

enum Answer {
    Ret(Ret),
    /// 5xx, 429 or 408: the server did not say what happened.
    ServerError,
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    key: &str,
    call: &Call,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    if let Call::Txn { value, cond } = call {
        return send_txn(sender, key, value, cond).await;
    }
    let uri = format!("/v1/kv/{BUCKET}/{key}");
    let (method, body, cond) = match call {
        Call::Get => ("GET", Bytes::new(), &Cond::None),
        Call::Put { value, cond } => ("PUT", Bytes::from(value.clone()), cond),
        Call::Delete { cond } => ("DELETE", Bytes::new(), cond),
        Call::Txn { .. } => unreachable!("sent above"),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "lincheck");
    match cond {
        Cond::None => {}
        Cond::IfMatch(tag) => req = req.header("if-match", tag.as_str()),
        Cond::IfNoneMatchAny => req = req.header("if-none-match", "*"),
    }
    let req = req.body(Full::new(body))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await?.to_bytes();
    let need_etag = || {
        etag.clone()
            .unwrap_or_else(|| panic!("{method} {key} answered {status} without an ETag"))
    };
    let ret = match (call, status) {
        (Call::Get, 200) => Ret::Found {
            value: String::from_utf8_lossy(&body).into_owned(),
            etag: need_etag(),
        },
        (Call::Get | Call::Delete { .. }, 404) => Ret::NotFound,
        (Call::Put { .. }, 201 | 204) => Ret::Written {
            created: status == 201,
            etag: need_etag(),
        },
        (Call::Delete { .. }, 204) => Ret::Deleted,
        (Call::Put { .. } | Call::Delete { .. }, 412) => Ret::PreconditionFailed,
        (_, 408 | 429 | 500..) => return Ok(Answer::ServerError),
        _ => panic!(
            "{method} {key} ({call:?}) answered {status}: {}",
            String::from_utf8_lossy(&body)
        ),
    };
    Ok(Answer::Ret(ret))
}

/// `POST /v1/txn`: if the key's ETag is `tag` (or the key is absent), then put `value`, else
/// get the key. A 200 is read for what it claims; 5xx/429/408 say nothing.
async fn send_txn(
    sender: &mut SendRequest<Full<Bytes>>,
    key: &str,
    value: &str,
    cond: &Cond,
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    let compares = match cond {
        Cond::None => serde_json::json!([]),
        Cond::IfMatch(tag) => serde_json::json!([{"bucket": BUCKET, "key": key, "etag": tag}]),
        Cond::IfNoneMatchAny => {
            serde_json::json!([{"bucket": BUCKET, "key": key, "exists": false}])
        }
    };
    let body = serde_json::json!({
        "if": compares,
        "then": [{"op": "put", "bucket": BUCKET, "key": key, "value": BASE64.encode(value)}],
        "else": [{"op": "get", "bucket": BUCKET, "key": key}],
    });
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/v1/txn")
        .header("host", "lincheck")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let raw = resp.into_body().collect().await?.to_bytes();
    match status {
        200 => {}
        408 | 429 | 500.. => return Ok(Answer::ServerError),
        _ => panic!(
            "txn on {key} ({cond:?}) answered {status}: {}",
            String::from_utf8_lossy(&raw)
        ),
    }
    let bad = |what: &str| -> ! {
        panic!(
            "txn on {key} ({cond:?}): {what} in {}",
            String::from_utf8_lossy(&raw)
        )
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| bad("not JSON"));
    let result = match answer["results"].as_array().map(Vec::as_slice) {
        Some([one]) => one,
        _ => bad("not exactly one result"),
    };
    let text = |field: &str| -> String {
        result[field]
            .as_str()
            .unwrap_or_else(|| bad(&format!("no string {field:?}")))
            .to_owned()
    };
    let ret = match (answer["succeeded"].as_bool(), result["op"].as_str()) {
        (Some(true), Some("put")) => Ret::TxnApplied { etag: text("etag") },
        (Some(false), Some("get")) => match result["found"].as_bool() {
            Some(true) => {
                let bytes = BASE64
                    .decode(text("value"))
                    .unwrap_or_else(|_| bad("a value not in base64"));
                Ret::Found {
                    value: String::from_utf8_lossy(&bytes).into_owned(),
                    etag: text("etag"),
                }
            }
            Some(false) => Ret::NotFound,
            None => bad("a get without \"found\""),
        },
        _ => bad("a result that does not match \"succeeded\""),
    };
    Ok(Answer::Ret(ret))
}
