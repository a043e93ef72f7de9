//! Stamps `MICRONODE_BUILD_TS` (UNIX seconds) for `/version`.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // SOURCE_DATE_EPOCH makes reproducible builds possible; otherwise the wall clock.
    let ts = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    println!("cargo:rustc-env=MICRONODE_BUILD_TS={ts}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Re-stamp whenever the sources change, not on every build.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
}
