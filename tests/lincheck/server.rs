//! The real binary as a child process: started on `127.0.0.1:0` with JSON logs, its address
//! read from the log line that carries `addr`, readiness polled on `/healthz`; stopped with
//! SIGTERM (clean) or SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for a boot or an exit.
const WAIT: Duration = Duration::from_secs(30);

/// `sled` with `durability = "sync"`, or `mem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    SledSync,
    Mem,
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the binary with its data in `data` (sled) and waits until it answers `/healthz`.
    pub fn start(engine: Engine, data: &PathBuf) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_micronode"));
        cmd.env_clear()
            .env("MICRONODE_BIND_ADDR", "127.0.0.1:0")
            .env("MICRONODE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env("MICRONODE_STORAGE_PATH", data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(parent) = data.parent() {
            cmd.current_dir(parent);
        }
        match engine {
            Engine::SledSync => cmd
                .env("MICRONODE_STORAGE_ENGINE", "sled")
                .env("MICRONODE_DURABILITY", "sync"),
            Engine::Mem => cmd.env("MICRONODE_STORAGE_ENGINE", "mem"),
        };
        let mut child = cmd.spawn().expect("spawn micronode");
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(a) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = addr_tx.send(a);
                    }
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let addr: SocketAddr = match addr_rx.recv_timeout(WAIT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "micronode did not log its address; stderr: {}",
                    logs.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
        };
        let deadline = Instant::now() + WAIT;
        while !healthz_ok(addr) {
            assert!(
                Instant::now() < deadline,
                "micronode never answered /healthz"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child, addr, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
        self.wait_exit()
    }

    /// SIGKILL now, then reaps the process.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL micronode");
        let _ = self.wait_exit();
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "micronode did not exit; logs: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthz_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: lincheck\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}
