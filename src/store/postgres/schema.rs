//! The postgres engine's tables, and the migrations that create them at boot.
//!
//! Migrations are numbered and applied in order, all in one transaction that first takes
//! `pg_advisory_xact_lock` on a key derived from the schema name: several nodes booting at
//! once over one database queue on the lock, the first applies what is missing, the others
//! find `schema_migrations` up to date and change nothing. A database whose schema is newer
//! than this build knows is refused (an older binary must not write a newer layout).

use tokio_postgres::Client;

use super::super::{StoreError, clock_floor};
use super::pg_err;

/// The channel every write notifies (payload `"<schema> <revision>"`); listeners of other
/// schemas in the same database ignore it.
pub(crate) const CHANNEL: &str = "micronode_changes";

/// Migration `n` is `MIGRATIONS[n - 1]`; `{s}` stands for the schema, `{floor}` for the
/// first revision (the clock floor at creation, see `store::clock_floor`).
const MIGRATIONS: &[&str] = &[
    // 1: records, the change log, the revision counter.
    r#"
    CREATE TABLE {s}.kv (
        bucket text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        value bytea NOT NULL,
        content_type bytea NOT NULL,
        revision bigint NOT NULL,
        expires_at bigint NULL,
        owner text NOT NULL,
        PRIMARY KEY (bucket, key)
    );
    CREATE INDEX kv_expires_at ON {s}.kv (expires_at) WHERE expires_at IS NOT NULL;
    -- The engine key of `Storage::scan` (`bucket/key`, byte order).
    CREATE INDEX kv_engine_key ON {s}.kv ((bucket || '/' || key));
    CREATE TABLE {s}.changes (
        revision bigint NOT NULL,
        seq int NOT NULL,
        bucket text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        value bytea NOT NULL,
        content_type bytea NOT NULL,
        expires_at bigint NULL,
        PRIMARY KEY (revision, seq)
    );
    CREATE TABLE {s}.rev (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        v bigint NOT NULL
    );
    INSERT INTO {s}.rev (id, v) VALUES (true, {floor});
    "#,
    // 2: tenant usage, shared by every node: kept in each write's transaction, under the
    // counter's lock, so quotas hold across nodes. Seeded from the records under that lock,
    // so no write of a running node falls between the count and the table (the node's own
    // `_` buckets and the system owner `''` count for nobody).
    r#"
    SELECT v FROM {s}.rev FOR UPDATE;
    CREATE TABLE {s}.usage (
        owner text COLLATE "C" PRIMARY KEY,
        keys bigint NOT NULL,
        bytes bigint NOT NULL
    );
    INSERT INTO {s}.usage (owner, keys, bytes)
        SELECT owner, count(*),
               sum(octet_length(bucket) + octet_length(key) + octet_length(value))
        FROM {s}.kv
        WHERE owner <> '' AND left(bucket, 1) <> '_'
        GROUP BY owner;
    "#,
];

/// The newest schema version this build knows.
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// Creates the schema and applies the missing migrations, safely against other nodes doing
/// the same at once. Returns the version the schema is at.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<i32, StoreError> {
    let err = |e| pg_err("schema migration failed", e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("micronode.migrate:{schema}")],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(err)?;
    let row = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .map_err(err)?;
    let current: i32 = row.try_get(0).map_err(err)?;
    if current > VERSION {
        return Err(StoreError::internal(
            "the database schema is newer than this build knows (upgrade the binary)",
        ));
    }
    let floor = clock_floor().to_string();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let version = i as i32 + 1;
        let sql = sql.replace("{s}", schema).replace("{floor}", &floor);
        tx.batch_execute(&sql).await.map_err(err)?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(err)?;
        tracing::info!(schema, version, "postgres schema migrated");
    }
    tx.commit().await.map_err(err)?;
    Ok(VERSION)
}

/// The engine's statements, with the schema spliced in once (it is a checked identifier).
#[derive(Debug)]
pub(crate) struct Sql {
    pub get: String,
    pub counter: String,
    pub lock_counter: String,
    pub bump_counter: String,
    pub lock_keys: String,
    pub upsert: String,
    pub delete: String,
    pub insert_changes: String,
    pub changes_between: String,
    pub notify: String,
    pub list_from: String,
    pub list_after: String,
    pub expired: String,
    pub scan: String,
    pub usage: String,
    pub usage_add: String,
    pub prune: String,
}

impl Sql {
    pub(crate) fn new(s: &str) -> Sql {
        let list = |op: &str| {
            format!(
                "SELECT r.v, k.key, k.value, k.content_type, k.revision, k.expires_at
                 FROM {s}.rev r LEFT JOIN LATERAL (
                     SELECT key, CASE WHEN $6 THEN value ELSE ''::bytea END AS value,
                            content_type, revision, expires_at
                     FROM {s}.kv
                     WHERE bucket = $1 AND key {op} $2 AND ($3::text IS NULL OR key < $3)
                       AND (expires_at IS NULL OR expires_at > $4)
                     ORDER BY key LIMIT $5
                 ) k ON true
                 ORDER BY k.key"
            )
        };
        Sql {
            get: format!(
                "SELECT r.v, k.value, k.content_type, k.revision, k.expires_at
                 FROM {s}.rev r LEFT JOIN {s}.kv k ON k.bucket = $1 AND k.key = $2"
            ),
            counter: format!("SELECT v FROM {s}.rev"),
            lock_counter: format!("SELECT v FROM {s}.rev FOR UPDATE"),
            bump_counter: format!("UPDATE {s}.rev SET v = $1 WHERE v = $2"),
            lock_keys: format!(
                "SELECT k.bucket, k.key, k.revision, k.expires_at, k.owner,
                        octet_length(k.value)::bigint
                 FROM {s}.kv k
                 JOIN unnest($1::text[], $2::text[]) AS t(b, k) ON k.bucket = t.b AND k.key = t.k
                 FOR UPDATE OF k"
            ),
            upsert: format!(
                "INSERT INTO {s}.kv (bucket, key, value, content_type, revision, expires_at, owner)
                 SELECT b, k, v, c, $1, e, o
                 FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::int8[],
                             $7::text[]) AS t(b, k, v, c, e, o)
                 ON CONFLICT (bucket, key) DO UPDATE SET
                     value = EXCLUDED.value, content_type = EXCLUDED.content_type,
                     revision = EXCLUDED.revision, expires_at = EXCLUDED.expires_at,
                     owner = EXCLUDED.owner"
            ),
            delete: format!(
                "DELETE FROM {s}.kv k USING unnest($1::text[], $2::text[]) AS t(b, k)
                 WHERE k.bucket = t.b AND k.key = t.k"
            ),
            insert_changes: format!(
                "INSERT INTO {s}.changes
                     (revision, seq, bucket, key, kind, value, content_type, expires_at)
                 SELECT * FROM unnest($1::int8[], $2::int4[], $3::text[], $4::text[],
                                      $5::text[], $6::bytea[], $7::bytea[], $8::int8[])"
            ),
            changes_between: format!(
                "SELECT revision, seq, bucket, key, kind, value, content_type, expires_at
                 FROM {s}.changes WHERE revision > $1 AND revision <= $2
                 ORDER BY revision, seq"
            ),
            notify: "SELECT pg_notify($1, $2)".to_owned(),
            list_from: list(">="),
            list_after: list(">"),
            expired: format!(
                "SELECT bucket, key, revision FROM {s}.kv
                 WHERE expires_at IS NOT NULL AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2"
            ),
            scan: format!(
                "SELECT bucket, key, value, content_type, revision, expires_at, owner FROM {s}.kv
                 WHERE (bucket || '/' || key) > $1 AND (expires_at IS NULL OR expires_at > $2)
                 ORDER BY (bucket || '/' || key) LIMIT $3"
            ),
            usage: format!(
                "SELECT r.v, u.owner, u.keys, u.bytes
                 FROM {s}.rev r LEFT JOIN {s}.usage u ON u.keys > 0"
            ),
            usage_add: format!(
                "INSERT INTO {s}.usage AS u (owner, keys, bytes)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[])
                 ON CONFLICT (owner) DO UPDATE SET
                     keys = u.keys + EXCLUDED.keys, bytes = u.bytes + EXCLUDED.bytes
                 RETURNING owner, keys, bytes"
            ),
            prune: format!("DELETE FROM {s}.changes WHERE revision <= $1"),
        }
    }
}
