//! The key ring: the root keys tokens are minted and verified with, kept in a TOML file.
//!
//! ```toml
//! [[keys]]
//! id = "k1"                                              # 1-32 of [A-Za-z0-9._-], unique
//! secret = "base64 of exactly 32 random bytes"
//! created = 1767225600                                   # unix seconds
//! ```
//!
//! The newest key (largest `created`; on a tie, the later one in the file) mints; every key
//! verifies. Removing a key invalidates every token minted with it. The file must be mode
//! 0600 or stricter: [`KeyRing::load`] refuses a file any group or other bit is set on, the
//! way ssh refuses a readable private key, and says how to fix it. [`init`] creates the file
//! (never over an existing one); [`rotate`] adds a newer key by rewriting the file atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves the old ring or
//! the new one, never a torn file. Secrets are never printed: [`Key`]'s `Debug` omits them.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac as _;
use serde::Deserialize;

use super::token::{HmacSha256, valid_key_id};

/// Bytes of a root key's secret.
pub const SECRET_BYTES: usize = 32;

/// The largest key file read; a ring is a few lines per key.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One root key.
#[derive(Clone)]
pub struct Key {
    id: String,
    created: u64,
    secret: [u8; SECRET_BYTES],
    /// HMAC keyed with the secret, its inner and outer pads already hashed: each verification
    /// clones it instead of hashing the key again.
    mac: HmacSha256,
}

impl Key {
    /// A key with this id, secret and creation time; the id must be 1–32 of `[A-Za-z0-9._-]`.
    pub fn new(id: &str, secret: [u8; SECRET_BYTES], created: u64) -> Result<Key, String> {
        if !valid_key_id(id) {
            return Err(format!(
                "key id {id:?} must be 1-32 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        let mac = HmacSha256::new_from_slice(&secret).expect("HMAC accepts keys of any length");
        Ok(Key {
            id: id.to_owned(),
            created,
            secret,
            mac,
        })
    }

    /// A key with a fresh random secret.
    pub fn generate(id: &str, created: u64) -> Result<Key, KeyRingError> {
        let mut secret = [0; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|_| KeyRingError::NoRandomness)?;
        Key::new(id, secret, created).map_err(KeyRingError::Invalid)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Unix seconds.
    pub fn created(&self) -> u64 {
        self.created
    }

    pub(crate) fn mac(&self) -> &HmacSha256 {
        &self.mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("created", &self.created)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Every root key that verifies; the newest also mints. Never empty.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring of these keys: at least one, ids unique.
    pub fn new(keys: Vec<Key>) -> Result<KeyRing, String> {
        if keys.is_empty() {
            return Err("no keys".to_owned());
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(format!("key id {:?} appears twice", k.id));
            }
        }
        Ok(KeyRing { keys })
    }

    /// Reads the ring from `path`. Refuses a file readable or writable by group or others
    /// (the permissions are read from the opened file, so they are the ones of what is read).
    pub fn load(path: &Path) -> Result<KeyRing, KeyRingError> {
        let io_err = |source| KeyRingError::Io {
            path: path.to_owned(),
            source,
        };
        let format = |reason: String| KeyRingError::Format {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(format("not a regular file".to_owned()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(KeyRingError::Permissions {
                path: path.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io_err)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        // Only the parser's message and line: its default display quotes the offending line,
        // which may be a secret.
        let parsed: KeyFile = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].lines().count().max(1)))
                .unwrap_or_default();
            format(format!("{line}{}", e.message()))
        })?;
        let mut keys = Vec::with_capacity(parsed.keys.len());
        for entry in parsed.keys {
            let secret = STANDARD
                .decode(entry.secret.trim())
                .ok()
                .and_then(|s| <[u8; SECRET_BYTES]>::try_from(s).ok())
                .ok_or_else(|| {
                    format(format!(
                        "key {:?}: secret is not base64 of {SECRET_BYTES} bytes",
                        entry.id
                    ))
                })?;
            keys.push(Key::new(&entry.id, secret, entry.created).map_err(format)?);
        }
        KeyRing::new(keys).map_err(format)
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The key that mints: the largest `created`, the later one on a tie.
    pub fn newest(&self) -> &Key {
        self.keys
            .iter()
            .max_by_key(|k| k.created)
            .expect("a key ring is never empty")
    }

    /// Every key, in file order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The file's text (secrets included: it is only ever written to a 0600 file).
    fn to_toml(&self) -> String {
        let mut s = String::from(
            "# Micronode key ring. The newest key (largest `created`) mints tokens; every key\n\
             # verifies them. Removing a key invalidates every token minted with it.\n\
             # Keep this file mode 0600: `micronode auth rotate --keys FILE` adds a key.\n",
        );
        for k in &self.keys {
            s.push_str(&format!(
                "\n[[keys]]\nid = \"{}\"\nsecret = \"{}\"\ncreated = {}\n",
                k.id,
                STANDARD.encode(k.secret),
                k.created
            ));
        }
        s
    }
}

/// Why a key file cannot be read or written. Messages name the file, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{}: readable or writable by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{} exists; refusing to overwrite a key file", path.display())]
    Exists { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("no randomness from the operating system for the secret")]
    NoRandomness,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    secret: String,
    created: u64,
}

/// Creates `path` (mode 0600, never over an existing file) holding one new key, `k1`,
/// created `now` (unix seconds).
pub fn init(path: &Path, now: u64) -> Result<KeyRing, KeyRingError> {
    let ring = KeyRing::new(vec![Key::generate("k1", now)?]).map_err(KeyRingError::Invalid)?;
    write_new(path, &ring.to_toml()).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => KeyRingError::Exists {
            path: path.to_owned(),
        },
        _ => KeyRingError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    sync_dir(path).map_err(|source| KeyRingError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(ring)
}

/// Adds a new key to the ring in `path` and rewrites it atomically; the new key (returned
/// ring's [`KeyRing::newest`]) is created at `now`, or with the newest key's time when the
/// clock reads earlier, so it is the newest either way. Its id is `k<N>` with `N` one more
/// than the largest such number in the ring.
pub fn rotate(path: &Path, now: u64) -> Result<KeyRing, KeyRingError> {
    let mut ring = KeyRing::load(path)?;
    let n = ring
        .keys
        .iter()
        .filter_map(|k| k.id.strip_prefix('k')?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let id = (n.saturating_add(1)..)
        .map(|i| format!("k{i}"))
        .find(|id| ring.get(id).is_none())
        .expect("an unused id exists");
    let created = now.max(ring.newest().created);
    ring.keys.push(Key::generate(&id, created)?);

    let io_err = |source| KeyRingError::Io {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| KeyRingError::Invalid(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if let Err(e) = write_new(&tmp, &ring.to_toml()) {
        // Only a file this call created is removed.
        if e.kind() != io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(io_err(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    sync_dir(path).map_err(io_err)?;
    Ok(ring)
}

/// Writes `text` to a file that must not exist yet, mode 0600, and fsyncs it.
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Fsyncs the directory holding `path`, so its new name is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
