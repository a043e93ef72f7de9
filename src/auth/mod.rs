//! Capability tokens: minting, offline attenuation, verification and the allow decision. A
//! leaf: it knows nothing of HTTP; the request pipeline hands it the token string, the op, the
//! bucket and the key.
//!
//! # Layout
//! - [`token`]   — the wire form, parsing with its caps, the HMAC chain, [`mint`],
//!   [`attenuate`], [`inspect`], and [`Unverified::verify`] → [`Verified`] or [`AuthFailure`].
//! - [`policy`]  — [`Restriction`], the intersection of a token's caveats, and the allow
//!   checks ([`Verified::allows`], `allows_cursor`, `allows_node`).
//! - [`keyring`] — the root keys: the TOML key file, its permission check, [`keyring::init`]
//!   and [`keyring::rotate`].
//!
//! How tokens work, what is checked in which order, and key rotation: docs/SECURITY.md,
//! "Tokens".

pub mod keyring;
pub mod policy;
pub mod token;

pub use keyring::{Key, KeyRing, KeyRingError};
pub use policy::{BucketScope, Restriction, Target};
pub use token::{
    AuthFailure, Caveat, Inspection, Op, Ops, TokenError, Unverified, Verified, attenuate, inspect,
    mint,
};

/// Seconds since the Unix epoch by the system clock (0 when the clock reads before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
