//! `micronode audit verify`, run as a real child process on files written by the library.

mod support;

use std::path::Path;

use micronode::audit::{AuditLog, Event, chain_files};
use support::run_binary;

/// Writes `n` events to `path`, rotating every 4 KiB; returns the chain's files as strings.
fn write_chain(path: &Path, n: u64) -> Vec<String> {
    let log = AuditLog::open(path, 4096).expect("open");
    for i in 0..n {
        let key = format!("k/{i}");
        log.append(&Event {
            op: "put",
            bucket: Some("app"),
            key: Some(&key),
            status: 200,
            revision: Some(i + 1),
            ..Event::default()
        })
        .expect("append");
    }
    log.sync().expect("sync");
    chain_files(path)
        .expect("list")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// A valid chain prints the summary and exits 0; a changed line exits 1 naming file and line.
#[test]
fn audit_verify_prints_a_summary_or_names_the_first_bad_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.log");
    let files = write_chain(&path, 100);
    assert!(files.len() > 2, "{files:?}");
    let args: Vec<&str> = ["audit", "verify"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();

    let (code, stdout, stderr) = run_binary(&args, &[], dir.path());
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(summary["files"], files.len());
    assert_eq!(summary["lines"], 100);
    assert_eq!(summary["first_seq"], 1);
    assert_eq!(summary["last_seq"], 100);
    assert_eq!(summary["last_hash"].as_str().map(str::len), Some(64));

    let first = &files[0];
    let text = std::fs::read_to_string(first).expect("read");
    std::fs::write(first, text.replacen("\"k/1\"", "\"k/X\"", 1)).expect("write");
    let (code, stdout, stderr) = run_binary(&args, &[], dir.path());
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "micronode: {first}:3: prev is not the SHA-256 of the line before (that line was changed)"
        )
    );
}

/// `audit verify` without a file is a usage error.
#[test]
fn audit_verify_needs_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = run_binary(&["audit", "verify"], &[], dir.path());
    assert_eq!(code, 2, "{stderr}");
}
