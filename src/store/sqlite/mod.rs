//! The embedded SQLite store: one writer connection (SQLite has one writer at a time, so a
//! single connection avoids lock contention) and a pool of readers, in WAL mode.

mod consent;
mod dci;

use super::replay::{RecordIds, Recorder, SeenId};
use super::{
    At, Backend, DciJobLookup, DciJobRow, DciJobUpdate, ListingQuery, PartnerRow, RecordRef,
    RecordSort, Store, StoreError, StoreResult, field_index_name, map_sqlx,
};
use crate::auth::{Role, StaffUser};
use crate::clock::to_text;
use crate::registry::audit::{AuditChain, AuditDraft, AuditEntry};
use crate::registry::change_request::{ChangeRequest, Decision, RequestStatus};
use crate::registry::change_set::{ChangeLogEntry, ChangeSet};
use crate::registry::query::{FieldRef, RecordPage, RecordQuery};
use crate::registry::record::{Fields, Record, RecordStatus};
use crate::registry::register::{FieldDef, FieldType, RegisterDef, Registers, is_valid_name};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqliteConnection, SqlitePool};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// Rows per multi-row INSERT (9 parameters each; SQLite allows 32,766 per statement).
const INSERT_CHUNK: usize = 400;
/// Parameters per `IN (…)` list.
const IN_CHUNK: usize = 500;

const RECORD_COLUMNS: &str = "r.record_id, r.version, r.register, r.functional_id, r.parent_id, \
    p.functional_id as parent_functional_id, r.status, json(r.fields) as fields, r.change_set_id, r.valid_from, r.valid_to \
    from record_version r left join record_version p on p.record_id = r.parent_id and p.valid_to is null";

/// The record id behind functional id `$1` (functional ids never move between records).
const CURRENT_ID_BY_FUNCTIONAL_ID: &str =
    "select record_id from record_version where functional_id = $1 and valid_to is null";

const REQUEST_COLUMNS: &str = "change_request_id, maker, source, reason, status, submitted_at, \
    drafts, bases, record_count, decided_by, decided_at, decision_reason, change_set_id";

/// A value bound to a listing query.
enum Bind {
    Text(String),
    Number(f64),
    Integer(i64),
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("bad stored JSON: {e}")))
}

fn roles_json(roles: &[Role]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_user(row: &SqliteRow) -> StoreResult<StaffUser> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_sqlx);
    Ok(StaffUser {
        name: get("user_name")?,
        password_hash: get("password_hash")?,
        roles: from_json(&get("roles")?)?,
        disabled: row.try_get("disabled").map_err(map_sqlx)?,
        created_at: parse_time(&get("created_at")?)?,
        updated_at: parse_time(&get("updated_at")?)?,
    })
}

fn decode_request(row: &SqliteRow) -> StoreResult<ChangeRequest> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_sqlx);
    let get_opt = |name: &str| row.try_get::<Option<String>, _>(name).map_err(map_sqlx);
    let status = get("status")?;
    Ok(ChangeRequest {
        id: parse_uuid(&get("change_request_id")?)?,
        maker: get("maker")?,
        source: get("source")?,
        reason: get_opt("reason")?,
        status: RequestStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad stored status `{status}`")))?,
        submitted_at: parse_time(&get("submitted_at")?)?,
        drafts: from_json(&get("drafts")?)?,
        bases: from_json(&get("bases")?)?,
        record_count: row.try_get("record_count").map_err(map_sqlx)?,
        decided_by: get_opt("decided_by")?,
        decided_at: get_opt("decided_at")?
            .as_deref()
            .map(parse_time)
            .transpose()?,
        decision_reason: get_opt("decision_reason")?,
        change_set_id: get_opt("change_set_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
    })
}

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The disclosure log's file (see [`DISCLOSURE_SCHEMA`]), for auditors' reads.
    disclosure_reader: SqlitePool,
    /// Appends disclosures, batching concurrent ones into one transaction.
    disclosures: super::batch::Batcher<crate::consent::Logged, ()>,
    /// Records partners' message ids, batching concurrent ones into one write.
    replay: Recorder,
}

/// Partners' message ids on SQLite live in a file of their own, `<database>.replay`: a write
/// to the main file makes every reader connection drop its page cache and its memory map at
/// its next read, which under DCI load (a message id written per request) cost more than the
/// searches themselves (benches/dci.rs). The `seen_message` table of migration 0002 stays
/// empty on SQLite.
struct ReplayFile(SqlitePool);

/// The disclosure log on SQLite lives in a file of its own, `<database>.disclosures`, for the
/// same reason as message ids: a busy gateway logs a disclosure per reply. It holds the log
/// (the tables of migration 0005, which stay in the main file holding only what was logged
/// before the move, copied over on first open) and the disclosure chain, anchored in the
/// registry's audit chain (`registry::audit`).
const DISCLOSURE_SCHEMA: &[&str] = &[
    "create table if not exists disclosure (disclosure_id text primary key, at text not null, \
     partner text not null, action text not null, message_id text not null, \
     transaction_id text not null, correlation_id text not null, document text not null, \
     digest text not null)",
    "create index if not exists disclosure_at on disclosure (at)",
    "create index if not exists disclosure_partner on disclosure (partner, at)",
    // Which disclosures carried a registrant: one row per disclosure (its rowid), holding its
    // registrants' terms (`consent::registrant_term`). An FTS5 index, not a table with an index
    // on functional id: a page of 100 records added 100 keys at random places of that index, so
    // each reply's commit dirtied up to 100 pages, each written to the WAL (benches/dci.rs:
    // expression search 64 -> 96 req/s without those writes). FTS5 writes each transaction's
    // terms as one small segment and merges segments in bulk. Contentless (the documents hold the registrants),
    // without positions or sizes (only "which rows hold this term" is asked). It refuses
    // `update` and `delete`; unlike a table it cannot carry the append-only triggers, so its
    // `delete-all` command would empty it. It is an index: the log is the documents, covered by
    // the disclosure chain.
    "create virtual table if not exists disclosure_registrant_index using fts5(\
     registrants, content='', detail=none, columnsize=0, tokenize='ascii')",
    "create trigger if not exists disclosure_no_update before update on disclosure \
     begin select raise(abort, 'the disclosure log is append-only'); end",
    "create trigger if not exists disclosure_no_delete before delete on disclosure \
     begin select raise(abort, 'the disclosure log is append-only'); end",
    "create table if not exists disclosure_audit_log (seq integer primary key, at text not null, \
     actor text not null, action text not null, subject text not null, detail text not null, \
     prev_hash text not null, hash text not null)",
    "create table if not exists disclosure_audit_head (id integer primary key check (id = 1), \
     seq integer not null, hash text not null)",
    "insert or ignore into disclosure_audit_head (id, seq, hash) values (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')",
];

/// Adds to the registrant index `index` the rows of `rows`, a table of the earlier layout (one
/// row per disclosure and registrant), one index row per disclosure of `disclosures`. Terms as
/// `consent::registrant_term` makes them.
fn index_registrant_rows(index: &str, rows: &str, disclosures: &str) -> String {
    format!(
        "insert into {index} (rowid, registrants) \
         select d.rowid, group_concat(lower(hex(r.functional_id)), ' ') \
         from {rows} r join {disclosures} d using (disclosure_id) \
         group by d.rowid order by d.rowid"
    )
}

/// Moves the registrants of a disclosure file written before the registrant index
/// (`disclosure_registrant`, one row per disclosure and registrant) into the index, and drops
/// that table, in one transaction: once.
async fn index_earlier_registrants(disclosure_writer: &SqlitePool) -> StoreResult<()> {
    let mut tx = disclosure_writer.begin().await.map_err(map_sqlx)?;
    let earlier: bool = sqlx::query_scalar(
        "select exists (select 1 from sqlite_master where type = 'table' and name = 'disclosure_registrant')",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    if !earlier {
        return Ok(());
    }
    let moved = sqlx::query(AssertSqlSafe(index_registrant_rows(
        "disclosure_registrant_index",
        "disclosure_registrant",
        "disclosure",
    )))
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?
    .rows_affected();
    // Its append-only triggers go with it.
    sqlx::query("drop table disclosure_registrant")
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    tracing::info!(
        disclosures = moved,
        "moved the disclosure log's registrants into its registrant index"
    );
    Ok(())
}

/// Copies what the main file's disclosure log holds (written before the log had a file of its
/// own) into the disclosure file, once: when the latter's log is empty. Those entries stay
/// covered by their registry-chain entries.
async fn adopt_earlier_disclosures(disclosure_writer: &SqlitePool, main: &Path) -> StoreResult<()> {
    let mut conn = disclosure_writer.acquire().await.map_err(map_sqlx)?;
    let empty: bool = sqlx::query_scalar("select not exists (select 1 from disclosure)")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if !empty {
        return Ok(());
    }
    sqlx::query("attach database $1 as earlier")
        .bind(main.to_string_lossy().into_owned())
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    let copied = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "insert into main.disclosure (disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, document, digest) \
             select disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, document, digest from earlier.disclosure",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(index_registrant_rows(
            "main.disclosure_registrant_index",
            "earlier.disclosure_registrant",
            "main.disclosure",
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
    .await;
    sqlx::query("detach database earlier")
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    copied.map_err(map_sqlx)
}

/// The replay file's schema (created when missing; the table of migration 0002).
const REPLAY_SCHEMA: &[&str] = &[
    "create table if not exists seen_message (sender_id text not null, message_id text not null, \
     seen_at text not null, primary key (sender_id, message_id))",
    "create index if not exists seen_message_seen_at on seen_message (seen_at)",
];

#[async_trait]
impl RecordIds for ReplayFile {
    async fn record(
        &self,
        ids: &[SeenId],
        forget_before: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashSet<(String, String)>> {
        // One statement text whatever the batch size (the ids travel as one JSON array), so
        // the connection's prepared statement is reused.
        let rows: Vec<[String; 3]> = ids
            .iter()
            .map(|(sender, id, at)| [sender.clone(), id.clone(), to_text(*at)])
            .collect();
        let returned = sqlx::query(
            "insert into seen_message (sender_id, message_id, seen_at) \
             select value ->> 0, value ->> 1, value ->> 2 from json_each($1) where true \
             on conflict (sender_id, message_id) do update set seen_at = excluded.seen_at \
             where seen_message.seen_at < $2 returning sender_id, message_id",
        )
        .bind(serde_json::to_string(&rows).unwrap_or_default())
        .bind(to_text(forget_before))
        .fetch_all(&self.0)
        .await
        .map_err(map_sqlx)?;
        returned
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(map_sqlx)?,
                    row.try_get(1).map_err(map_sqlx)?,
                ))
            })
            .collect()
    }

    async fn purge(&self, before: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("delete from seen_message where seen_at < $1")
            .bind(to_text(before))
            .execute(&self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }
}

fn parse_time(text: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("bad stored timestamp `{text}`: {e}")))
}

fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Other(format!("bad stored id `{text}`: {e}")))
}

fn decode_record(row: &SqliteRow) -> StoreResult<Record> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_sqlx);
    let get_opt = |name: &str| row.try_get::<Option<String>, _>(name).map_err(map_sqlx);
    let status = get("status")?;
    let fields: Fields = serde_json::from_str(&get("fields")?)
        .map_err(|e| StoreError::Other(format!("bad stored fields: {e}")))?;
    Ok(Record {
        id: parse_uuid(&get("record_id")?)?,
        register: get("register")?,
        functional_id: get("functional_id")?,
        parent_id: get_opt("parent_id")?
            .as_deref()
            .map(parse_uuid)
            .transpose()?,
        parent_functional_id: get_opt("parent_functional_id")?,
        status: RecordStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad stored status `{status}`")))?,
        version: row.try_get("version").map_err(map_sqlx)?,
        fields,
        change_set_id: parse_uuid(&get("change_set_id")?)?,
        valid_from: parse_time(&get("valid_from")?)?,
        valid_to: get_opt("valid_to")?
            .as_deref()
            .map(parse_time)
            .transpose()?,
    })
}

fn decode_all(rows: &[SqliteRow]) -> StoreResult<Vec<Record>> {
    rows.iter().map(decode_record).collect()
}

/// The index expression for a field; queries must use the same text to hit the index.
fn field_expr(field: &FieldDef) -> String {
    format!("json_extract(fields, '$.{}')", field.name)
}

/// The `create index` statement of `def`'s index on `field`, spelled as SQLite keeps it in
/// `sqlite_master.sql`, so that an index made from another definition is told apart.
///
/// SQLite uses one index per table in a query, so a non-unique field's index also carries the
/// record id, which the page order reads from it, and the register's other non-unique indexed
/// fields, which conditions read from it: a search on a district and a birth-date range reads
/// no record that fails either. The record id comes before those fields so that a new record
/// (UUIDv7 ids grow with time) lands at the end of its value's run, not at a random page: an
/// import writes as fast as into a one-field index. A unique index carries nothing: its column
/// is its constraint.
fn field_index_sql(name: &str, def: &RegisterDef, field: &FieldDef) -> String {
    let mut columns = field_expr(field);
    if !field.unique {
        columns.push_str(", record_id");
        for carried in def
            .indexed_fields()
            .filter(|f| !f.unique && f.name != field.name)
        {
            columns.push_str(", ");
            columns.push_str(&field_expr(carried));
        }
    }
    let unique = if field.unique { "UNIQUE " } else { "" };
    format!(
        "CREATE {unique}INDEX {name} on record_version ({columns}) where register = '{}' and valid_to is null",
        def.name
    )
}

/// `?, ?, …`: positional placeholders for statements with many parameters. (sqlx resolves
/// `$N` names one parameter at a time through SQLite's linear name list: quadratic.)
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

const PARTNER_COLUMNS: &str =
    "select sender_id, client_id, enabled, document, created_at, updated_at from partner";

fn decode_partner(row: &SqliteRow) -> StoreResult<PartnerRow> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_sqlx);
    Ok(PartnerRow {
        sender_id: get("sender_id")?,
        client_id: get("client_id")?,
        enabled: row.try_get::<bool, _>("enabled").map_err(map_sqlx)?,
        document: get("document")?,
        created_at: parse_time(&get("created_at")?)?,
        updated_at: parse_time(&get("updated_at")?)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory");
        if let Some(dir) = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        // The writer gets a large page cache: bulk imports insert into indexes keyed by
        // random values (functional ids, national ids), and every cached page is a page not
        // re-read. Checkpointing every 256 MiB of WAL instead of every 4 MiB lets a page changed
        // by several batches be copied back (and synced) once.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", "-98304")
                    .pragma("wal_autocheckpoint", "65536"),
            )
            .await?;
        sqlx::migrate!("src/store/sqlite/migrations")
            .run(&writer)
            .await?;
        let mut replay_file = options.get_filename().as_os_str().to_owned();
        replay_file.push(".replay");
        // Readers share the OS page cache; a small cache each keeps memory bounded, and reads
        // are memory-mapped (a page costs a pointer, not a pread and a copy: 10x on searches
        // reading many records, benches/dci.rs). SQLite caps the size at its compile-time
        // maximum. A write to this file makes every reader drop its cache and its mapping,
        // which is why partners' message ids, written on every DCI request, live in a file of
        // their own (`replay`).
        let reader = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(
                options
                    .clone()
                    .read_only(true)
                    .pragma("cache_size", "-4096")
                    .pragma("mmap_size", "17179869184"),
            )
            .await?;
        let replay_writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&replay_file)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10)),
            )
            .await?;
        for statement in REPLAY_SCHEMA {
            sqlx::query(*statement).execute(&replay_writer).await?;
        }
        let mut disclosure_file = options.get_filename().as_os_str().to_owned();
        disclosure_file.push(".disclosures");
        let disclosure_options = SqliteConnectOptions::new()
            .filename(&disclosure_file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // The first open after an upgrade copies the whole earlier log in one transaction;
            // the WAL it grew to is cut back after the next checkpoint.
            .pragma("journal_size_limit", "67108864");
        let disclosure_writer = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(disclosure_options.clone())
            .await?;
        for statement in DISCLOSURE_SCHEMA {
            sqlx::query(*statement).execute(&disclosure_writer).await?;
        }
        index_earlier_registrants(&disclosure_writer).await?;
        adopt_earlier_disclosures(&disclosure_writer, options.get_filename()).await?;
        let disclosure_reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(disclosure_options.read_only(true))
            .await?;
        let disclosures = super::batch::Batcher::start(std::sync::Arc::new(move |entries| {
            let writer = disclosure_writer.clone();
            Box::pin(async move {
                consent::insert_disclosures(&writer, &entries).await?;
                Ok(vec![(); entries.len()])
            })
        }));
        Ok(Self {
            disclosure_reader,
            disclosures,
            replay: Recorder::start(std::sync::Arc::new(ReplayFile(replay_writer))),
            writer,
            reader,
        })
    }

    async fn fetch_records(&self, sql: String, binds: Vec<String>) -> StoreResult<Vec<Record>> {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind);
        }
        let rows = query.fetch_all(&self.reader).await.map_err(map_sqlx)?;
        decode_all(&rows)
    }

    async fn fetch_one_record(
        &self,
        sql: String,
        binds: Vec<String>,
    ) -> StoreResult<Option<Record>> {
        Ok(self.fetch_records(sql, binds).await?.into_iter().next())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn sync_field_indexes(&self, registers: &Registers) -> StoreResult<()> {
        let existing: BTreeMap<String, String> = sqlx::query_as(
            "select name, sql from sqlite_master where type = 'index' and (name like 'rv\\_ix\\_\\_%' escape '\\' or name like 'rv\\_uq\\_\\_%' escape '\\')",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(map_sqlx)?
        .into_iter()
        .collect();
        let mut wanted = BTreeSet::new();
        for def in registers.iter() {
            for field in def.indexed_fields() {
                let name = field_index_name(&def.name, field);
                let sql = field_index_sql(&name, def, field);
                wanted.insert(name.clone());
                match existing.get(&name) {
                    Some(current) if *current == sql => continue,
                    // Made by an earlier definition (other carried fields): built again.
                    Some(_) => {
                        tracing::info!(index = %name, "building a field index again: its definition changed");
                        sqlx::query(AssertSqlSafe(format!("drop index {name}")))
                            .execute(&self.writer)
                            .await
                            .map_err(map_sqlx)?;
                    }
                    None => {}
                }
                if let Err(error) = sqlx::query(AssertSqlSafe(sql)).execute(&self.writer).await {
                    return Err(match map_sqlx(error) {
                        StoreError::Unique { .. } => StoreError::DuplicateValues {
                            register: def.name.clone(),
                            field: field.name.clone(),
                        },
                        other => other,
                    });
                }
            }
        }
        for stale in existing.keys().filter(|n| !wanted.contains(*n)) {
            sqlx::query(AssertSqlSafe(format!("drop index if exists {stale}")))
                .execute(&self.writer)
                .await
                .map_err(map_sqlx)?;
        }
        Ok(())
    }

    async fn apply_change_set(&self, change_set: &ChangeSet) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        write_change_set(&mut tx, change_set).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn record_by_functional_id(
        &self,
        functional_id: &str,
        at: At<'_>,
    ) -> StoreResult<Option<Record>> {
        let (sql, binds) = match at {
            At::Current => (
                format!(
                    "select {RECORD_COLUMNS} where r.functional_id = $1 and r.valid_to is null"
                ),
                vec![functional_id.to_owned()],
            ),
            At::Instant(t) => (
                format!(
                    "select {RECORD_COLUMNS} where r.record_id = ({CURRENT_ID_BY_FUNCTIONAL_ID}) and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2)"
                ),
                vec![functional_id.to_owned(), to_text(t)],
            ),
            At::Label(label) => (
                format!(
                    "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                     where r.record_id = ({CURRENT_ID_BY_FUNCTIONAL_ID}) and l.label = $2"
                ),
                vec![functional_id.to_owned(), label.to_owned()],
            ),
        };
        self.fetch_one_record(sql, binds).await
    }

    async fn record_by_id(&self, id: Uuid, at: At<'_>) -> StoreResult<Option<Record>> {
        let id = id.to_string();
        let (sql, binds) = match at {
            At::Current => (
                format!("select {RECORD_COLUMNS} where r.record_id = $1 and r.valid_to is null"),
                vec![id],
            ),
            At::Instant(t) => (
                format!(
                    "select {RECORD_COLUMNS} where r.record_id = $1 and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2)"
                ),
                vec![id, to_text(t)],
            ),
            At::Label(label) => (
                format!(
                    "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                     where r.record_id = $1 and l.label = $2"
                ),
                vec![id, label.to_owned()],
            ),
        };
        self.fetch_one_record(sql, binds).await
    }

    async fn records_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<Record>> {
        let mut out = Vec::with_capacity(functional_ids.len());
        for chunk in functional_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "select {RECORD_COLUMNS} where r.functional_id in ({}) and r.valid_to is null",
                placeholders(chunk.len())
            );
            out.extend(self.fetch_records(sql, chunk.to_vec()).await?);
        }
        Ok(out)
    }

    async fn record_refs_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<RecordRef>> {
        let mut out = Vec::with_capacity(functional_ids.len());
        for chunk in functional_ids.chunks(IN_CHUNK) {
            let sql = format!(
                "select functional_id, record_id, register from record_version where functional_id in ({}) and valid_to is null",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for (functional_id, id, register) in
                query.fetch_all(&self.reader).await.map_err(map_sqlx)?
            {
                out.push(RecordRef {
                    functional_id,
                    id: parse_uuid(&id)?,
                    register,
                });
            }
        }
        Ok(out)
    }

    async fn records_by_field(
        &self,
        register: &str,
        field: &FieldDef,
        values: &[String],
    ) -> StoreResult<Vec<Record>> {
        if !is_valid_name(register) {
            return Err(StoreError::Other(format!(
                "invalid register name `{register}`"
            )));
        }
        // INDEXED BY: with a long IN list SQLite's planner would otherwise prefer the
        // register index and scan the register. The literal register and `valid_to is null`
        // repeat the partial index's own WHERE, which the index requires.
        let index = field_index_name(register, field);
        let columns = RECORD_COLUMNS.replacen(
            "record_version r",
            &format!("record_version r indexed by {index}"),
            1,
        );
        let mut out = Vec::new();
        for chunk in values.chunks(IN_CHUNK) {
            let sql = format!(
                "select {columns} where r.register = '{register}' and r.valid_to is null and {} in ({})",
                field_expr(field).replace("fields", "r.fields"),
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for value in chunk {
                query = if field.ty.is_numeric() {
                    query.bind(value.parse::<f64>().unwrap_or(f64::NAN))
                } else {
                    query.bind(value)
                };
            }
            let rows = query.fetch_all(&self.reader).await.map_err(map_sqlx)?;
            out.extend(decode_all(&rows)?);
        }
        Ok(out)
    }

    async fn children(&self, parent: Uuid, at: At<'_>) -> StoreResult<Vec<Record>> {
        let order = "order by r.register, r.functional_id";
        let (sql, binds) = match at {
            At::Current => (
                format!(
                    "select {RECORD_COLUMNS} where r.parent_id = $1 and r.valid_to is null {order}"
                ),
                vec![parent.to_string()],
            ),
            At::Instant(t) => (
                format!(
                    "select {RECORD_COLUMNS} where r.parent_id = $1 and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2) {order}"
                ),
                vec![parent.to_string(), to_text(t)],
            ),
            At::Label(label) => (
                format!(
                    "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                     where r.parent_id = $1 and l.label = $2 {order}"
                ),
                vec![parent.to_string(), label.to_owned()],
            ),
        };
        self.fetch_records(sql, binds).await
    }

    async fn versions(&self, id: Uuid) -> StoreResult<Vec<Record>> {
        self.fetch_records(
            format!("select {RECORD_COLUMNS} where r.record_id = $1 order by r.version"),
            vec![id.to_string()],
        )
        .await
    }

    async fn change_log(&self, id: Uuid) -> StoreResult<Vec<ChangeLogEntry>> {
        let rows = sqlx::query(
            "select c.version, c.field, c.old_value, c.new_value, c.change_set_id, s.actor, s.created_at \
             from change_log c join change_set s using (change_set_id) where c.record_id = $1 order by c.version, c.field",
        )
        .bind(id.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let json = |name: &str| -> StoreResult<serde_json::Value> {
                    let text: Option<String> = row.try_get(name).map_err(map_sqlx)?;
                    Ok(text
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(serde_json::Value::Null))
                };
                Ok(ChangeLogEntry {
                    record_id: id,
                    version: row.try_get("version").map_err(map_sqlx)?,
                    field: row.try_get("field").map_err(map_sqlx)?,
                    old: json("old_value")?,
                    new: json("new_value")?,
                    change_set_id: parse_uuid(
                        &row.try_get::<String, _>("change_set_id")
                            .map_err(map_sqlx)?,
                    )?,
                    actor: row.try_get("actor").map_err(map_sqlx)?,
                    at: parse_time(&row.try_get::<String, _>("created_at").map_err(map_sqlx)?)?,
                })
            })
            .collect()
    }

    async fn label_current_versions(
        &self,
        label: &str,
        ids: &[Uuid],
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        let mut labelled = 0;
        for id in ids {
            labelled += sqlx::query(
                "insert into version_label (label, record_id, version, labelled_by, labelled_at) \
                 select $1, record_id, version, $2, $3 from record_version where record_id = $4 and valid_to is null \
                 on conflict (label, record_id) do nothing",
            )
            .bind(label)
            .bind(actor)
            .bind(to_text(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(labelled)
    }

    async fn records_page(
        &self,
        register: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "select {RECORD_COLUMNS} where r.register = $1 and r.valid_to is null and r.record_id > $2 \
             order by r.record_id limit {limit}"
        );
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        self.fetch_records(sql, vec![register.to_owned(), after])
            .await
    }

    async fn audit_entries(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        read_audit_entries(&self.reader, AuditChain::Registry, after, limit).await
    }

    async fn audit_head(&self) -> StoreResult<i64> {
        read_audit_head(&self.reader, AuditChain::Registry).await
    }

    async fn append_audit_entry(&self, draft: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        append_audit(&mut tx, draft).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn disclosure_audit_entries(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        read_audit_entries(
            &self.disclosure_reader,
            AuditChain::Disclosures,
            after,
            limit,
        )
        .await
    }

    async fn disclosure_audit_head(&self) -> StoreResult<i64> {
        read_audit_head(&self.disclosure_reader, AuditChain::Disclosures).await
    }

    async fn count_records(&self) -> StoreResult<Vec<(String, i64)>> {
        sqlx::query_as("select register, count(*) from record_version where valid_to is null group by register order by register")
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)
    }

    async fn refresh_statistics(&self) -> StoreResult<()> {
        // A bounded sample per index keeps this cheap on a large table.
        sqlx::query("pragma analysis_limit = 1000")
            .execute(&self.writer)
            .await
            .map_err(map_sqlx)?;
        sqlx::query("pragma optimize = 0x10002")
            .execute(&self.writer)
            .await
            .map_err(map_sqlx)?;
        // Copy the bulk load's WAL into the database file: until then every read looks pages
        // up in the WAL and reads them with pread, instead of through the memory map.
        sqlx::query("pragma wal_checkpoint(truncate)")
            .execute(&self.writer)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    async fn insert_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        sqlx::query("insert into partner (sender_id, client_id, enabled, document, created_at, updated_at) values ($1, $2, $3, $4, $5, $6)")
            .bind(&partner.sender_id)
            .bind(&partner.client_id)
            .bind(partner.enabled)
            .bind(&partner.document)
            .bind(to_text(partner.created_at))
            .bind(to_text(partner.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(super::partner_unique)?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn update_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        let updated = sqlx::query(
            "update partner set enabled = $2, document = $3, updated_at = $4 where sender_id = $1",
        )
        .bind(&partner.sender_id)
        .bind(partner.enabled)
        .bind(&partner.document)
        .bind(to_text(partner.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(true)
    }

    async fn partner(&self, sender_id: &str) -> StoreResult<Option<PartnerRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{PARTNER_COLUMNS} where sender_id = $1"
        )))
        .bind(sender_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_partner).transpose()
    }

    async fn partner_by_client_id(&self, client_id: &str) -> StoreResult<Option<PartnerRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{PARTNER_COLUMNS} where client_id = $1"
        )))
        .bind(client_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_partner).transpose()
    }

    async fn partners(&self) -> StoreResult<Vec<PartnerRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{PARTNER_COLUMNS} order by sender_id"
        )))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_partner).collect()
    }

    async fn remember_message(
        &self,
        sender_id: &str,
        message_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.replay
            .remember(sender_id, message_id, at, forget_before)
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1")
            .execute(&self.reader)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    // ---- Staff API (issue 3) ----

    async fn insert_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "insert into staff_user (user_name, password_hash, roles, disabled, created_at, updated_at) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(roles_json(&user.roles))
        .bind(user.disabled)
        .bind(to_text(user.created_at))
        .bind(to_text(user.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn update_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        let done = sqlx::query(
            "update staff_user set password_hash = $2, roles = $3, disabled = $4, updated_at = $5 where user_name = $1",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(roles_json(&user.roles))
        .bind(user.disabled)
        .bind(to_text(user.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Stale(format!("staff user {}", user.name)));
        }
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn staff_user(&self, name: &str) -> StoreResult<Option<StaffUser>> {
        let row = sqlx::query(
            "select user_name, password_hash, roles, disabled, created_at, updated_at from staff_user where user_name = $1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        let rows = sqlx::query(
            "select user_name, password_hash, roles, disabled, created_at, updated_at from staff_user order by user_name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_user).collect()
    }

    async fn insert_change_request(
        &self,
        request: &ChangeRequest,
        audit: Option<&AuditDraft>,
        change_set: Option<&ChangeSet>,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        if let Some(change_set) = change_set {
            write_change_set(&mut tx, change_set).await?;
        }
        sqlx::query(
            "insert into change_request (change_request_id, maker, source, reason, status, submitted_at, drafts, bases, \
             record_count, decided_by, decided_at, decision_reason, change_set_id) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(request.id.to_string())
        .bind(&request.maker)
        .bind(&request.source)
        .bind(&request.reason)
        .bind(request.status.as_str())
        .bind(to_text(request.submitted_at))
        .bind(to_json(&request.drafts)?)
        .bind(to_json(&request.bases)?)
        .bind(request.record_count)
        .bind(&request.decided_by)
        .bind(request.decided_at.map(to_text))
        .bind(&request.decision_reason)
        .bind(request.change_set_id.map(|id| id.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if let Some(audit) = audit {
            append_audit(&mut tx, audit).await?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn change_request(&self, id: Uuid) -> StoreResult<Option<ChangeRequest>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "select {REQUEST_COLUMNS} from change_request where change_request_id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_request).transpose()
    }

    async fn change_requests(
        &self,
        status: Option<RequestStatus>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<ChangeRequest>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "select {REQUEST_COLUMNS} from change_request where ($1 is null or status = $1) \
             order by change_request_id desc limit $2 offset $3"
        )))
        .bind(status.map(RequestStatus::as_str))
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(decode_request).collect()
    }

    async fn decide_change_request(
        &self,
        decision: &Decision,
        change_set: Option<&ChangeSet>,
        audit: &AuditDraft,
    ) -> StoreResult<()> {
        let id = decision.id.to_string();
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        // Claims the request: only one decision can find it pending.
        let claimed = sqlx::query(
            "update change_request set decided_at = $2 where change_request_id = $1 and status = 'pending'",
        )
        .bind(&id)
        .bind(to_text(decision.at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if claimed.rows_affected() != 1 {
            return Err(StoreError::Stale(format!("change request {id}")));
        }
        if let Some(change_set) = change_set {
            write_change_set(&mut tx, change_set).await?;
        }
        sqlx::query(
            "update change_request set status = $2, decided_by = $3, decision_reason = $4, change_set_id = $5 \
             where change_request_id = $1",
        )
        .bind(&id)
        .bind(decision.status.as_str())
        .bind(&decision.by)
        .bind(&decision.reason)
        .bind(decision.change_set_id.map(|c| c.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn records_query(&self, query: &ListingQuery<'_>) -> StoreResult<Vec<Record>> {
        if !is_valid_name(query.register) {
            return Err(StoreError::Other(format!(
                "invalid register name `{}`",
                query.register
            )));
        }
        // The literal register and `valid_to is null` repeat the partial field indexes' own
        // WHERE, so filters and sorts on indexed fields can use them.
        let mut sql = format!(
            "select {RECORD_COLUMNS} where r.register = '{}' and r.valid_to is null",
            query.register
        );
        let mut query_binds: Vec<Bind> = Vec::new();
        for (field, value) in &query.filters {
            sql.push_str(&format!(
                " and {} = ?",
                field_expr(field).replace("fields", "r.fields")
            ));
            query_binds.push(match field.ty {
                FieldType::Integer | FieldType::Decimal => {
                    Bind::Number(value.parse::<f64>().unwrap_or(f64::NAN))
                }
                // json_extract gives 1 or 0 for a JSON boolean.
                FieldType::Boolean => Bind::Integer(i64::from(value == "true")),
                _ => Bind::Text(value.clone()),
            });
        }
        if let Some(status) = query.status {
            sql.push_str(" and r.status = ?");
            query_binds.push(Bind::Text(status.as_str().to_owned()));
        }
        let direction = if query.descending { "desc" } else { "asc" };
        let order = match query.sort {
            RecordSort::Created => format!("r.record_id {direction}"),
            RecordSort::FunctionalId => format!("r.functional_id {direction}"),
            RecordSort::Field(field) => format!(
                "{} {direction} nulls last, r.record_id {direction}",
                field_expr(field).replace("fields", "r.fields")
            ),
        };
        sql.push_str(&format!(
            " order by {order} limit {} offset {}",
            query.limit, query.offset
        ));
        let mut statement = sqlx::query(AssertSqlSafe(sql));
        for bind in query_binds {
            statement = match bind {
                Bind::Text(text) => statement.bind(text),
                Bind::Number(number) => statement.bind(number),
                Bind::Integer(integer) => statement.bind(integer),
            };
        }
        let rows = statement.fetch_all(&self.reader).await.map_err(map_sqlx)?;
        decode_all(&rows)
    }

    async fn sync_query_indexes(&self, indexes: &[(String, FieldRef)]) -> StoreResult<()> {
        let mut wanted = BTreeSet::new();
        for (register, field) in indexes {
            let (name, sql) = dci::query_index(register, field).ok_or_else(|| {
                StoreError::Other(format!("no index for {register}.{}", field.name()))
            })?;
            sqlx::query(AssertSqlSafe(sql))
                .execute(&self.writer)
                .await
                .map_err(map_sqlx)?;
            wanted.insert(name);
        }
        let existing: Vec<String> = sqlx::query_scalar(
            "select name from sqlite_master where type = 'index' and name like 'dci\\_ix\\_\\_%' escape '\\'",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(map_sqlx)?;
        for stale in existing.into_iter().filter(|n| !wanted.contains(n)) {
            sqlx::query(AssertSqlSafe(format!("drop index if exists {stale}")))
                .execute(&self.writer)
                .await
                .map_err(map_sqlx)?;
        }
        Ok(())
    }

    async fn query_records(&self, query: &RecordQuery) -> StoreResult<RecordPage> {
        let (page, count) = dci::compile(query)?;
        let rows = page
            .query()
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        let records = decode_all(&rows)?;
        let mut children = Vec::new();
        if !query.child_registers.is_empty() {
            for (row, record) in rows.iter().zip(&records) {
                let text: Option<String> = row.try_get("children").map_err(map_sqlx)?;
                if let Some(text) = text {
                    children.extend(super::decode_children(&text, record)?);
                }
            }
        }
        let total = if !query.count {
            None
        } else if let Some(row) = rows.first() {
            // Every row of a counted page carries the number of all matches.
            let total: i64 = row.try_get("total").map_err(map_sqlx)?;
            Some(u64::try_from(total).unwrap_or(0))
        } else if query.offset == 0 {
            Some(0)
        } else {
            // A page past the end has no row to carry the total.
            let row = count
                .query()
                .fetch_one(&self.reader)
                .await
                .map_err(map_sqlx)?;
            let total: i64 = row.try_get(0).map_err(map_sqlx)?;
            Some(u64::try_from(total).unwrap_or(0))
        };
        Ok(RecordPage {
            records,
            total,
            children,
        })
    }

    async fn children_of(
        &self,
        parents: &[Uuid],
        registers: &[String],
    ) -> StoreResult<Vec<Record>> {
        let mut out = Vec::new();
        if registers.is_empty() {
            return Ok(out);
        }
        for chunk in parents.chunks(IN_CHUNK) {
            let sql = format!(
                "select {RECORD_COLUMNS} where r.parent_id in ({}) and r.register in ({}) and r.valid_to is null order by r.register, r.functional_id",
                placeholders(chunk.len()),
                placeholders(registers.len())
            );
            let binds = chunk
                .iter()
                .map(Uuid::to_string)
                .chain(registers.iter().cloned())
                .collect();
            out.extend(self.fetch_records(sql, binds).await?);
        }
        Ok(out)
    }

    async fn insert_dci_job(&self, job: &DciJobRow, reference_ids: &[String]) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "insert into dci_job (job_id, sender_id, kind, transaction_id, correlation_id, request_message_id, request, \
             callback_url, callback_message_id, status, result, delivery, attempts, next_attempt_at, deadline, last_error, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(job.job_id.to_string())
        .bind(&job.sender_id)
        .bind(&job.kind)
        .bind(&job.transaction_id)
        .bind(&job.correlation_id)
        .bind(&job.request_message_id)
        .bind(&job.request)
        .bind(&job.callback_url)
        .bind(&job.callback_message_id)
        .bind(&job.status)
        .bind(&job.result)
        .bind(&job.delivery)
        .bind(job.attempts)
        .bind(to_text(job.next_attempt_at))
        .bind(to_text(job.deadline))
        .bind(&job.last_error)
        .bind(to_text(job.created_at))
        .bind(to_text(job.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        for reference_id in reference_ids {
            sqlx::query(
                "insert into dci_job_reference (job_id, sender_id, reference_id) values ($1, $2, $3) on conflict do nothing",
            )
            .bind(job.job_id.to_string())
            .bind(&job.sender_id)
            .bind(reference_id)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn claim_dci_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>> {
        // One writer connection: the select and the update cannot interleave with another
        // claim, so no job is claimed twice.
        let now = to_text(now);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "update dci_job set leased_by = $1, lease_until = $2, updated_at = $3, \
             status = case when status = 'rcvd' then 'pdng' else status end \
             where job_id in (select job_id from dci_job where delivery = 'pending' and next_attempt_at <= $3 \
             and (lease_until is null or lease_until <= $3) order by next_attempt_at limit $4) \
             returning {}",
            dci::JOB_COLUMNS
        )))
        .bind(worker)
        .bind(to_text(lease_until))
        .bind(&now)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(dci::decode_job).collect()
    }

    async fn update_dci_job(&self, worker: &str, update: &DciJobUpdate) -> StoreResult<bool> {
        let release = if update.release_lease {
            ", leased_by = null, lease_until = null"
        } else {
            ""
        };
        let done = sqlx::query(AssertSqlSafe(format!(
            "update dci_job set status = $1, result = $2, delivery = $3, attempts = $4, next_attempt_at = $5, \
             last_error = $6, updated_at = $7{release} where job_id = $8 and leased_by = $9"
        )))
        .bind(&update.status)
        .bind(&update.result)
        .bind(&update.delivery)
        .bind(update.attempts)
        .bind(to_text(update.next_attempt_at))
        .bind(&update.last_error)
        .bind(to_text(update.updated_at))
        .bind(update.job_id.to_string())
        .bind(worker)
        .execute(&self.writer)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_dci_jobs(
        &self,
        sender_id: &str,
        kind: &str,
        lookup: &DciJobLookup,
    ) -> StoreResult<Vec<DciJobRow>> {
        let sql = dci::lookup_sql(sender_id, kind, lookup);
        let rows = sql
            .query()
            .fetch_all(&self.reader)
            .await
            .map_err(map_sqlx)?;
        rows.iter().map(dci::decode_job).collect()
    }

    async fn list_dci_jobs(
        &self,
        delivery: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "select {} from dci_job where ($1 is null or delivery = $1) order by created_at desc, job_id limit $2",
            dci::JOB_COLUMNS
        )))
        .bind(delivery)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_sqlx)?;
        rows.iter().map(dci::decode_job).collect()
    }

    async fn insert_disclosure(&self, disclosure: crate::consent::Disclosure) -> StoreResult<()> {
        self.disclosures.write(disclosure.into_logged()).await
    }

    async fn disclosures(
        &self,
        query: &crate::consent::DisclosureQuery,
    ) -> StoreResult<Vec<crate::consent::Disclosure>> {
        consent::disclosures(&self.disclosure_reader, query).await
    }

    async fn consent_policy_digests(
        &self,
    ) -> StoreResult<std::collections::BTreeMap<String, String>> {
        consent::consent_policy_digests(&self.reader).await
    }

    async fn replace_consent_policy_digests(
        &self,
        digests: &std::collections::BTreeMap<String, String>,
        audit: &AuditDraft,
    ) -> StoreResult<()> {
        consent::replace_consent_policy_digests(&self.writer, digests, audit).await
    }
}

/// Writes a change set inside a transaction: the change set row, closes the replaced versions
/// (a version no longer current is a conflict), inserts the new versions and change log, and
/// chains its audit entry.
async fn write_change_set(conn: &mut SqliteConnection, change_set: &ChangeSet) -> StoreResult<()> {
    let at = to_text(change_set.at());
    let change_set_id = change_set.id().to_string();
    sqlx::query("insert into change_set (change_set_id, actor, source, reason, created_at) values ($1, $2, $3, $4, $5)")
        .bind(&change_set_id)
        .bind(change_set.actor())
        .bind(change_set.source())
        .bind(change_set.reason())
        .bind(&at)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;

    // Close the versions being replaced; a version that is no longer current means someone
    // else changed the record since it was read.
    for write in change_set.writes() {
        if let Some(previous) = write.previous_version() {
            let closed = sqlx::query(
                "update record_version set valid_to = $1 where record_id = $2 and version = $3 and valid_to is null",
            )
            .bind(&at)
            .bind(write.envelope().id.to_string())
            .bind(previous)
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx)?;
            if closed.rows_affected() != 1 {
                return Err(StoreError::Conflict {
                    functional_id: write.envelope().functional_id.clone(),
                    expected: previous,
                });
            }
        }
    }

    for chunk in change_set.writes().chunks(INSERT_CHUNK) {
        let rows: Vec<&str> = (0..chunk.len())
            .map(|_| "(?, ?, ?, ?, ?, ?, jsonb(?), ?, ?)")
            .collect();
        let sql = format!(
            "insert into record_version (record_id, version, register, functional_id, parent_id, status, fields, change_set_id, valid_from) values {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for write in chunk {
            let r = &write.envelope();
            query = query
                .bind(r.id.to_string())
                .bind(r.version)
                .bind(&r.register)
                .bind(&r.functional_id)
                .bind(r.parent_id.map(|p| p.to_string()))
                .bind(r.status.as_str())
                .bind(write.fields_json())
                .bind(&change_set_id)
                .bind(&at);
        }
        query.execute(&mut *conn).await.map_err(map_sqlx)?;
    }

    let changes: Vec<_> = change_set
        .writes()
        .iter()
        .flat_map(|w| w.changes().iter().map(move |c| (w, c)))
        .collect();
    for chunk in changes.chunks(INSERT_CHUNK) {
        let rows: Vec<&str> = (0..chunk.len()).map(|_| "(?, ?, ?, ?, ?, ?)").collect();
        let sql = format!(
            "insert into change_log (record_id, version, field, old_value, new_value, change_set_id) values {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (write, change) in chunk {
            let json = |v: &serde_json::Value| (!v.is_null()).then(|| v.to_string());
            query = query
                .bind(write.envelope().id.to_string())
                .bind(write.envelope().version)
                .bind(&change.field)
                .bind(json(&change.old))
                .bind(json(&change.new))
                .bind(&change_set_id);
        }
        query.execute(&mut *conn).await.map_err(map_sqlx)?;
    }

    append_audit(conn, change_set.audit_draft()).await
}

/// Chains one audit entry after the head, inside a transaction.
async fn append_audit(conn: &mut SqliteConnection, draft: &AuditDraft) -> StoreResult<()> {
    append_audits(conn, AuditChain::Registry, &[draft]).await
}

/// Chains `drafts`, in order, onto `chain`: the head is read once and written once, and the
/// entries go in one statement (the group commit of the disclosure log writes many).
async fn append_audits(
    conn: &mut SqliteConnection,
    chain: AuditChain,
    drafts: &[&AuditDraft],
) -> StoreResult<()> {
    let (log, head) = chain.tables();
    let (mut seq, mut hash): (i64, String) = sqlx::query_as(AssertSqlSafe(format!(
        "select seq, hash from {head} where id = 1"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    let mut rows = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let entry = draft.chain(seq, &hash);
        rows.push(serde_json::json!([
            entry.seq,
            to_text(entry.at),
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
            entry.prev_hash,
            entry.hash,
        ]));
        (seq, hash) = (entry.seq, entry.hash);
    }
    sqlx::query(AssertSqlSafe(format!(
        "insert into {log} (seq, at, actor, action, subject, detail, prev_hash, hash) \
         select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7 \
         from json_each($1) order by key"
    )))
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    sqlx::query(AssertSqlSafe(format!(
        "update {head} set seq = $1, hash = $2 where id = 1"
    )))
    .bind(seq)
    .bind(&hash)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

async fn read_audit_entries(
    pool: &SqlitePool,
    chain: AuditChain,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let (log, _) = chain.tables();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "select seq, at, actor, action, subject, detail, prev_hash, hash from {log} where seq > $1 order by seq limit $2"
    )))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let text = |name: &str| row.try_get::<String, _>(name).map_err(map_sqlx);
            Ok(AuditEntry {
                seq: row.try_get("seq").map_err(map_sqlx)?,
                at: parse_time(&text("at")?)?,
                actor: text("actor")?,
                action: text("action")?,
                subject: text("subject")?,
                detail: text("detail")?,
                prev_hash: text("prev_hash")?,
                hash: text("hash")?,
            })
        })
        .collect()
}

async fn read_audit_head(pool: &SqlitePool, chain: AuditChain) -> StoreResult<i64> {
    let (_, head) = chain.tables();
    let seq: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select seq from {head} where id = 1"
    )))
    .fetch_optional(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(seq.unwrap_or(0))
}
