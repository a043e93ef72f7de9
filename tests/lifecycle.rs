//! Boot and shutdown of the real binary: signals, draining, exit codes.

mod support;

use std::thread;

use support::{ChildServer, Conn};

/// A `/readyz` held open by the dev sleep completes after SIGTERM and reports draining;
/// new connections are refused; the process exits 0.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut server = ChildServer::spawn(&[
        ("MICRONODE_READY_SLEEP_MS", "1500"),
        ("MICRONODE_READY_TIMEOUT_MS", "10000"),
        ("MICRONODE_STORAGE_ENGINE", "mem"),
    ]);
    let addr = server.addr;
    let held = thread::spawn(move || {
        let mut c = Conn::open(addr);
        c.request("GET", "/readyz", &[], None)
    });
    // Wait until the held request is really in flight (the gauge says so), then signal.
    support::poll("readyz in flight", || {
        (server.metric("micronode_ready_inflight_current") >= 1.0).then_some(())
    });
    server.signal("TERM");
    support::poll("listener closed", || {
        std::net::TcpStream::connect(addr).err().map(|_| ())
    });
    let resp = held.join().expect("held request thread");
    assert_eq!(resp.status, 503, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["draining"], true);
    assert_eq!(v["ready"], false);
    assert_eq!(server.wait_exit(), Some(0), "logs: {}", server.logs());
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut server = ChildServer::spawn(&[]);
    assert_eq!(
        server.request("PUT", "/v1/kv/b/k", &[], Some(b"v")).status,
        201
    );
    server.signal("INT");
    assert_eq!(server.wait_exit(), Some(0), "logs: {}", server.logs());
    assert!(server.logs().contains("store flushed"));
}
