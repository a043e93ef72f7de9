//! `micronode snapshot save|verify|restore` (docs/CLI.md; the file format is in
//! `micronode::snapshot` and docs/CLI.md).
//!
//! - `save FILE` streams `GET /v1/admin/snapshot` into a temp file beside FILE, syncs it,
//!   verifies it, and only then renames it over FILE;
//! - `verify FILE` checks a file offline;
//! - `restore FILE` is offline: it opens the configured engine itself (no server may run on
//!   that data directory), refuses a directory that is not empty, verifies the whole file
//!   before writing anything, writes in steps of up to 64 keys, and flushes at the end.
//!   Restored keys get fresh revisions (new ETags) from the engine: an ETag held from before
//!   the restore never matches a restored value.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use http::header::ACCEPT;
use http_body_util::BodyExt as _;

use micronode::config::{Durability, Engine};
use micronode::snapshot::{self, Reader, Record, Summary};
use micronode::store::{Cond, MAX_CONTENT_TYPE_BYTES, MAX_WRITE_OPS, Storage, WriteOp};

use super::client::{Call, Client, ClientArgs, Failure, TIMEOUT};
use super::{ConfigArgs, load_config, out};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SnapshotCommand {
    /// Download a consistent snapshot from the server into FILE (written to a temp file,
    /// verified, then renamed). Prints {"revision":R,"count":N,"bytes":B}.
    Save {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check a snapshot file: header, every line's shape, count and SHA-256. Prints a JSON
    /// summary, or exits 1 naming the first bad line.
    Verify { file: PathBuf },
    /// Offline: load FILE into the configured, empty data directory (the server must not be
    /// running on it). Prints {"restored":N,"revision":R}.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) fn run(args: Args) -> ExitCode {
    let result = match args.command {
        SnapshotCommand::Save { file, client } => save(&file, &client),
        SnapshotCommand::Verify { file } => verify_file(&file).map(|s| print_json(&s)),
        SnapshotCommand::Restore { file, config } => restore(&file, &config),
    };
    result.unwrap_or_else(Failure::report)
}

/// Prints one JSON value and a newline (a struct's fields in declaration order).
fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(v) {
        Ok(text) => out::print(text + "\n"),
        Err(e) => Failure::new(format!("cannot write the answer as JSON: {e}")).report(),
    }
}

/// Verifies `path`; the failure names the file and the first bad line.
fn verify_file(path: &Path) -> Result<Summary, Failure> {
    let f = File::open(path)
        .map_err(|e| Failure::new(format!("cannot open {}: {e}", path.display())))?;
    snapshot::verify(BufReader::new(f))
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

// ---- save ----

fn save(path: &Path, args: &ClientArgs) -> Result<ExitCode, Failure> {
    let client = Client::new(args)?;
    let tmp = temp_path(path)?;
    let result = client.block_on(download(&client, &tmp)).and_then(|()| {
        let s = verify_file(&tmp).map_err(|f| {
            Failure::new(format!(
                "the server's snapshot failed verification: {}",
                f.message
            ))
        })?;
        std::fs::rename(&tmp, path).map_err(|e| {
            Failure::new(format!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                path.display()
            ))
        })?;
        sync_parent(path);
        Ok(s)
    });
    match result {
        Ok(s) => {
            #[derive(serde::Serialize)]
            struct Saved {
                revision: u64,
                count: u64,
                bytes: u64,
            }
            Ok(print_json(&Saved {
                revision: s.revision,
                count: s.count,
                bytes: s.bytes,
            }))
        }
        Err(f) => {
            let _ = std::fs::remove_file(&tmp);
            Err(f)
        }
    }
}

/// `.NAME.tmp-PID` beside `path`, so the final rename stays on one filesystem.
fn temp_path(path: &Path) -> Result<PathBuf, Failure> {
    let name = path
        .file_name()
        .ok_or_else(|| Failure::new(format!("{} is not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

/// Streams the snapshot into `tmp` and syncs it. The head must come within the client
/// timeout, and so must each piece of the body after it (a stalled server is an error, not a
/// hang).
async fn download(client: &Client, tmp: &Path) -> Result<(), Failure> {
    let call = Call::new(Method::GET, "/v1/admin/snapshot".to_owned())
        .header(ACCEPT, snapshot::CONTENT_TYPE)?;
    let stalled = || {
        Failure::new(format!(
            "the snapshot stream stalled for {} s",
            TIMEOUT.as_secs()
        ))
    };
    let mut body = tokio::time::timeout(TIMEOUT, client.open(call))
        .await
        .map_err(|_| stalled())??
        .body;
    let write_err =
        |e: std::io::Error| Failure::new(format!("cannot write {}: {e}", tmp.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(write_err)?;
    while let Some(frame) = tokio::time::timeout(TIMEOUT, body.frame())
        .await
        .map_err(|_| stalled())?
    {
        let frame = frame.map_err(|e| Failure::new(format!("the snapshot stream broke: {e}")))?;
        if let Ok(data) = frame.into_data() {
            f.write_all(&data).map_err(write_err)?;
        }
    }
    f.sync_all().map_err(write_err)
}

/// Makes the rename durable (best effort: some filesystems cannot sync a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
}

// ---- restore ----

fn restore(path: &Path, config: &ConfigArgs) -> Result<ExitCode, Failure> {
    let mut cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if cfg.storage.effective_engine() == Engine::Mem {
        return Err(Failure::new(
            "the mem engine keeps nothing on disk, so there is nothing to restore into; \
             configure the sled engine (MICRONODE_STORAGE_ENGINE=sled, MICRONODE_STORAGE_PATH)",
        ));
    }
    let postgres = cfg.storage.effective_engine() == Engine::Postgres;
    let dir = if postgres {
        PathBuf::from(format!(
            "schema {} (MICRONODE_PG_SCHEMA)",
            cfg.postgres.schema
        ))
    } else {
        cfg.storage.path.clone()
    };
    if !postgres {
        check_empty(&dir)?;
    }
    // Everything is checked before the first write: shape, count, hash, and names.
    let expected = check_names(path)?;
    // Speed: one flush at the end instead of one per step; `flush_blocking` makes it durable.
    cfg.storage.durability = Durability::Periodic;
    let store = micronode::open_store_offline(&cfg).map_err(Failure::new)?;
    if postgres {
        // The same rule as a data directory: only into an empty keyspace.
        let any = store
            .scan(None, 1, 0)
            .map_err(|e| Failure::new(e.to_string()))?;
        if !any.is_empty() {
            return Err(Failure::new(format!(
                "refusing to restore into {}: it holds records; restore only into a new or \
                 empty schema",
                dir.display()
            )));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
    let partial = |f: Failure| {
        Failure::new(format!(
            "{}; {} is partially restored: remove it before trying again",
            f.message,
            dir.display()
        ))
    };
    let done = rt.block_on(load(path, &store)).map_err(partial)?;
    store
        .flush_blocking()
        .map_err(|e| partial(Failure::new(format!("final flush failed: {e}"))))?;
    if done.restored != expected {
        return Err(partial(Failure::new(format!(
            "{} changed while it was restored ({} keys checked, {} read)",
            path.display(),
            expected,
            done.restored
        ))));
    }
    if done.expired > 0 {
        eprintln!("micronode: skipped {} keys already expired", done.expired);
    }
    if done.system > 0 {
        eprintln!(
            "micronode: skipped {} system records (this build restores keys only)",
            done.system
        );
    }
    #[derive(serde::Serialize)]
    struct Restored {
        restored: u64,
        revision: Option<u64>,
    }
    Ok(print_json(&Restored {
        restored: done.restored,
        revision: done.revision,
    }))
}

/// The data directory must not exist yet, or be an empty directory.
fn check_empty(dir: &Path) -> Result<(), Failure> {
    let refuse = |why: &str| {
        Failure::new(format!(
            "refusing to restore into {}: {why}; restore only into a new or empty data \
             directory (MICRONODE_STORAGE_PATH)",
            dir.display()
        ))
    };
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(refuse("not a directory")),
        Err(e) => Err(refuse(&e.to_string())),
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(refuse("it is not empty")),
        },
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why `e` cannot be stored, if it cannot: the names and content type the KV routes accept.
fn entry_problem(e: &snapshot::Entry) -> Option<String> {
    if !micronode::handlers::kv::valid_bucket(&e.bucket) {
        return Some(format!("invalid bucket name {:?}", e.bucket));
    }
    // `decode_key` checks a key as sent in a path: escape `%` so the key decodes to itself.
    if micronode::handlers::kv::decode_key(&e.key.replace('%', "%25")).is_err() {
        return Some(format!(
            "invalid key {:?} (the key rules are in docs/API.md)",
            e.key
        ));
    }
    if e.content_type.len() > MAX_CONTENT_TYPE_BYTES {
        return Some(format!(
            "content type longer than {MAX_CONTENT_TYPE_BYTES} bytes"
        ));
    }
    None
}

/// The first pass: verifies the file and checks every key's names; the number of keys that
/// will be restored (live ones).
fn check_names(path: &Path) -> Result<u64, Failure> {
    let f = File::open(path)
        .map_err(|e| Failure::new(format!("cannot open {}: {e}", path.display())))?;
    let at = |e: snapshot::SnapshotError| Failure::new(format!("{}: {e}", path.display()));
    let mut r = Reader::new(BufReader::new(f)).map_err(at)?;
    let now = now_unix();
    let mut live = 0;
    while let Some(rec) = r.next_record().map_err(at)? {
        // A revocation is written back like a key, so it is counted like one.
        if let Record::System(map) = &rec
            && revocation_entry(map).is_some()
        {
            live += 1;
        }
        if let Record::Entry(e) = rec {
            if let Some(problem) = entry_problem(&e) {
                return Err(Failure::new(format!(
                    "{}: line {}: {problem}",
                    path.display(),
                    r.line()
                )));
            }
            if e.expires_at.is_none_or(|t| t > now) {
                live += 1;
            }
        }
    }
    Ok(live)
}

#[derive(Debug, Default)]
struct Loaded {
    restored: u64,
    expired: u64,
    system: u64,
    /// Revision of the last step written (`None` when nothing was).
    revision: Option<u64>,
}

/// One key waiting in the current step.
struct Pending {
    entry: snapshot::Entry,
    value: Bytes,
}

/// The second pass: reads the (verified) file again and writes every live key.
async fn load(path: &Path, store: &Arc<dyn Storage>) -> Result<Loaded, Failure> {
    let f = File::open(path)
        .map_err(|e| Failure::new(format!("cannot open {}: {e}", path.display())))?;
    let at = |e: snapshot::SnapshotError| Failure::new(format!("{}: {e}", path.display()));
    let mut r = Reader::new(BufReader::new(f)).map_err(at)?;
    let now = now_unix();
    let mut done = Loaded::default();
    let mut step: Vec<Pending> = Vec::with_capacity(MAX_WRITE_OPS);
    while let Some(rec) = r.next_record().map_err(at)? {
        let e = match rec {
            Record::System(map) => match revocation_entry(&map) {
                // A revoked token stays revoked after a restore.
                Some(e) => e,
                None => {
                    done.system += 1;
                    continue;
                }
            },
            Record::Entry(e) => e,
        };
        let mut e = e;
        if e.expires_at.is_some_and(|t| t <= now) {
            done.expired += 1;
            continue;
        }
        // A key appears at most once per step; a file naming a key twice keeps the last.
        let repeated = step
            .iter()
            .any(|p| p.entry.bucket == e.bucket && p.entry.key == e.key);
        if step.len() == MAX_WRITE_OPS || repeated {
            write_step(store, &step, &mut done).await?;
            step.clear();
        }
        let value = Bytes::from(std::mem::take(&mut e.value));
        step.push(Pending { entry: e, value });
    }
    if !step.is_empty() {
        write_step(store, &step, &mut done).await?;
    }
    Ok(done)
}

/// A `{"system":"revocation","nonce":"<hex>","revoked_unix":T}` record as the key the server
/// keeps it under (`_auth/revoked/<hex>`); `None` for any other system record.
fn revocation_entry(map: &serde_json::Map<String, serde_json::Value>) -> Option<snapshot::Entry> {
    if map.get("system")?.as_str()? != "revocation" {
        return None;
    }
    let nonce = map.get("nonce")?.as_str()?;
    micronode::auth::token::parse_nonce_hex(nonce)?;
    let when = map
        .get("revoked_unix")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    Some(snapshot::Entry {
        bucket: micronode::app::AUTH_BUCKET.to_owned(),
        key: format!("revoked/{nonce}"),
        content_type: "text/plain".to_owned(),
        etag: String::new(),
        value: when.to_string().into_bytes(),
        expires_at: None,
        // The node's own record: it counts for no tenant.
        tenant: Some(micronode::store::usage::SYSTEM.to_owned()),
    })
}

async fn write_step(
    store: &Arc<dyn Storage>,
    step: &[Pending],
    done: &mut Loaded,
) -> Result<(), Failure> {
    let ops: Vec<WriteOp<'_>> = step
        .iter()
        .map(|p| WriteOp::Put {
            bucket: &p.entry.bucket,
            key: &p.entry.key,
            content_type: p.entry.content_type.as_bytes(),
            value: &p.value,
            expires_at: p.entry.expires_at,
            cond: &Cond::NONE,
            owner: p
                .entry
                .tenant
                .as_deref()
                .unwrap_or(micronode::config::DEFAULT_TENANT),
        })
        .collect();
    let written = store
        .write(&ops)
        .await
        .map_err(|e| Failure::new(format!("the store refused a write: {e}")))?;
    done.restored += step.len() as u64;
    done.revision = Some(written.revision);
    Ok(())
}
