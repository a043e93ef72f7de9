//! The real binary as a child process, through the shared test handle (`tests/support`):
//! started on `127.0.0.1:0` with JSON logs, its address read from the log, readiness polled on
//! `/healthz`; stopped with SIGTERM (clean) or SIGKILL.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::ChildServer;

/// `sled` with `durability = "sync"`, `mem`, or `postgres` (the database at
/// `MICRONODE_TEST_PG_URL`; every server started on the same `data` path shares one schema,
/// so the workload runs two nodes over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    SledSync,
    Mem,
    Postgres,
}

/// The postgres schema of the servers started on `data`: one per scenario directory.
fn schema_of(data: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    format!("lincheck_{}_{:016x}", std::process::id(), h.finish())
}

pub struct Server {
    inner: ChildServer,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the binary with its data in `data` (sled) and waits until it answers `/healthz`.
    pub fn start(engine: Engine, data: &Path) -> Server {
        let path = data.to_str().expect("temp paths are UTF-8");
        let mut env = vec![("MICRONODE_STORAGE_PATH", path)];
        let (url, schema);
        match engine {
            Engine::SledSync => {
                env.push(("MICRONODE_STORAGE_ENGINE", "sled"));
                env.push(("MICRONODE_DURABILITY", "sync"));
            }
            Engine::Mem => env.push(("MICRONODE_STORAGE_ENGINE", "mem")),
            Engine::Postgres => {
                url = std::env::var("MICRONODE_TEST_PG_URL").expect("MICRONODE_TEST_PG_URL");
                schema = schema_of(data);
                env.push(("MICRONODE_STORAGE_ENGINE", "postgres"));
                env.push(("MICRONODE_PG_URL", &url));
                env.push(("MICRONODE_PG_SCHEMA", &schema));
            }
        }
        let cwd = data.parent().expect("the data directory has a parent");
        let inner = ChildServer::start(&env, cwd);
        Server {
            addr: inner.addr,
            inner,
        }
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.inner.signal("TERM");
        self.inner.wait_exit()
    }

    /// SIGKILL now, then reaps the process.
    pub fn kill_9(&mut self) {
        self.inner.signal("KILL");
        let _ = self.inner.wait_exit();
    }

    #[allow(dead_code)] // for ad-hoc debugging of a failing history
    pub fn logs(&self) -> String {
        self.inner.logs()
    }
}
