//! The token: wire form, parsing, the HMAC chain, minting and offline attenuation.
//!
//! # Wire form
//! `mn1_` followed by base64url without padding (canonical: no stray trailing bits) of
//!
//! ```text
//! version  u8 = 1
//! key id   u8 length + 1–32 bytes of [A-Za-z0-9._-]
//! nonce    16 bytes
//! tenant   u8 length + 1–63 bytes of [a-z0-9._-]
//! count    u8, at most 32
//! caveats  count records: type u8 | length u16 big-endian | payload
//! tag      32 bytes
//! ```
//!
//! The *identifier* is everything from the version through the tenant. Caveat types:
//! 1 `bucket` (1–255 bytes of UTF-8), 2 `prefix` (1–1024 bytes of UTF-8), 3 `ops` (one byte, a
//! bit set of [`Op`]; an unknown bit is invalid), 4 `not_after` and 5 `not_before` (8 bytes,
//! unix seconds, big-endian). Any other type makes the token invalid: a caveat this code does
//! not understand cannot be enforced, so it is refused (fail closed).
//!
//! # The chain
//! `tag₀ = HMAC-SHA256(root key, identifier)`, `tagᵢ = HMAC-SHA256(tagᵢ₋₁, caveatᵢ)` where
//! `caveatᵢ` is the whole record (type, length, payload); the token carries the last tag.
//! Whoever holds a token can append a caveat and re-chain from the tag it carries
//! ([`attenuate`]) without the key, but cannot remove or change one: that would need an
//! earlier tag, which the token no longer contains. The caveat count is not authenticated
//! itself; it only has to match the records exactly, and the records are.
//!
//! # Checks, in order
//! [`Unverified::parse`] (syntax only, no key): empty → length ≤ 4096 bytes → `mn1_` →
//! base64url → version → key id → nonce → tenant → count ≤ 32 → each caveat (known type, valid
//! payload) → tag present and nothing after it. The length cap is judged before any decoding,
//! the count cap before any caveat is read, so no input costs more than 4 KiB of work.
//! [`Unverified::verify`] (with the key ring): key id known → chain recomputed and compared in
//! constant time → time window. So a forged or unknown-key token is `Invalid` even when it
//! is also expired; `Expired` is only ever said of an authentic token.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::keyring::{Key, KeyRing};
use super::policy::Restriction;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// What every token starts with (the `1` is the wire version).
pub const TOKEN_PREFIX: &str = "mn1_";
/// The longest accepted token, `mn1_` included, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The most caveats a token may carry.
pub const MAX_CAVEATS: usize = 32;
/// The wire version this code reads and writes.
pub const VERSION: u8 = 1;
/// Bytes of the nonce (the token's identity for revocation).
pub const NONCE_BYTES: usize = 16;
/// Bytes of the tag.
pub const TAG_BYTES: usize = 32;
/// The longest key id.
pub const MAX_KEY_ID_BYTES: usize = 32;
/// The longest tenant name.
pub const MAX_TENANT_BYTES: usize = 63;
/// The longest bucket caveat payload.
pub const MAX_BUCKET_CAVEAT_BYTES: usize = 255;
/// The longest prefix caveat payload.
pub const MAX_PREFIX_CAVEAT_BYTES: usize = 1024;

const CAVEAT_BUCKET: u8 = 1;
const CAVEAT_PREFIX: u8 = 2;
const CAVEAT_OPS: u8 = 3;
const CAVEAT_NOT_AFTER: u8 = 4;
const CAVEAT_NOT_BEFORE: u8 = 5;

/// One operation a request performs, as the ops caveat names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    List,
    Watch,
    Put,
    Delete,
    Txn,
    /// Snapshot, minting and revoking tokens, and `/metrics` when it is protected.
    Admin,
}

impl Op {
    /// Every op, in bit order.
    pub const ALL: [Op; 7] = [
        Op::Get,
        Op::List,
        Op::Watch,
        Op::Put,
        Op::Delete,
        Op::Txn,
        Op::Admin,
    ];

    /// The op's bit in an ops caveat.
    pub const fn bit(self) -> u8 {
        match self {
            Op::Get => 1,
            Op::List => 2,
            Op::Watch => 4,
            Op::Put => 8,
            Op::Delete => 16,
            Op::Txn => 32,
            Op::Admin => 64,
        }
    }

    /// The op's name on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::List => "list",
            Op::Watch => "watch",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Txn => "txn",
            Op::Admin => "admin",
        }
    }

    /// The op named `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A set of [`Op`]s: the payload of an ops caveat.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ops(u8);

impl Ops {
    /// No op at all.
    pub const NONE: Ops = Ops(0);
    /// Every op, `admin` included.
    pub const ALL: Ops = Ops(0x7f);

    /// The set with these bits; `None` when a bit names no op.
    pub const fn from_bits(bits: u8) -> Option<Ops> {
        if bits & !Ops::ALL.0 == 0 {
            Some(Ops(bits))
        } else {
            None
        }
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }

    /// The ops in both sets.
    pub const fn intersect(self, other: Ops) -> Ops {
        Ops(self.0 & other.0)
    }

    /// The ops in this set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |op| self.contains(*op))
    }

    /// Parses a comma-separated list of op names (`get,list`); an empty list, an empty item
    /// or an unknown name is an error naming it.
    pub fn parse_list(list: &str) -> Result<Ops, String> {
        let mut bits = 0;
        for name in list.split(',') {
            let op = Op::from_name(name.trim()).ok_or_else(|| {
                format!("unknown op {name:?} (one of get, list, watch, put, delete, txn, admin)")
            })?;
            bits |= op.bit();
        }
        Ok(Ops(bits))
    }
}

impl From<Op> for Ops {
    fn from(op: Op) -> Ops {
        Ops(op.bit())
    }
}

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Op::name)).finish()
    }
}

impl Serialize for Ops {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Op::name))
    }
}

/// One restriction a token carries. Every caveat must hold; repeated caveats intersect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Caveat {
    /// Only this bucket.
    Bucket(String),
    /// Only keys (and list/watch prefixes) starting with this.
    Prefix(String),
    /// Only these ops.
    Ops(Ops),
    /// Not after this unix second (the token is still good at that second).
    NotAfter(u64),
    /// Not before this unix second.
    NotBefore(u64),
}

impl Caveat {
    const fn type_byte(&self) -> u8 {
        match self {
            Caveat::Bucket(_) => CAVEAT_BUCKET,
            Caveat::Prefix(_) => CAVEAT_PREFIX,
            Caveat::Ops(_) => CAVEAT_OPS,
            Caveat::NotAfter(_) => CAVEAT_NOT_AFTER,
            Caveat::NotBefore(_) => CAVEAT_NOT_BEFORE,
        }
    }

    const fn name(&self) -> &'static str {
        match self {
            Caveat::Bucket(_) => "bucket",
            Caveat::Prefix(_) => "prefix",
            Caveat::Ops(_) => "ops",
            Caveat::NotAfter(_) => "not_after",
            Caveat::NotBefore(_) => "not_before",
        }
    }

    /// The same payload rules as parsing, for caveats about to be written.
    fn check(&self) -> Result<(), TokenError> {
        let ok = match self {
            Caveat::Bucket(b) => (1..=MAX_BUCKET_CAVEAT_BYTES).contains(&b.len()),
            Caveat::Prefix(p) => (1..=MAX_PREFIX_CAVEAT_BYTES).contains(&p.len()),
            Caveat::Ops(_) | Caveat::NotAfter(_) | Caveat::NotBefore(_) => true,
        };
        if ok {
            Ok(())
        } else {
            Err(TokenError::BadCaveat(self.name()))
        }
    }

    /// Appends the record (type, length, payload). The payload fits a u16: [`Caveat::check`]
    /// bounds it far below.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut put = |payload: &[u8]| {
            let len = u16::try_from(payload.len()).expect("checked caveats are under 64 KiB");
            out.push(self.type_byte());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
        };
        match self {
            Caveat::Bucket(s) | Caveat::Prefix(s) => put(s.as_bytes()),
            Caveat::Ops(ops) => put(&[ops.bits()]),
            Caveat::NotAfter(t) | Caveat::NotBefore(t) => put(&t.to_be_bytes()),
        }
    }

    fn decode(ty: u8, payload: &[u8]) -> Result<Caveat, TokenError> {
        let text = |name, max| match std::str::from_utf8(payload) {
            Ok(s) if (1..=max).contains(&s.len()) => Ok(s.to_owned()),
            _ => Err(TokenError::BadCaveat(name)),
        };
        let secs = |name| {
            <[u8; 8]>::try_from(payload)
                .map(u64::from_be_bytes)
                .map_err(|_| TokenError::BadCaveat(name))
        };
        match ty {
            CAVEAT_BUCKET => text("bucket", MAX_BUCKET_CAVEAT_BYTES).map(Caveat::Bucket),
            CAVEAT_PREFIX => text("prefix", MAX_PREFIX_CAVEAT_BYTES).map(Caveat::Prefix),
            CAVEAT_OPS => match payload {
                [bits] => Ops::from_bits(*bits)
                    .map(Caveat::Ops)
                    .ok_or(TokenError::BadCaveat("ops")),
                _ => Err(TokenError::BadCaveat("ops")),
            },
            CAVEAT_NOT_AFTER => secs("not_after").map(Caveat::NotAfter),
            CAVEAT_NOT_BEFORE => secs("not_before").map(Caveat::NotBefore),
            other => Err(TokenError::UnknownCaveat(other)),
        }
    }
}

/// Why a string is not a well-formed token (or a caveat cannot be added). Messages never
/// contain token bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("empty token")]
    Empty,
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token does not start with {TOKEN_PREFIX}")]
    BadPrefix,
    #[error("token is not base64url without padding")]
    BadBase64,
    #[error("token version {0} is not supported")]
    BadVersion(u8),
    #[error("token ends early")]
    Truncated,
    #[error("key id must be 1-32 characters of A-Z a-z 0-9 . _ -")]
    BadKeyId,
    #[error("tenant must be 1-63 characters of a-z 0-9 . _ -")]
    BadTenant,
    #[error("more than {MAX_CAVEATS} caveats")]
    TooManyCaveats,
    #[error("unknown caveat type {0}")]
    UnknownCaveat(u8),
    #[error("invalid {0} caveat")]
    BadCaveat(&'static str),
    #[error("token has bytes after its tag")]
    TrailingBytes,
    #[error("no randomness from the operating system for the nonce")]
    NoRandomness,
}

/// Why a request's token does not admit it. [`Unverified::verify`] answers `Invalid` or
/// `Expired`; `Missing` (no `Authorization: Bearer`) and `Revoked` (the nonce is on the
/// revocation list) are the caller's to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token was presented.
    Missing,
    /// Bad syntax, an unknown key id, a wrong tag, or an unknown caveat type.
    Invalid,
    /// Authentic, but outside its time window: `not_after` has passed or `not_before` is
    /// still in the future (each widened by the leeway).
    Expired,
    /// Authentic, but its nonce has been revoked.
    Revoked,
}

impl AuthFailure {
    /// A short stable name for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
        }
    }
}

impl From<TokenError> for AuthFailure {
    fn from(_: TokenError) -> AuthFailure {
        AuthFailure::Invalid
    }
}

/// A syntactically valid token whose tag has not been checked: nothing in it is trusted yet.
#[derive(Clone)]
pub struct Unverified {
    /// The decoded bytes, tag included.
    raw: Vec<u8>,
    /// Bytes of the identifier (version through tenant).
    ident_len: usize,
    key_id: String,
    nonce: [u8; NONCE_BYTES],
    tenant: String,
    caveats: Vec<Caveat>,
}

impl Unverified {
    /// Parses the wire form, checking syntax only (see the module doc for the order). The
    /// length cap comes first: longer input is refused before it is decoded.
    pub fn parse(token: &str) -> Result<Unverified, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::BadPrefix)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::BadBase64)?;
        Unverified::decode(raw)
    }

    fn decode(raw: Vec<u8>) -> Result<Unverified, TokenError> {
        let mut r = Reader { b: &raw, pos: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(TokenError::BadVersion(version));
        }
        let key_id = r.short_text(TokenError::BadKeyId)?;
        if !valid_key_id(key_id) {
            return Err(TokenError::BadKeyId);
        }
        let key_id = key_id.to_owned();
        let nonce: [u8; NONCE_BYTES] = r
            .take(NONCE_BYTES)?
            .try_into()
            .expect("take returns exactly the bytes asked for");
        let tenant = r.short_text(TokenError::BadTenant)?;
        if !valid_tenant(tenant) {
            return Err(TokenError::BadTenant);
        }
        let tenant = tenant.to_owned();
        let ident_len = r.pos;
        let count = usize::from(r.u8()?);
        if count > MAX_CAVEATS {
            return Err(TokenError::TooManyCaveats);
        }
        let mut caveats = Vec::with_capacity(count);
        for _ in 0..count {
            let ty = r.u8()?;
            let len = u16::from_be_bytes([r.u8()?, r.u8()?]);
            caveats.push(Caveat::decode(ty, r.take(usize::from(len))?)?);
        }
        r.take(TAG_BYTES)?;
        if r.pos != raw.len() {
            return Err(TokenError::TrailingBytes);
        }
        Ok(Unverified {
            raw,
            ident_len,
            key_id,
            nonce,
            tenant,
            caveats,
        })
    }

    /// Checks the tag with the key the token names, then the time window at `now` (unix
    /// seconds), each bound widened by `leeway_secs`. See [`AuthFailure`] for which is which.
    pub fn verify(
        &self,
        keys: &KeyRing,
        now: u64,
        leeway_secs: u64,
    ) -> Result<Verified, AuthFailure> {
        let restriction = self.check(keys, now, leeway_secs)?;
        Ok(Verified {
            key_id: self.key_id.clone(),
            nonce: self.nonce,
            tenant: self.tenant.clone(),
            caveats: self.caveats.clone(),
            restriction,
        })
    }

    /// [`Unverified::verify`], consuming the token: what it carries moves into the result
    /// instead of being copied (the request path's form).
    pub fn into_verified(
        self,
        keys: &KeyRing,
        now: u64,
        leeway_secs: u64,
    ) -> Result<Verified, AuthFailure> {
        let restriction = self.check(keys, now, leeway_secs)?;
        Ok(Verified {
            key_id: self.key_id,
            nonce: self.nonce,
            tenant: self.tenant,
            caveats: self.caveats,
            restriction,
        })
    }

    /// The tag chain, then the time window; the effective restriction.
    fn check(
        &self,
        keys: &KeyRing,
        now: u64,
        leeway_secs: u64,
    ) -> Result<Restriction, AuthFailure> {
        let key = keys.get(&self.key_id).ok_or(AuthFailure::Invalid)?;
        let mut tag = first_tag(key, &self.raw[..self.ident_len]);
        for record in self.caveat_records() {
            tag = next_tag(&tag, record);
        }
        if !bool::from(tag.ct_eq(self.tag())) {
            return Err(AuthFailure::Invalid);
        }
        let restriction = Restriction::from_caveats(&self.caveats);
        if !restriction.in_window(now, leeway_secs) {
            return Err(AuthFailure::Expired);
        }
        Ok(restriction)
    }

    /// The key id the token claims (not yet checked).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The nonce the token claims (not yet checked); revocation is by nonce.
    pub fn nonce(&self) -> [u8; NONCE_BYTES] {
        self.nonce
    }

    /// The tenant the token claims (not yet checked).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The caveats, in chain order (not yet checked).
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }

    /// The wire form again (parsing is canonical, so this is the string that was parsed).
    pub fn encode(&self) -> String {
        encode(&self.raw)
    }

    fn tag(&self) -> &[u8] {
        &self.raw[self.raw.len() - TAG_BYTES..]
    }

    /// The caveat records as they sit in `raw` (type, length, payload), in order.
    fn caveat_records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.raw[self.ident_len + 1..self.raw.len() - TAG_BYTES];
        std::iter::from_fn(move || {
            let len_bytes = rest.get(1..3)?;
            let len = 3 + usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            let (record, tail) = rest.split_at(len);
            rest = tail;
            Some(record)
        })
    }
}

/// Neither the tag nor the raw bytes are printed: with them the token could be rebuilt.
impl fmt::Debug for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unverified")
            .field("key_id", &self.key_id)
            .field("nonce", &hex(&self.nonce))
            .field("tenant", &self.tenant)
            .field("caveats", &self.caveats)
            .finish_non_exhaustive()
    }
}

/// An authentic token inside its time window: who it speaks for and what it allows
/// ([`Verified::allows`] and its siblings in `auth::policy`).
#[derive(Debug, Clone)]
pub struct Verified {
    pub(crate) key_id: String,
    pub(crate) nonce: [u8; NONCE_BYTES],
    pub(crate) tenant: String,
    pub(crate) caveats: Vec<Caveat>,
    pub(crate) restriction: Restriction,
}

impl Verified {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn nonce(&self) -> [u8; NONCE_BYTES] {
        self.nonce
    }

    /// The nonce as 32 lower-case hex digits (how revocation and audit name it).
    pub fn nonce_hex(&self) -> String {
        hex(&self.nonce)
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The caveats as carried, in chain order (for `whoami`).
    pub fn caveats(&self) -> &[Caveat] {
        &self.caveats
    }

    /// The effective restriction: every caveat intersected.
    pub fn restriction(&self) -> &Restriction {
        &self.restriction
    }
}

/// Mints a token with `key` for `tenant` carrying `caveats`, with a fresh random nonce.
pub fn mint(key: &Key, tenant: &str, caveats: &[Caveat]) -> Result<String, TokenError> {
    let mut nonce = [0; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|_| TokenError::NoRandomness)?;
    mint_with_nonce(key, nonce, tenant, caveats)
}

/// [`mint`] with a given nonce (tests and reproducible fixtures).
pub fn mint_with_nonce(
    key: &Key,
    nonce: [u8; NONCE_BYTES],
    tenant: &str,
    caveats: &[Caveat],
) -> Result<String, TokenError> {
    if !valid_tenant(tenant) {
        return Err(TokenError::BadTenant);
    }
    if caveats.len() > MAX_CAVEATS {
        return Err(TokenError::TooManyCaveats);
    }
    for c in caveats {
        c.check()?;
    }
    let mut raw = Vec::with_capacity(128);
    raw.push(VERSION);
    push_short(&mut raw, key.id());
    raw.extend_from_slice(&nonce);
    push_short(&mut raw, tenant);
    let mut tag = first_tag(key, &raw);
    raw.push(u8::try_from(caveats.len()).expect("at most MAX_CAVEATS"));
    append_caveats(&mut raw, &mut tag, caveats);
    raw.extend_from_slice(&tag);
    finish(raw)
}

/// Adds `extra` caveats to `token` offline (no key): each is appended and the chain
/// continued from the token's tag. The result can only allow less than `token`.
pub fn attenuate(token: &str, extra: &[Caveat]) -> Result<String, TokenError> {
    let parsed = Unverified::parse(token)?;
    let count = parsed.caveats.len() + extra.len();
    if count > MAX_CAVEATS {
        return Err(TokenError::TooManyCaveats);
    }
    for c in extra {
        c.check()?;
    }
    let mut tag: [u8; TAG_BYTES] = parsed
        .tag()
        .try_into()
        .expect("a parsed token ends with a whole tag");
    let mut raw = parsed.raw;
    raw.truncate(raw.len() - TAG_BYTES);
    raw[parsed.ident_len] = u8::try_from(count).expect("at most MAX_CAVEATS");
    append_caveats(&mut raw, &mut tag, extra);
    raw.extend_from_slice(&tag);
    finish(raw)
}

/// What a token says about itself, readable without the key (never the tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    pub key_id: String,
    /// 32 lower-case hex digits.
    pub nonce: String,
    pub tenant: String,
    pub caveats: Vec<Caveat>,
}

/// Parses `token` and shows its claims; nothing is verified.
pub fn inspect(token: &str) -> Result<Inspection, TokenError> {
    let t = Unverified::parse(token)?;
    Ok(Inspection {
        nonce: hex(&t.nonce),
        key_id: t.key_id,
        tenant: t.tenant,
        caveats: t.caveats,
    })
}

/// `[A-Za-z0-9._-]{1,32}`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// `[a-z0-9._-]{1,63}`.
pub fn valid_tenant(tenant: &str) -> bool {
    (1..=MAX_TENANT_BYTES).contains(&tenant.len())
        && tenant.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// 32 hex digits (either case) → nonce.
pub fn parse_nonce_hex(s: &str) -> Option<[u8; NONCE_BYTES]> {
    if s.len() != 2 * NONCE_BYTES {
        return None;
    }
    let mut out = [0; NONCE_BYTES];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn first_tag(key: &Key, identifier: &[u8]) -> [u8; TAG_BYTES] {
    let mut mac = key.mac().clone();
    mac.update(identifier);
    mac.finalize().into_bytes().into()
}

fn next_tag(tag: &[u8; TAG_BYTES], record: &[u8]) -> [u8; TAG_BYTES] {
    let mut mac = HmacSha256::new_from_slice(tag).expect("HMAC accepts keys of any length");
    mac.update(record);
    mac.finalize().into_bytes().into()
}

fn append_caveats(raw: &mut Vec<u8>, tag: &mut [u8; TAG_BYTES], caveats: &[Caveat]) {
    for c in caveats {
        let start = raw.len();
        c.encode_into(raw);
        *tag = next_tag(tag, &raw[start..]);
    }
}

/// Length-prefixed text whose length the caller has validated (key id ≤ 32, tenant ≤ 63).
fn push_short(raw: &mut Vec<u8>, s: &str) {
    raw.push(u8::try_from(s.len()).expect("validated names are short"));
    raw.extend_from_slice(s.as_bytes());
}

fn finish(raw: Vec<u8>) -> Result<String, TokenError> {
    let token = encode(&raw);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    Ok(token)
}

fn encode(raw: &[u8]) -> String {
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + raw.len().div_ceil(3) * 4);
    s.push_str(TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(raw, &mut s);
    s
}

/// A cursor over the decoded bytes; running out is [`TokenError::Truncated`].
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        let end = self.pos.checked_add(n).ok_or(TokenError::Truncated)?;
        let out = self.b.get(self.pos..end).ok_or(TokenError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// A u8 length and that many bytes of ASCII (`bad` when they are not UTF-8).
    fn short_text(&mut self, bad: TokenError) -> Result<&'a str, TokenError> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| bad)
    }
}
