//! `micronode auth …` end to end: the binary creates and rotates a key file, mints,
//! attenuates and inspects tokens, and answers bad input with the documented exit codes.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use micronode::auth::{KeyRing, Op, Target, Unverified, now_unix};
use support::{run_binary, run_binary_with};

/// The whole offline flow: init, mint, attenuate (from stdin), inspect, rotate; the printed
/// tokens verify against the file and carry what was asked.
#[test]
fn init_mint_attenuate_inspect_rotate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    let (code, out, err) = run_binary(&["auth", "init", "--keys", "keys.toml"], &[], cwd);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("k1"));
    let mode = std::fs::metadata(cwd.join("keys.toml"))
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let mint = [
        "auth",
        "mint",
        "--keys",
        "keys.toml",
        "--tenant",
        "acme",
        "--bucket",
        "photos",
        "--ops",
        "get,list",
        "--ttl",
        "60",
    ];
    let (code, token, err) = run_binary(&mint, &[], cwd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(token.lines().count(), 1, "the token and nothing else");
    let token = token.trim();

    let (code, child, err) = run_binary_with(
        &["auth", "attenuate", "-", "--prefix", "users/42/"],
        &[],
        cwd,
        Some(format!("{token}\n").as_bytes()),
    );
    assert_eq!(code, 0, "{err}");
    let child = String::from_utf8(child).expect("UTF-8");
    let child = child.trim();

    let ring = KeyRing::load(&cwd.join("keys.toml")).expect("loads");
    let v = Unverified::parse(child)
        .expect("parses")
        .verify(&ring, now_unix(), 0)
        .expect("verifies");
    assert_eq!(v.tenant(), "acme");
    assert!(v.allows(Op::Get, "photos", Target::Key("users/42/a")));
    assert!(!v.allows(Op::Get, "photos", Target::Key("users/43/a")));
    assert!(!v.allows(Op::Put, "photos", Target::Key("users/42/a")));

    let (code, json, err) = run_binary(&["auth", "inspect", child], &[], cwd);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["key_id"], "k1");
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["caveats"][0]["bucket"], "photos");
    assert_eq!(
        json["caveats"][1]["ops"],
        serde_json::json!(["get", "list"])
    );
    assert_eq!(json["caveats"][3]["prefix"], "users/42/");
    assert_eq!(
        json.as_object().expect("object").len(),
        4,
        "no tag, no secret"
    );

    let (code, _, err) = run_binary(&["auth", "rotate", "--keys", "keys.toml"], &[], cwd);
    assert_eq!(code, 0, "{err}");
    let (code, token2, _) = run_binary(&mint[..6], &[], cwd);
    assert_eq!(code, 0);
    let (_, json, _) = run_binary(&["auth", "inspect", token2.trim()], &[], cwd);
    assert!(json.contains(r#""key_id":"k2""#), "{json}");
    let ring = KeyRing::load(&cwd.join("keys.toml")).expect("loads");
    let old = Unverified::parse(child).expect("parses");
    assert!(
        old.verify(&ring, now_unix(), 0).is_ok(),
        "old tokens survive rotation"
    );
}

/// Bad arguments exit 2; refused files and tokens exit 1 with one line on stderr.
#[test]
fn auth_errors_exit_1_or_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cwd = dir.path();
    let run = |args: &[&str]| run_binary(args, &[], cwd);
    assert_eq!(run(&["auth", "init", "--keys", "k.toml"]).0, 0);
    let (code, out, err) = run(&["auth", "init", "--keys", "k.toml"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("exists"), "{err}");
    for bad in [
        &["auth", "mint", "--keys", "k.toml", "--tenant", "Acme"][..],
        &[
            "auth", "mint", "--keys", "k.toml", "--tenant", "a", "--ops", "get,fly",
        ],
        &[
            "auth", "mint", "--keys", "k.toml", "--tenant", "a", "--bucket", "Bad/B",
        ],
        &[
            "auth", "mint", "--keys", "k.toml", "--tenant", "a", "--ttl", "0",
        ],
        &["auth", "mint", "--keys", "k.toml"],
        &["auth", "attenuate", "mn1_x"],
    ] {
        let (code, out, _) = run(bad);
        assert_eq!((code, out.as_str()), (2, ""), "{bad:?}");
    }
    let (code, out, err) = run(&["auth", "inspect", "mn1_!!"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, _) = run(&["auth", "attenuate", "nope", "--ops", "get"]);
    assert_eq!(code, 1);

    std::fs::set_permissions(cwd.join("k.toml"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let (code, out, err) = run(&["auth", "mint", "--keys", "k.toml", "--tenant", "a"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("chmod 600 k.toml"), "{err}");
}
