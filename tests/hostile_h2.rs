//! HTTP/2 attacks written as raw frames (prior knowledge, cleartext): too many streams, the
//! rapid-reset loop, a CONTINUATION flood, and idle connections. Run against the real binary
//! so the server's memory can be read from `/proc`.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use support::{ChildServer, WAIT, rss_kib};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK literal (never indexed by us) with an indexed name from the static table.
fn literal(name_index: u8, value: &str) -> Vec<u8> {
    assert!(value.len() < 127);
    let mut b = vec![name_index, value.len() as u8];
    b.extend_from_slice(value.as_bytes());
    b
}

/// The header block of `GET <path>`.
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend(literal(0x04, path)); // :path
    b.extend(literal(0x01, "test")); // :authority
    b
}

struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

struct H2 {
    sock: TcpStream,
}

impl H2 {
    /// Preface + empty SETTINGS, then ACKs the server's SETTINGS so its limits are in force.
    fn open(addr: std::net::SocketAddr) -> H2 {
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        sock.set_write_timeout(Some(WAIT)).expect("timeout");
        sock.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        sock.write_all(&frame(SETTINGS, 0, 0, &[]))
            .expect("settings");
        let mut h2 = H2 { sock };
        loop {
            let f = h2.read().expect("server settings");
            if f.kind == SETTINGS {
                break;
            }
        }
        h2.send(&frame(SETTINGS, ACK, 0, &[]))
            .expect("settings ack");
        h2
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// The next frame, or `None` once the server closed the connection. PINGs are answered
    /// as a live client would (a graceful GOAWAY waits for one). A server that neither talks
    /// nor closes within `WAIT` fails the test.
    fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.read_exact(&mut payload)?;
        let f = Frame {
            kind: head[3],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if f.kind == PING && head[4] & ACK == 0 {
            let _ = self.send(&frame(PING, ACK, 0, &f.payload));
        }
        Some(f)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Option<()> {
        match self.sock.read_exact(buf) {
            Ok(()) => Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server neither sent a frame nor closed within {WAIT:?}")
            }
            Err(_) => None, // EOF or reset: closed
        }
    }

    /// Frames until the server closes (bounded by the read timeout and a frame count).
    fn read_to_close(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.read() {
            frames.push(f);
            assert!(frames.len() < 1_000_000, "server keeps talking");
        }
        frames
    }
}

fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
}

fn start(env: &[(&str, &str)]) -> ChildServer {
    let mut all = vec![("MICRONODE_STORAGE_ENGINE", "mem")];
    all.extend_from_slice(env);
    ChildServer::spawn(&all)
}

#[test]
fn streams_beyond_the_limit_are_refused() {
    let s = start(&[
        ("MICRONODE_H2_MAX_CONCURRENT_STREAMS", "2"),
        ("MICRONODE_READY_SLEEP_MS", "1000"),
        ("MICRONODE_DEV_READY", "1"),
    ]);
    let mut h2 = H2::open(s.addr);
    // Three slow requests at once: the third is over the limit of two.
    let mut burst = Vec::new();
    for id in [1, 3, 5] {
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get_block("/readyz"),
        ));
    }
    h2.send(&burst).expect("send");
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    while answered.len() + refused.len() < 3 {
        let f = h2.read().expect("frame before close");
        match f.kind {
            RST_STREAM => {
                let code =
                    u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                assert_eq!(code, REFUSED_STREAM);
                refused.push(f.stream);
            }
            DATA if f.payload.ends_with(b"}") => answered.push(f.stream),
            _ => {}
        }
    }
    assert_eq!(refused, vec![5]);
    answered.sort();
    assert_eq!(answered, vec![1, 3]);
    s.still_serves();
}

#[test]
fn rapid_reset_loop_gets_goaway_with_bounded_memory() {
    let s = start(&[]);
    let pid = s.pid();
    let rss_before = rss_kib(pid);
    let mut h2 = H2::open(s.addr);
    let block = get_block("/healthz");
    let mut sent = 0u32;
    'outer: for batch in 0..100u32 {
        let mut wire = Vec::new();
        for i in 0..100u32 {
            let id = 1 + 2 * (batch * 100 + i);
            wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            wire.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if h2.send(&wire).is_err() {
            break 'outer; // the server hung up
        }
        sent += 100;
    }
    let frames = h2.read_to_close();
    // hyper/h2 answer the loop with GOAWAY ENHANCE_YOUR_CALM (0xb) and close.
    assert_eq!(
        goaway_code(&frames),
        Some(0xb),
        "after {sent} reset streams"
    );
    // …and stops there: the last stream it took (GOAWAY's last-stream-id) is far from the end
    // of the loop, and not every stream was answered.
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("goaway");
    let last_id = u32::from_be_bytes([
        goaway.payload[0],
        goaway.payload[1],
        goaway.payload[2],
        goaway.payload[3],
    ]) & 0x7fff_ffff;
    let last_sent = 1 + 2 * (sent - 1);
    assert!(
        last_id < last_sent,
        "GOAWAY after the whole loop ({last_id} of {last_sent})"
    );
    let answered = frames.iter().filter(|f| f.kind == HEADERS).count();
    assert!(answered < sent as usize, "every reset stream was answered");
    let growth_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 32, "RSS grew by {growth_mib} MiB");
    s.still_serves();
}

#[test]
fn continuation_flood_is_a_connection_error_with_flat_memory() {
    let s = start(&[]);
    let pid = s.pid();
    let rss_before = rss_kib(pid);
    let mut h2 = H2::open(s.addr);
    // HEADERS without END_HEADERS, then up to 32 MiB of CONTINUATION full of literal fields.
    h2.send(&frame(HEADERS, 0, 1, &get_block("/healthz")))
        .expect("headers");
    let mut fields = Vec::new();
    while fields.len() < 16_384 {
        fields.push(0x00); // literal, new name
        fields.push(3);
        fields.extend_from_slice(b"x-f");
        fields.push(100);
        fields.extend(std::iter::repeat_n(b'v', 100));
    }
    fields.truncate(16_384);
    let cont = frame(CONTINUATION, 0, 1, &fields);
    let mut sent = 0u32;
    for _ in 0..2_048 {
        if h2.send(&cont).is_err() {
            break;
        }
        sent += 1;
    }
    let frames = h2.read_to_close();
    assert!(
        goaway_code(&frames).is_some() || sent < 2_048,
        "the flood was neither refused nor cut off ({sent} frames sent)"
    );
    assert!(
        frames.iter().all(|f| f.kind != HEADERS),
        "a flooded request was answered"
    );
    let growth_mib = rss_kib(pid).saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 32, "RSS grew by {growth_mib} MiB");
    s.still_serves();
}

#[test]
fn idle_connections_get_goaway() {
    let s = start(&[
        ("MICRONODE_IDLE_TIMEOUT_MS", "400"),
        ("MICRONODE_HEADER_READ_TIMEOUT_MS", "400"),
    ]);
    let mut h2 = H2::open(s.addr);
    h2.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &get_block("/healthz"),
    ))
    .expect("request");
    let frames = h2.read_to_close();
    assert!(
        frames.iter().any(|f| f.kind == DATA && f.stream == 1),
        "the request was answered"
    );
    assert_eq!(goaway_code(&frames), Some(0), "GOAWAY NO_ERROR, then close");
    // An HTTP/2 connection that never sends a request is closed too (first-head deadline).
    let mut silent = H2::open(s.addr);
    silent.read_to_close();
    s.still_serves();
}
