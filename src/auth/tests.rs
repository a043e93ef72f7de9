//! Tokens, policy and the key ring: round trips, the tampering table, time bounds, the
//! intersection rules, and the property that attenuation only narrows.

use std::os::unix::fs::PermissionsExt as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use proptest::prelude::*;

use super::token::{HmacSha256, MAX_CAVEATS, MAX_TOKEN_BYTES, mint_with_nonce};
use super::*;

const NOW: u64 = 1_767_225_600;

fn key(id: &str, fill: u8) -> Key {
    Key::new(id, [fill; 32], 1).expect("valid id")
}

fn ring() -> KeyRing {
    KeyRing::new(vec![key("k1", 7), key("k2", 9)]).expect("two distinct keys")
}

fn mint_k1(caveats: &[Caveat]) -> String {
    mint_with_nonce(ring().get("k1").expect("k1"), [3; 16], "acme", caveats).expect("mintable")
}

fn verify(token: &str) -> Result<Verified, AuthFailure> {
    verify_at(token, NOW, 0)
}

fn verify_at(token: &str, now: u64, leeway: u64) -> Result<Verified, AuthFailure> {
    Unverified::parse(token)?.verify(&ring(), now, leeway)
}

fn decode(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.strip_prefix("mn1_").expect("prefix"))
        .expect("base64")
}

fn encode(raw: &[u8]) -> String {
    format!("mn1_{}", URL_SAFE_NO_PAD.encode(raw))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The identifier of a token minted by `mint_k1`: version, key id, nonce, tenant.
fn ident_k1() -> Vec<u8> {
    let mut v = vec![1, 2, b'k', b'1'];
    v.extend_from_slice(&[3; 16]);
    v.push(4);
    v.extend_from_slice(b"acme");
    v
}

/// A token built by hand from caveat records, chained with k1's secret: authentic whatever
/// the records say.
fn hand_made(records: &[Vec<u8>]) -> String {
    let ident = ident_k1();
    let mut tag = hmac(&[7; 32], &ident);
    let mut raw = ident;
    raw.push(u8::try_from(records.len()).expect("few records"));
    for r in records {
        tag = hmac(&tag, r);
        raw.extend_from_slice(r);
    }
    raw.extend_from_slice(&tag);
    encode(&raw)
}

fn record(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![ty];
    r.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    r.extend_from_slice(payload);
    r
}

fn three_caveats() -> Vec<Caveat> {
    vec![
        Caveat::Bucket("photos".into()),
        Caveat::Prefix("users/42/".into()),
        Caveat::Ops(Ops::parse_list("get,list").expect("names")),
    ]
}

/// A minted token parses, verifies, re-encodes to itself and reports what it was given.
#[test]
fn mint_parse_verify_round_trips() {
    let mut caveats = three_caveats();
    caveats.push(Caveat::NotAfter(NOW + 60));
    caveats.push(Caveat::NotBefore(NOW - 60));
    let token = mint_k1(&caveats);
    assert!(token.starts_with("mn1_"));
    let parsed = Unverified::parse(&token).expect("parses");
    assert_eq!(parsed.encode(), token);
    assert_eq!(parsed.caveats(), caveats.as_slice());
    let v = parsed.verify(&ring(), NOW, 0).expect("verifies");
    assert_eq!(v.tenant(), "acme");
    assert_eq!(v.key_id(), "k1");
    assert_eq!(v.nonce_hex(), "03".repeat(16));
    assert_eq!(v.caveats(), caveats.as_slice());
    assert!(v.allows(Op::Get, "photos", Target::Key("users/42/a.jpg")));
    assert!(!v.allows(Op::Put, "photos", Target::Key("users/42/a.jpg")));
}

/// The chain is exactly tag₀ = HMAC(secret, identifier), tagᵢ = HMAC(tagᵢ₋₁, record).
#[test]
fn the_tag_is_the_documented_hmac_chain() {
    let caveats = three_caveats();
    let records: Vec<Vec<u8>> = vec![
        record(1, b"photos"),
        record(2, b"users/42/"),
        record(3, &[1 | 2]),
    ];
    assert_eq!(mint_k1(&caveats), hand_made(&records));
}

/// `mint` draws a fresh nonce each time.
#[test]
fn mint_uses_a_fresh_nonce() {
    let k = key("k1", 7);
    let a = inspect(&mint(&k, "acme", &[]).expect("mints")).expect("parses");
    let b = inspect(&mint(&k, "acme", &[]).expect("mints")).expect("parses");
    assert_ne!(a.nonce, b.nonce);
}

/// A token with no caveats is the root capability: every op, every bucket, the whole node.
#[test]
fn a_token_without_caveats_allows_everything() {
    let v = verify(&mint_k1(&[])).expect("verifies");
    assert!(v.allows(Op::Delete, "any", Target::Key("k")));
    assert!(v.allows(Op::List, "any", Target::Prefix("")));
    assert!(v.allows_node(Op::Admin));
}

/// Every single flipped bit of the decoded token, at every position, makes it invalid, and
/// nothing panics.
#[test]
fn every_flipped_bit_is_invalid() {
    let token = mint_k1(&three_caveats());
    let raw = decode(&token);
    for i in 0..raw.len() {
        for bit in 0..8 {
            let mut bad = raw.clone();
            bad[i] ^= 1 << bit;
            assert_eq!(
                verify(&encode(&bad)).err(),
                Some(AuthFailure::Invalid),
                "byte {i} bit {bit}"
            );
        }
    }
}

/// The tampering table: each forgery is `Invalid`.
#[test]
fn tampered_tokens_are_invalid() {
    let caveats = three_caveats();
    let token = mint_k1(&caveats);
    let raw = decode(&token);
    let ident_len = ident_k1().len();
    let records = [
        record(1, b"photos"),
        record(2, b"users/42/"),
        record(3, &[3]),
    ];

    // The last caveat stripped, the count lowered, the final tag kept.
    let mut stripped = raw[..raw.len() - 32 - records[2].len()].to_vec();
    stripped[ident_len] = 2;
    stripped.extend_from_slice(&raw[raw.len() - 32..]);
    // Two caveats swapped.
    let mut reordered = raw[..=ident_len].to_vec();
    reordered.extend_from_slice(&records[1]);
    reordered.extend_from_slice(&records[0]);
    reordered.extend_from_slice(&records[2]);
    reordered.extend_from_slice(&raw[raw.len() - 32..]);
    assert_eq!(reordered.len(), raw.len());
    // The same token minted with another secret under the same key id.
    let foreign = mint_with_nonce(&key("k1", 8), [3; 16], "acme", &caveats).expect("mints");
    // A key id the ring does not hold.
    let unknown = mint_with_nonce(&key("k9", 7), [3; 16], "acme", &caveats).expect("mints");
    // The tag cut short, and a byte appended after it.
    let truncated = encode(&raw[..raw.len() - 1]);
    let mut trailing = raw.clone();
    trailing.push(0);
    // An unknown caveat type, chained correctly with the real key: still refused.
    let unknown_caveat = hand_made(&[record(9, b"x")]);
    let unknown_ops_bit = hand_made(&[record(3, &[0x80])]);
    let short_time = hand_made(&[record(4, &[0; 7])]);
    let empty_prefix = hand_made(&[record(2, b"")]);
    let bad_utf8 = hand_made(&[record(1, &[0xff])]);
    // 33 caveats, correctly chained.
    let too_many = hand_made(&vec![record(3, &[1]); MAX_CAVEATS + 1]);
    let oversized = format!("{token}{}", "A".repeat(MAX_TOKEN_BYTES));
    // The tag replaced by the tag of the identifier alone (what a caveat-free token carries).
    let mut first_tag = raw[..raw.len() - 32].to_vec();
    first_tag.extend_from_slice(&hmac(&[7; 32], &ident_k1()));

    let table: Vec<(&str, String)> = vec![
        ("stripped last caveat", encode(&stripped)),
        ("reordered caveats", encode(&reordered)),
        ("foreign key, same id", foreign),
        ("unknown key id", unknown),
        ("truncated tag", truncated),
        ("bytes after the tag", encode(&trailing)),
        ("tag of the identifier", encode(&first_tag)),
        ("unknown caveat type", unknown_caveat),
        ("unknown ops bit", unknown_ops_bit),
        ("7-byte time", short_time),
        ("empty prefix", empty_prefix),
        ("non-UTF-8 bucket", bad_utf8),
        ("33 caveats", too_many),
        ("oversized", oversized),
        ("junk base64", "mn1_!!!!".into()),
        ("padded base64", format!("{token}=")),
        ("wrong prefix", token.replacen("mn1_", "mn2_", 1)),
        ("no prefix", token[4..].to_owned()),
        ("empty", String::new()),
        ("prefix only", "mn1_".into()),
        ("version 2", encode(&[&[2u8][..], &raw[1..]].concat())),
    ];
    for (name, t) in table {
        assert_eq!(verify(&t).err(), Some(AuthFailure::Invalid), "{name}");
    }
}

/// The syntax errors name the cap that was hit, and the caps come first.
#[test]
fn caps_are_reported_as_such() {
    let over = format!("mn1_{}", "!".repeat(MAX_TOKEN_BYTES));
    assert_eq!(Unverified::parse(&over).err(), Some(TokenError::TooLong));
    let many = hand_made(&vec![record(3, &[1]); MAX_CAVEATS + 1]);
    assert_eq!(
        Unverified::parse(&many).err(),
        Some(TokenError::TooManyCaveats)
    );
    assert_eq!(Unverified::parse("").err(), Some(TokenError::Empty));
    assert_eq!(
        Unverified::parse(&hand_made(&[record(200, b"")])).err(),
        Some(TokenError::UnknownCaveat(200))
    );
}

/// A base64 string with non-zero trailing bits decodes to the same bytes as the canonical one;
/// it is refused, so each token has exactly one spelling.
#[test]
fn non_canonical_base64_is_invalid() {
    let token = mint_k1(&[]);
    let raw = decode(&token);
    assert_ne!(raw.len() % 3, 0, "the fixture must end in a partial group");
    let last = token.chars().last().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.find(last).expect("base64url");
    let bumped = alphabet.as_bytes()[pos + 1] as char;
    let variant = format!("{}{bumped}", &token[..token.len() - 1]);
    assert_eq!(verify(&variant).err(), Some(AuthFailure::Invalid));
}

/// `not_after` is the last good second; `not_before` the first; leeway widens both.
#[test]
fn time_bounds_are_inclusive_and_widened_by_leeway() {
    let t = mint_k1(&[Caveat::NotAfter(NOW)]);
    assert!(verify_at(&t, NOW, 0).is_ok());
    assert_eq!(verify_at(&t, NOW + 1, 0).err(), Some(AuthFailure::Expired));
    assert!(verify_at(&t, NOW + 1, 1).is_ok());
    assert_eq!(verify_at(&t, NOW + 2, 1).err(), Some(AuthFailure::Expired));

    let t = mint_k1(&[Caveat::NotBefore(NOW)]);
    assert!(verify_at(&t, NOW, 0).is_ok());
    assert_eq!(verify_at(&t, NOW - 1, 0).err(), Some(AuthFailure::Expired));
    assert!(verify_at(&t, NOW - 1, 1).is_ok());
    assert_eq!(verify_at(&t, NOW - 2, 1).err(), Some(AuthFailure::Expired));

    // Saturation at the ends of time.
    let t = mint_k1(&[Caveat::NotAfter(u64::MAX), Caveat::NotBefore(0)]);
    assert!(verify_at(&t, u64::MAX, u64::MAX).is_ok());
    assert!(verify_at(&t, 0, 0).is_ok());
}

/// An expired token with a bad tag is `Invalid`: expiry is only reported for authentic tokens.
#[test]
fn a_forged_expired_token_is_invalid_not_expired() {
    let forged = mint_with_nonce(&key("k1", 8), [3; 16], "acme", &[Caveat::NotAfter(NOW - 1)])
        .expect("mints");
    assert_eq!(verify(&forged).err(), Some(AuthFailure::Invalid));
}

/// Repeated caveats of one kind intersect.
#[test]
fn repeated_caveats_intersect() {
    let ops = |s| Caveat::Ops(Ops::parse_list(s).expect("names"));
    let v = verify(&mint_k1(&[ops("get,put,list"), ops("put,list,admin")])).expect("ok");
    assert_eq!(
        v.restriction().ops(),
        Ops::parse_list("put,list").expect("names")
    );
    assert!(!v.allows(Op::Get, "b", Target::Key("k")));

    let b = |s: &str| Caveat::Bucket(s.into());
    let v = verify(&mint_k1(&[b("a"), b("a")])).expect("ok");
    assert!(v.allows(Op::Get, "a", Target::Key("k")));
    let v = verify(&mint_k1(&[b("a"), b("b")])).expect("ok");
    assert_eq!(v.restriction().bucket(), &BucketScope::Nothing);
    assert!(!v.allows(Op::Get, "a", Target::Key("k")));
    assert!(!v.allows(Op::Get, "b", Target::Key("k")));

    let p = |s: &str| Caveat::Prefix(s.into());
    let v = verify(&mint_k1(&[p("a/"), p("a/b/")])).expect("ok");
    assert!(v.allows(Op::Get, "x", Target::Key("a/b/c")));
    assert!(!v.allows(Op::Get, "x", Target::Key("a/c")));
    let v = verify(&mint_k1(&[p("a/"), p("b/")])).expect("ok");
    assert!(!v.allows(Op::Get, "x", Target::Key("a/c")));
    assert!(!v.allows(Op::Get, "x", Target::Key("b/c")));

    let v = verify_at(
        &mint_k1(&[
            Caveat::NotAfter(NOW + 10),
            Caveat::NotAfter(NOW + 5),
            Caveat::NotBefore(NOW - 10),
            Caveat::NotBefore(NOW - 5),
        ]),
        NOW,
        0,
    )
    .expect("ok");
    assert_eq!(v.restriction().not_after(), Some(NOW + 5));
    assert_eq!(v.restriction().not_before(), Some(NOW - 5));
    assert_eq!(
        verify_at(
            &mint_k1(&[Caveat::NotAfter(NOW + 10), Caveat::NotAfter(NOW - 1)]),
            NOW,
            0
        )
        .err(),
        Some(AuthFailure::Expired)
    );
}

/// Under a prefix caveat a listing must ask for a prefix inside it; a cursor must be inside it.
#[test]
fn list_and_watch_prefixes_and_cursors_must_be_inside_every_prefix_caveat() {
    let v = verify(&mint_k1(&three_caveats())).expect("ok");
    assert!(v.allows(Op::List, "photos", Target::Prefix("users/42/")));
    assert!(v.allows(Op::List, "photos", Target::Prefix("users/42/2024/")));
    assert!(!v.allows(Op::List, "photos", Target::Prefix("")));
    assert!(!v.allows(Op::List, "photos", Target::Prefix("users/4")));
    assert!(!v.allows(Op::Watch, "photos", Target::Prefix("users/42/")));
    assert!(!v.allows(Op::List, "videos", Target::Prefix("users/42/")));
    assert!(v.allows_cursor("photos", "users/42/b"));
    assert!(!v.allows_cursor("photos", "users/41/z"));
    assert!(!v.allows_cursor("videos", "users/42/b"));
}

/// Node-wide requests need the op and no bucket or prefix caveat.
#[test]
fn node_wide_requests_need_an_unscoped_token() {
    let admin = Caveat::Ops(Op::Admin.into());
    assert!(
        verify(&mint_k1(std::slice::from_ref(&admin)))
            .expect("ok")
            .allows_node(Op::Admin)
    );
    let scoped = verify(&mint_k1(&[admin.clone(), Caveat::Bucket("b".into())])).expect("ok");
    assert!(!scoped.allows_node(Op::Admin));
    let prefixed = verify(&mint_k1(&[admin, Caveat::Prefix("p".into())])).expect("ok");
    assert!(!prefixed.allows_node(Op::Admin));
    let reader = verify(&mint_k1(&[Caveat::Ops(Op::Get.into())])).expect("ok");
    assert!(!reader.allows_node(Op::Admin));
}

/// Attenuation appends caveats a holder can add without the key, and the result verifies.
#[test]
fn attenuation_appends_and_verifies() {
    let parent = mint_k1(&[Caveat::Bucket("photos".into())]);
    let child = attenuate(&parent, &[Caveat::Prefix("users/42/".into())]).expect("attenuates");
    let v = verify(&child).expect("verifies");
    assert_eq!(v.caveats().len(), 2);
    assert_eq!(v.nonce_hex(), verify(&parent).expect("ok").nonce_hex());
    assert!(v.allows(Op::Get, "photos", Target::Key("users/42/x")));
    assert!(!v.allows(Op::Get, "photos", Target::Key("users/43/x")));
    // Attenuating an attenuation keeps chaining.
    let grandchild = attenuate(&child, &[Caveat::NotAfter(NOW)]).expect("attenuates");
    assert!(verify_at(&grandchild, NOW, 0).is_ok());
    assert_eq!(
        verify_at(&grandchild, NOW + 1, 0).err(),
        Some(AuthFailure::Expired)
    );
}

/// Attenuation stops at the caps and refuses invalid caveats.
#[test]
fn attenuation_respects_the_caps() {
    let mut t = mint_k1(&[]);
    for _ in 0..MAX_CAVEATS {
        t = attenuate(&t, &[Caveat::Ops(Ops::ALL)]).expect("under the cap");
    }
    assert!(verify(&t).is_ok());
    assert_eq!(
        attenuate(&t, &[Caveat::Ops(Ops::ALL)]).err(),
        Some(TokenError::TooManyCaveats)
    );
    let long = Caveat::Prefix("p".repeat(1024));
    let mut t = mint_k1(&[]);
    let err = loop {
        match attenuate(&t, std::slice::from_ref(&long)) {
            Ok(next) => t = next,
            Err(e) => break e,
        }
    };
    assert_eq!(err, TokenError::TooLong);
    assert!(t.len() <= MAX_TOKEN_BYTES && verify(&t).is_ok());
    assert_eq!(
        attenuate(&mint_k1(&[]), &[Caveat::Prefix(String::new())]).err(),
        Some(TokenError::BadCaveat("prefix"))
    );
    assert_eq!(
        attenuate("mn1_junk!", &[Caveat::Ops(Ops::NONE)]).err(),
        Some(TokenError::BadBase64)
    );
}

/// `inspect` reads the claims without a key and never shows the tag.
#[test]
fn inspect_shows_claims_but_not_the_tag() {
    let token = mint_k1(&three_caveats());
    let i = inspect(&token).expect("parses");
    let json = serde_json::to_string(&i).expect("serializes");
    assert_eq!(
        json,
        format!(
            r#"{{"key_id":"k1","nonce":"{}","tenant":"acme","caveats":[{{"bucket":"photos"}},{{"prefix":"users/42/"}},{{"ops":["get","list"]}}]}}"#,
            "03".repeat(16)
        )
    );
    let raw = decode(&token);
    let tag_b64 = URL_SAFE_NO_PAD.encode(&raw[raw.len() - 32..]);
    assert!(!json.contains(&tag_b64));
    let dbg = format!("{:?}", Unverified::parse(&token).expect("parses"));
    assert!(!dbg.contains(&token[4..]) && !dbg.contains("raw"));
}

/// Names and nonces: the syntax rules, and hex round trips.
#[test]
fn names_and_nonce_hex() {
    let k = key("k1", 7);
    for bad in ["", "Acme", "a b", &"a".repeat(64)] {
        assert_eq!(
            mint(&k, bad, &[]).err(),
            Some(TokenError::BadTenant),
            "{bad:?}"
        );
    }
    assert!(mint(&k, &"a".repeat(63), &[]).is_ok());
    assert!(Key::new("", [0; 32], 0).is_err());
    assert!(Key::new(&"k".repeat(33), [0; 32], 0).is_err());
    assert!(Key::new("K.1_-x", [0; 32], 0).is_ok());
    let hexed = "00ff10ab".repeat(4);
    let nonce = token::parse_nonce_hex(&hexed).expect("hex");
    assert_eq!(token::hex(&nonce), hexed);
    assert_eq!(token::parse_nonce_hex("zz"), None);
    assert_eq!(token::parse_nonce_hex(&"g".repeat(32)), None);
    assert_eq!(
        Ops::parse_list("get,bogus")
            .err()
            .map(|e| e.contains("bogus")),
        Some(true)
    );
    assert!(Ops::parse_list("").is_err());
}

fn arb_caveat() -> impl Strategy<Value = Caveat> {
    prop_oneof![
        prop::sample::select(vec!["a", "b"]).prop_map(|s| Caveat::Bucket(s.into())),
        prop::sample::select(vec!["x", "xy", "xz", "y"]).prop_map(|s| Caveat::Prefix(s.into())),
        (0u8..=0x7f).prop_map(|b| Caveat::Ops(Ops::from_bits(b).expect("in range"))),
        (NOW - 3..NOW + 3).prop_map(Caveat::NotAfter),
        (NOW - 3..NOW + 3).prop_map(Caveat::NotBefore),
    ]
}

fn arb_request() -> impl Strategy<Value = (Op, &'static str, &'static str, bool, u64)> {
    (
        prop::sample::select(Op::ALL.to_vec()),
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec!["", "x", "xy", "xyz", "xz", "y", "z"]),
        any::<bool>(),
        NOW - 4..NOW + 4,
    )
}

proptest! {
    /// Whatever is appended, the child allows nothing its parent does not.
    #[test]
    fn attenuation_only_narrows(
        parent in prop::collection::vec(arb_caveat(), 0..5),
        extra in prop::collection::vec(arb_caveat(), 1..5),
        requests in prop::collection::vec(arb_request(), 1..20),
    ) {
        let parent_token = mint_k1(&parent);
        let child_token = attenuate(&parent_token, &extra).expect("under the caps");
        for (op, bucket, s, is_key, now) in requests {
            let child = verify_at(&child_token, now, 0);
            let parent = verify_at(&parent_token, now, 0);
            let Ok(child) = child else { continue };
            let parent = parent.expect("a child verifies only when its parent does");
            let target = if is_key { Target::Key(s) } else { Target::Prefix(s) };
            if child.allows(op, bucket, target) {
                prop_assert!(parent.allows(op, bucket, target));
            }
            if child.allows_cursor(bucket, s) {
                prop_assert!(parent.allows_cursor(bucket, s));
            }
            if child.allows_node(op) {
                prop_assert!(parent.allows_node(op));
            }
        }
    }

    /// Caveat order does not change the decision.
    #[test]
    fn caveat_order_does_not_matter(
        caveats in prop::collection::vec(arb_caveat(), 0..6),
        request in arb_request(),
    ) {
        let mut reversed = caveats.clone();
        reversed.reverse();
        let (a, b) = (Restriction::from_caveats(&caveats), Restriction::from_caveats(&reversed));
        let (op, bucket, s, _, now) = request;
        prop_assert_eq!(a.allows(op, bucket, Target::Key(s)), b.allows(op, bucket, Target::Key(s)));
        prop_assert_eq!(a.in_window(now, 0), b.in_window(now, 0));
    }

    /// Arbitrary strings never panic the parser or verifier; what parses re-encodes to itself.
    #[test]
    fn arbitrary_strings_never_panic(s in "(mn1_)?[A-Za-z0-9_=!-]{0,200}") {
        if let Ok(t) = Unverified::parse(&s) {
            prop_assert_eq!(t.encode(), s.clone());
        }
        let _ = verify(&s);
    }

    /// Arbitrary decoded bytes (near a valid token's shape) never panic; none verifies.
    #[test]
    fn arbitrary_bytes_never_verify(
        mut bytes in prop::collection::vec(any::<u8>(), 0..300),
        fix_header in any::<bool>(),
    ) {
        if fix_header && bytes.len() > 30 {
            let ident = ident_k1();
            bytes[..ident.len()].copy_from_slice(&ident);
        }
        prop_assert!(verify(&encode(&bytes)).is_err());
    }
}

/// `init` writes a 0600 ring with one key and never overwrites.
#[test]
fn keyring_init_creates_a_private_file_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    let ring = keyring::init(&path, NOW).expect("creates");
    assert_eq!(ring.keys().len(), 1);
    assert_eq!(ring.newest().id(), "k1");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let loaded = KeyRing::load(&path).expect("loads");
    assert_eq!(loaded.newest().id(), "k1");
    assert_eq!(loaded.newest().created(), NOW);
    let again = keyring::init(&path, NOW).expect_err("exists");
    assert!(matches!(again, KeyRingError::Exists { .. }), "{again}");
}

/// `rotate` adds a newer key that mints; tokens of the old key still verify.
#[test]
fn keyring_rotate_adds_a_newer_key_and_keeps_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    let first = keyring::init(&path, NOW).expect("creates");
    let old_token = mint(first.newest(), "acme", &[]).expect("mints");
    // The clock reads earlier than the newest key: the new key is still the newest.
    let ring = keyring::rotate(&path, NOW - 100).expect("rotates");
    assert_eq!(ring.keys().len(), 2);
    assert_eq!(ring.newest().id(), "k2");
    let loaded = KeyRing::load(&path).expect("loads");
    assert_eq!(loaded.newest().id(), "k2");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let check = |t: &str| {
        Unverified::parse(t)
            .expect("parses")
            .verify(&loaded, NOW, 0)
    };
    assert!(check(&old_token).is_ok());
    let new_token = mint(loaded.newest(), "acme", &[]).expect("mints");
    assert_eq!(inspect(&new_token).expect("parses").key_id, "k2");
    assert!(check(&new_token).is_ok());
    keyring::rotate(&path, NOW + 5).expect("rotates");
    assert_eq!(KeyRing::load(&path).expect("loads").newest().id(), "k3");
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(leftovers, 1, "no temporary file left behind");
}

/// A ring readable by group or others is refused with the fix in the message.
#[test]
fn keyring_refuses_a_file_others_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    keyring::init(&path, NOW).expect("creates");
    for mode in [0o640, 0o604, 0o620, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = KeyRing::load(&path).expect_err("refused").to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(keyring::rotate(&path, NOW).is_err());
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    assert!(KeyRing::load(&path).is_ok());
}

/// Malformed rings are refused, and no message or `Debug` shows a secret.
#[test]
fn keyring_errors_and_debug_never_show_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg"; // 31 bytes: wrong length
    let write = |text: &str| {
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    let cases = [
        format!("[[keys]]\nid = \"k1\"\nsecret = \"{secret}\"\ncreated = 1\n"),
        format!("[[keys]]\nid = \"k1\"\nsecret = \"{secret}\" created = 1\n"),
        format!(
            "[[keys]]\nid = \"k 1\"\nsecret = \"{}\"\ncreated = 1\n",
            "A".repeat(43) + "="
        ),
        "keys = []\n".to_owned(),
        format!(
            "[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\ncreated = 1\n[[keys]]\nid = \"k1\"\nsecret = \"{s}\"\ncreated = 2\n",
            s = "A".repeat(43) + "="
        ),
        format!("[[keys]]\nid = \"k1\"\nsecret = \"{secret}\"\ncreated = 1\nextra = 1\n"),
    ];
    for text in cases {
        write(&text);
        let err = KeyRing::load(&path).expect_err("refused").to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(!err.contains(secret), "{err}");
    }
    let k = Key::new("k1", [0xab; 32], 1).expect("valid");
    let dbg = format!(
        "{k:?} {:?}",
        KeyRing::new(vec![k.clone()]).expect("one key")
    );
    assert!(dbg.contains("redacted"));
    let b64 = base64::engine::general_purpose::STANDARD.encode([0xab; 32]);
    assert!(!dbg.contains(&b64) && !dbg.contains("171") && !dbg.contains("ab, ab"));
}

/// The cost of one verification of a 3-caveat token (parse + chain + decision), printed in ns.
/// Run with `cargo test --lib auth::tests::verify_cost -- --ignored --nocapture` (a debug
/// build measures the debug build; add `--release` for the real figure).
#[test]
#[ignore]
fn verify_cost() {
    let token = mint_k1(&three_caveats());
    let keys = ring();
    let n = 100_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let v = Unverified::parse(std::hint::black_box(&token))
            .map(|t| t.verify(&keys, NOW, 0))
            .expect("parses")
            .expect("verifies");
        assert!(v.allows(Op::Get, "photos", Target::Key("users/42/a")));
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("verify_cost: {per} ns per parse + verify + allows (3 caveats, {n} runs)");
}
