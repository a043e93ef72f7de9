//! Watch fan-out load client for scripts/bench_v2.sh (docs/PERFORMANCE.md, "KV v2").
//!
//! Opens WATCHERS watch streams (`GET /v1/watch/BUCKET`, HTTP/1.1, one connection each), then
//! a writer on its own connection does WRITES PUTs of a 128 B value to `BUCKET/w<i>`, one every
//! INTERVAL_MS. For each write it records the instant just before the PUT is sent and, for each
//! watcher, the instant its `put` event for that key is read: the delivery latency. Bounded: the
//! wait for the last deliveries ends after 10 s, and opening gives up on the first error.
//!
//! ```text
//! watch_fanout ADDR BUCKET WATCHERS WRITES INTERVAL_MS [HOLD_SECS]
//! ```
//! With WRITES = 0 it only opens the streams, prints `open=N secs=S`, keeps them open (reading
//! keep-alives) for HOLD_SECS and exits: the idle-watcher memory row.
//! Otherwise prints one line of `name=value` pairs: deliveries, missing, per-delivery latency
//! p50/p99/max (`deliv_*_us`), per-write time until the last watcher had it (`all_*_us`) and
//! the PUT round trip (`put_*_us`), and this client's own CPU time and wall time from the first
//! PUT to the end of the wait (`client_cpu_s`, `write_wall_s`: is the client the bottleneck?).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Sender = hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>,
>;

struct Shared {
    base: Instant,
    /// ns since `base` + 1 when write i was sent (0: not yet).
    sent: Vec<AtomicU64>,
    /// Watchers that have seen write i.
    seen: Vec<AtomicU64>,
    /// Latest delivery of write i, ns since `base`.
    last: Vec<AtomicU64>,
    deliv: Mutex<Histogram<u64>>,
    deliveries: AtomicU64,
}

fn usage() -> ! {
    eprintln!("usage: watch_fanout ADDR BUCKET WATCHERS WRITES INTERVAL_MS [HOLD_SECS]");
    std::process::exit(2)
}

/// This process's CPU time (utime + stime), from /proc/self/stat; 0 where there is none.
fn self_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

async fn connect(addr: SocketAddr) -> Result<Sender, Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Opens one watch stream and returns its body (and the sender, kept so the connection lives).
async fn open(addr: SocketAddr, bucket: &str) -> Result<(hyper::body::Incoming, Sender), Error> {
    let mut send = connect(addr).await?;
    let req = Request::get(format!("/v1/watch/{bucket}"))
        .header("host", "bench")
        .body(Empty::<Bytes>::new().boxed())?;
    let resp = send.send_request(req).await?;
    if resp.status() != 200 {
        return Err(format!("watch answered {}", resp.status()).into());
    }
    Ok((resp.into_body(), send))
}

/// The write index named by a `put` event for key `w<i>`, if this event block is one.
fn event_index(block: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(block).ok()?;
    if !text.lines().any(|l| l == "event: put") {
        return None;
    }
    let at = text.find("\"key\":\"w")? + 8;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

async fn drain(mut body: hyper::body::Incoming, shared: Option<Arc<Shared>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(if shared.is_some() { 1024 } else { 0 });
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let Some(shared) = shared.as_ref() else {
            continue;
        };
        let now = shared.base.elapsed().as_nanos() as u64;
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            if let Some(i) = event_index(&buf[..end]) {
                if let Some(sent) = shared.sent.get(i).map(|s| s.load(Ordering::Relaxed)) {
                    if sent > 0 {
                        let us = now.saturating_sub(sent - 1) / 1000;
                        let _ = shared.deliv.lock().expect("lock").record(us.max(1));
                        shared.seen[i].fetch_add(1, Ordering::Relaxed);
                        shared.last[i].fetch_max(now, Ordering::Relaxed);
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            buf.drain(..end + 2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        usage();
    }
    let addr: SocketAddr = args[0].parse().unwrap_or_else(|_| usage());
    let bucket = args[1].clone();
    let watchers: usize = args[2].parse().unwrap_or_else(|_| usage());
    let writes: usize = args[3].parse().unwrap_or_else(|_| usage());
    let interval = Duration::from_millis(args[4].parse().unwrap_or_else(|_| usage()));
    let hold = Duration::from_secs(
        args.get(5)
            .map_or(Ok(0), |h| h.parse())
            .unwrap_or_else(|_| usage()),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            sent: (0..writes).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..writes).map(|_| AtomicU64::new(0)).collect(),
            last: (0..writes).map(|_| AtomicU64::new(0)).collect(),
            deliv: Mutex::new(hist()),
            deliveries: AtomicU64::new(0),
        });
        // Open the streams, at most 256 connecting at once.
        let t0 = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(256));
        let mut opening = Vec::with_capacity(watchers);
        for _ in 0..watchers {
            let (sem, bucket) = (Arc::clone(&sem), bucket.clone());
            opening.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore");
                open(addr, &bucket).await
            }));
        }
        let mut keep = Vec::with_capacity(watchers);
        for o in opening {
            match o.await.expect("join") {
                Ok((body, send)) => {
                    let sh = (writes > 0).then(|| Arc::clone(&shared));
                    tokio::spawn(drain(body, sh));
                    keep.push(send);
                }
                Err(e) => {
                    eprintln!("watch_fanout: opening a watch failed after {} open: {e}", keep.len());
                    return 1;
                }
            }
        }
        println!("open={} secs={:.2}", keep.len(), t0.elapsed().as_secs_f64());
        if writes == 0 {
            tokio::time::sleep(hold).await;
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The writer.
        let cpu0 = self_cpu_secs();
        let w0 = Instant::now();
        let mut send = match connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("watch_fanout: writer: {e}");
                return 1;
            }
        };
        let value = Bytes::from(vec![b'v'; 128]);
        let mut put_h = hist();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for i in 0..writes {
            tick.tick().await;
            let req = Request::put(format!("/v1/kv/{bucket}/w{i}"))
                .header("host", "bench")
                .body(Full::new(value.clone()).boxed())
                .expect("request");
            let start = shared.base.elapsed().as_nanos() as u64;
            shared.sent[i].store(start + 1, Ordering::Relaxed);
            let resp = match send.send_request(req).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("watch_fanout: PUT {i}: {e}");
                    return 1;
                }
            };
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            let _ = put_h.record(((shared.base.elapsed().as_nanos() as u64 - start) / 1000).max(1));
            if !status.is_success() {
                eprintln!("watch_fanout: PUT {i} answered {status}");
                return 1;
            }
        }
        // Wait (bounded) for the last deliveries.
        let want = (writes * watchers) as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.deliveries.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (cpu1, wall) = (self_cpu_secs(), w0.elapsed().as_secs_f64());
        let mut all_h = hist();
        for i in 0..writes {
            if shared.seen[i].load(Ordering::Relaxed) == watchers as u64 {
                let sent = shared.sent[i].load(Ordering::Relaxed) - 1;
                let _ = all_h.record(((shared.last[i].load(Ordering::Relaxed) - sent) / 1000).max(1));
            }
        }
        let got = shared.deliveries.load(Ordering::Relaxed);
        let d = shared.deliv.lock().expect("lock");
        println!(
            "watchers={watchers} writes={writes} deliveries={got} missing={} deliv_p50_us={} deliv_p99_us={} deliv_max_us={} all_p50_us={} all_p99_us={} all_max_us={} all_n={} put_p50_us={} put_p99_us={} client_cpu_s={:.2} write_wall_s={:.2}",
            want - got,
            d.value_at_quantile(0.5),
            d.value_at_quantile(0.99),
            d.max(),
            all_h.value_at_quantile(0.5),
            all_h.value_at_quantile(0.99),
            all_h.max(),
            all_h.len(),
            put_h.value_at_quantile(0.5),
            put_h.value_at_quantile(0.99),
            cpu1 - cpu0,
            wall,
        );
        drop(keep);
        0
    });
    std::process::exit(code);
}
