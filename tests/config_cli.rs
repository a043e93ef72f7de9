//! The binary's command line and configuration errors, run as a real child process.

mod support;

use support::run_binary;

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
