//! The data directory around sled: making sure it always reopens after a power loss.
//!
//! sled writes two small files without the write-temp-fsync-rename protocol:
//! - `conf` (segment size, compression, version + CRC) is written in place and never fsynced; a
//!   power loss soon after creation leaves it empty, and sled then refuses to start or panics.
//!   We keep our own copy, `conf.good`, written atomically (temp file, fsync, rename, fsync of
//!   the directory), and put it back before opening when `conf` is missing or fails its CRC.
//! - `snap.<lsn>` snapshots are fsynced then renamed from `snap.<lsn>.generating`, but sled's
//!   reader also picks up a leftover `.generating` file — torn after a power loss — and then
//!   refuses to open. A snapshot is only a shortcut for replaying the log (sled rebuilds it
//!   from the log when there is none), so we delete `.generating` files and, if the newest
//!   snapshot fails its CRC, every snapshot.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

/// sled's default segment size: the one every v1 data directory was created with.
pub const SLED_DEFAULT_SEGMENT: usize = 512 * 1024;
/// Segment size of a new data directory (docs/STORAGE.md, "Segment size").
pub const NEW_SEGMENT: usize = 2 * 1024 * 1024;

pub(super) const CONF: &str = "conf";
pub const GOOD_CONF: &str = "conf.good";

/// What preparing the directory found and did.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    pub segment_size: usize,
    /// One line per repair, for the log.
    pub repairs: Vec<String>,
}

/// The segment size in a sled `conf` file, if the file is whole (CRC matches).
pub(super) fn parse_conf(bytes: &[u8]) -> Option<usize> {
    if bytes.len() <= 8 {
        return None;
    }
    let (text, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().ok()?);
    if crc32fast::hash(text) != crc {
        return None;
    }
    std::str::from_utf8(text)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))?
        .trim()
        .parse()
        .ok()
        .filter(|s: &usize| s.is_power_of_two())
}

fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `name` in `dir` so that after a crash it holds either the old or the new bytes.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// The `conf` file sled 0.34 writes for `segment_size` (no compression): its text lines and
/// their CRC-32, little-endian. Writing it ourselves, atomically, before sled first opens a new
/// directory leaves no moment in which a crash could tear it.
pub(super) fn conf_bytes(segment_size: usize) -> Vec<u8> {
    let mut out = format!("segment_size: {segment_size}\nuse_compression: false\nversion: 0.34\n")
        .into_bytes();
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Creates a new data directory with both `conf` files in place, durably.
fn create_new(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let conf = conf_bytes(NEW_SEGMENT);
    write_atomic(dir, GOOD_CONF, &conf)?;
    write_atomic(dir, CONF, &conf)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Repairs what a power loss can leave behind and picks the segment size, before sled opens
/// `dir` (which may not exist yet).
pub(super) fn prepare(dir: &Path) -> std::io::Result<Prepared> {
    let mut out = Prepared::default();
    if !dir.is_dir() {
        create_new(dir)?;
        out.segment_size = NEW_SEGMENT;
        return Ok(out);
    }
    let conf = read_if_exists(&dir.join(CONF))?;
    let good = read_if_exists(&dir.join(GOOD_CONF))?;
    let conf_size = conf.as_deref().and_then(parse_conf);
    let good_size = good.as_deref().and_then(parse_conf);
    out.segment_size = match (conf_size, good_size) {
        (Some(s), _) => s,
        (None, Some(s)) => {
            let good = good.expect("parsed, so present");
            write_atomic(dir, CONF, &good)?;
            out.repairs.push(format!(
                "sled conf was missing or torn; restored it from {GOOD_CONF}"
            ));
            s
        }
        (None, None) => {
            let log_len = fs::metadata(dir.join("db")).map_or(0, |m| m.len());
            if conf.is_some() {
                fs::remove_file(dir.join(CONF))?;
            }
            if log_len == 0 {
                create_new(dir)?;
                NEW_SEGMENT
            } else {
                // A data directory from before `conf.good` existed: sled's default then.
                out.repairs.push(format!(
                    "sled conf was missing or torn and no {GOOD_CONF} exists; assuming sled's default segment size"
                ));
                SLED_DEFAULT_SEGMENT
            }
        }
    };
    repair_snapshots(dir, &mut out.repairs)?;
    Ok(out)
}

/// sled's snapshot check: `bytes | len u64 | crc32 u32` with the CRC over `bytes`.
fn snapshot_is_whole(bytes: &[u8]) -> bool {
    if bytes.len() <= 12 {
        return false;
    }
    let (body, tail) = bytes.split_at(bytes.len() - 12);
    let crc_bytes: [u8; 4] = tail[8..].try_into().expect("4 bytes");
    crc32fast::hash(body) == u32::from_le_bytes(crc_bytes)
}

fn repair_snapshots(dir: &Path, repairs: &mut Vec<String>) -> std::io::Result<()> {
    let mut snaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("snap.") {
            continue;
        }
        if name.ends_with(".generating") {
            fs::remove_file(entry.path())?;
            repairs.push(format!("removed unfinished snapshot {name}"));
        } else {
            snaps.push(name.to_owned());
        }
    }
    snaps.sort();
    if let Some(newest) = snaps.last()
        && !snapshot_is_whole(&fs::read(dir.join(newest))?)
    {
        for s in &snaps {
            fs::remove_file(dir.join(s))?;
        }
        repairs.push(format!(
            "snapshot {newest} was torn; removed every snapshot (sled replays the log)"
        ));
    }
    if !repairs.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// After sled opened `dir`: make its `conf` durable and keep our known-good copy in step.
pub(super) fn after_open(dir: &Path) -> std::io::Result<()> {
    let conf = fs::read(dir.join(CONF))?;
    if parse_conf(&conf).is_none() {
        return Err(std::io::Error::other(
            "sled wrote a conf file we cannot read",
        ));
    }
    File::open(dir.join(CONF))?.sync_all()?;
    if read_if_exists(&dir.join(GOOD_CONF))?.as_deref() != Some(&conf[..]) {
        write_atomic(dir, GOOD_CONF, &conf)?;
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}
