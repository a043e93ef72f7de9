//! The binary's command line and configuration errors, run as a real child process.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Instant;

use micronode::config::KNOBS;
use support::{ChildServer, WAIT, binary, poll, request, run_binary};

/// Every bad value stops the boot with exit 2 and one line naming the key or variable.
#[test]
fn config_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: &[(&str, &str, &str)] = &[
        (
            "MICRONODE_MAX_BODY_BYTES",
            "abc",
            "MICRONODE_MAX_BODY_BYTES",
        ),
        (
            "MICRONODE_BIND_ADDR",
            "127.0.0.1:70000",
            "MICRONODE_BIND_ADDR",
        ),
        (
            "MICRONODE_STORAGE_ENGINE",
            "rocksdb",
            "MICRONODE_STORAGE_ENGINE",
        ),
        (
            "MICRONODE_READY_ERROR_GATE_PCT",
            "150",
            "MICRONODE_READY_ERROR_GATE_PCT",
        ),
        ("MICRONODE_LOG_FORMAT", "yaml", "MICRONODE_LOG_FORMAT"),
        ("MICRONODE_WORKERS", "-1", "MICRONODE_WORKERS"),
    ];
    for (var, value, named) in cases {
        let (code, _, stderr) = run_binary(&["--check-config"], &[(var, value)], dir.path());
        assert_eq!(code, 2, "{var}={value}: {stderr}");
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    let (code, _, stderr) = run_binary(
        &["--check-config"],
        &[
            ("MICRONODE_AMNESIA", "1"),
            ("MICRONODE_STORAGE_ENGINE", "sled"),
        ],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("amnesia"), "{stderr}");
}

#[test]
fn unknown_toml_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_body = 5\n").expect("write");
    let f = file.display().to_string();
    let (code, _, stderr) = run_binary(&["--config", &f, "--check-config"], &[], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_body"), "{stderr}");
    let (code, _, stderr) = run_binary(
        &["--check-config"],
        &[("MICRONODE_CONFIG", "/no/such.toml")],
        dir.path(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/no/such.toml"), "{stderr}");
}

/// The file sets a value, the environment overrides it; `--check-config` prints the result.
#[test]
fn env_overrides_file_in_check_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("m.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_body_bytes = 1000\nkv_max_inflight = 7\n[rate_limit]\nrps = 3\n",
    )
    .expect("write");
    let f = file.display().to_string();
    let (code, stdout, stderr) = run_binary(
        &["--config", &f, "--check-config"],
        &[("MICRONODE_MAX_BODY_BYTES", "2000")],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    let cfg: toml::Table = toml::from_str(&stdout).expect("prints TOML");
    assert_eq!(cfg["limits"]["max_body_bytes"].as_integer(), Some(2000));
    assert_eq!(cfg["limits"]["kv_max_inflight"].as_integer(), Some(7));
    assert_eq!(cfg["rate_limit"]["rps"].as_integer(), Some(3));
    assert_eq!(cfg["server"]["bind_addr"].as_str(), Some("127.0.0.1:5310"));
}

#[test]
fn help_and_version_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, _) = run_binary(&["--help"], &[], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("--check-config") && out.contains("MICRONODE_MAX_BODY_BYTES"));
    let (code, out, _) = run_binary(&["--version"], &[], dir.path());
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("micronode {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, _, err) = run_binary(&["--bogus"], &[], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"));
}

/// `--help` lists every knob's variable with its default, generated from the knob table.
#[test]
fn long_help_lists_every_knob_with_its_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = run_binary(&["--help"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("MICRONODE_CONFIG"), "{out}");
    for knob in KNOBS {
        let default = match knob.default_text() {
            d if d.is_empty() => "unset".to_owned(),
            d => d,
        };
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(knob.env))
            .unwrap_or_else(|| panic!("{} is not in --help:\n{out}", knob.env));
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{}: {line}",
            knob.env
        );
    }
    for cmd in ["serve", "check-config", "completions"] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    assert!(!out.contains("config-docs"), "the docs helper stays hidden");
}

/// Output commands whose reader has already gone (`micronode --help | head -1`) exit 0
/// instead of panicking on the broken pipe.
#[test]
fn output_into_a_closed_pipe_exits_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let commands: &[&[&str]] = &[
        &["--help"],
        &["-h"],
        &["--version"],
        &["completions", "bash"],
        &["check-config"],
        &["--check-config"],
        &["config-docs"],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader); // nobody will read: every write gets EPIPE
        let out = Command::new(binary())
            .args(*args)
            .current_dir(dir.path())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .expect("run micronode");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Each shell gets a non-empty completion script that knows the subcommands.
#[test]
fn completions_for_each_shell() {
    let dir = tempfile::tempdir().expect("temp dir");
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run_binary(&["completions", shell], &[], dir.path());
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("micronode"), "{shell}: {out}");
        assert!(out.contains("check-config"), "{shell}: {out}");
    }
    let (code, _, err) = run_binary(&["completions", "tcsh"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bash, zsh, fish"), "{err}");
}

/// `check-config` is the subcommand spelling of `--check-config`: same output, same codes.
#[test]
fn check_config_subcommand_matches_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("m.toml");
    std::fs::write(&file, "[limits]\nmax_body_bytes = 1000\n").expect("write");
    let f = file.display().to_string();
    let env = [("MICRONODE_RL_RPS", "9")];
    let (code, sub, err) = run_binary(&["check-config", "--config", &f], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    let (code, flag, err) = run_binary(&["--check-config", "--config", &f], &env, dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(sub, flag);
    let cfg: toml::Table = toml::from_str(&sub).expect("prints TOML");
    assert_eq!(cfg["limits"]["max_body_bytes"].as_integer(), Some(1000));
    assert_eq!(cfg["rate_limit"]["rps"].as_integer(), Some(9));

    let bad = [("MICRONODE_KV_MAX_INFLIGHT", "0")];
    let (code, _, err) = run_binary(&["check-config"], &bad, dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MICRONODE_KV_MAX_INFLIGHT"), "{err}");
    let (code, _, err) = run_binary(&["serve", "--config", "/no/such.toml"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/no/such.toml"), "{err}");
    // Top-level flags belong to the no-subcommand form only.
    let (code, _, err) = run_binary(&["--config", &f, "serve"], &[], dir.path());
    assert_eq!(code, 2, "{err}");
}

/// Booleans take 0/1, true/false, yes/no, on/off in any case, and the refusal says exactly that.
#[test]
fn booleans_accept_the_documented_words_and_say_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (raw, want) in [
        ("1", true),
        ("TRUE", true),
        ("yes", true),
        ("On", true),
        ("0", false),
        ("false", false),
        ("NO", false),
        ("off", false),
    ] {
        let (code, out, err) = run_binary(
            &["check-config"],
            &[("MICRONODE_DEV_ROUTES", raw)],
            dir.path(),
        );
        assert_eq!(code, 0, "{raw}: {err}");
        let cfg: toml::Table = toml::from_str(&out).expect("prints TOML");
        assert_eq!(cfg["dev"]["routes"].as_bool(), Some(want), "{raw}");
    }
    for raw in ["maybe", "2", "", "enabled"] {
        let (code, _, err) = run_binary(
            &["check-config"],
            &[("MICRONODE_ALLOW_COMPRESSED", raw)],
            dir.path(),
        );
        assert_eq!(code, 2, "{raw:?}: {err}");
        assert!(err.contains("MICRONODE_ALLOW_COMPRESSED"), "{err}");
        assert!(
            err.contains("expected 0/1, true/false, yes/no, on/off (any case)"),
            "{raw:?}: {err}"
        );
    }
}

/// A host name in the bind address is resolved at boot: `check-config` shows the address, the
/// server listens and answers on it; a name that does not resolve is exit 2 naming the variable.
#[test]
fn localhost_bind_address_is_resolved_at_boot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = run_binary(
        &["check-config"],
        &[("MICRONODE_BIND_ADDR", "localhost:5310")],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let cfg: toml::Table = toml::from_str(&out).expect("prints TOML");
    let addr: SocketAddr = cfg["server"]["bind_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("a resolved socket address");
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(addr.port(), 5310);

    let server = ChildServer::start(
        &[
            ("MICRONODE_BIND_ADDR", "localhost:0"),
            ("MICRONODE_STORAGE_ENGINE", "mem"),
        ],
        dir.path(),
    );
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_eq!(
        request(server.addr, "GET", "/healthz", &[], None).status,
        200
    );

    let (code, _, err) = run_binary(
        &["check-config"],
        &[("MICRONODE_BIND_ADDR", "no-such-host.invalid:5310")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MICRONODE_BIND_ADDR"), "{err}");
    assert!(err.contains("does not resolve"), "{err}");
    let (code, _, err) = run_binary(
        &["check-config"],
        &[("MICRONODE_BIND_ADDR", "bad host!:5310")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MICRONODE_BIND_ADDR"), "{err}");
}

/// With the mem engine the storage path is not needed; with sled an empty one is refused.
#[test]
fn storage_path_is_required_only_for_sled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, _, err) = run_binary(
        &["check-config"],
        &[
            ("MICRONODE_STORAGE_ENGINE", "mem"),
            ("MICRONODE_STORAGE_PATH", ""),
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_binary(
        &["check-config"],
        &[("MICRONODE_STORAGE_PATH", "")],
        dir.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("MICRONODE_STORAGE_PATH"), "{err}");
}

/// `micronode serve` with text logs into a pipe: it serves, stops cleanly on SIGTERM, and the
/// log has no ANSI colour codes (colour is for terminals only).
#[test]
fn serve_subcommand_text_logs_into_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("MICRONODE_BIND_ADDR", "127.0.0.1:0")
        .env("MICRONODE_LOG_FORMAT", "text")
        .env("MICRONODE_STORAGE_ENGINE", "mem")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn micronode");
    let pipe = child.stderr.take().expect("piped stderr");
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = line_tx.send(line);
        }
        all
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match line_rx.recv_timeout(left) {
            Ok(line) if line.contains("micronode listening") => break,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listening line ({e})");
            }
        }
    }
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
    let status = poll("exit after SIGTERM", || child.try_wait().expect("try_wait"));
    let logs = reader.join().expect("stderr reader");
    assert_eq!(status.code(), Some(0), "{logs}");
    assert!(logs.contains("store flushed"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape in piped logs: {logs:?}"
    );
}

/// `config-docs` prints exactly the generated table the docs test compares against.
#[test]
fn config_docs_prints_the_generated_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, out, err) = run_binary(&["config-docs"], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, micronode::config::docs_table());
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md"))
        .expect("docs/CONFIG.md");
    assert!(
        docs.contains(&out),
        "docs/CONFIG.md is stale; run `micronode config-docs`"
    );
}
