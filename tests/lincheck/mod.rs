//! Linearizability testing for the KV API: a checker (Wing & Gong / Lowe / Porcupine search
//! over a KV-with-ETags model, per key), a recorder for histories of concurrent requests, the
//! real binary as a child process, and a workload that runs clients across clean restarts and
//! `kill -9`. See docs/TESTING-LINEARIZABILITY.md.

pub mod checker;
pub mod history;
pub mod server;
pub mod workload;

#[cfg(test)]
mod checker_tests;
