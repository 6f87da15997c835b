//! Storage: the [`Store`] trait of use-case methods, and its two implementations, embedded
//! SQLite (the default) and PostgreSQL. Each implementation owns its migrations and runs every
//! multi-step method inside one transaction.

mod batch;
mod postgres;
mod replay;
mod sqlite;

use crate::auth::StaffUser;
use crate::registry::audit::{AuditDraft, AuditEntry};
use crate::registry::change_request::{ChangeRequest, Decision, RequestStatus};
use crate::registry::change_set::{ChangeLogEntry, ChangeSet};
use crate::registry::query::{FieldRef, RecordPage, RecordQuery};
use crate::registry::record::{Record, RecordStatus};
use crate::registry::register::{FieldDef, Registers};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Which version of a record to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At<'a> {
    /// The current version.
    Current,
    /// The version current at that instant.
    Instant(DateTime<Utc>),
    /// The version carrying that label.
    Label(&'a str),
}

/// Why a store operation failed. Database detail stays in the logs; these say what the caller
/// can act on.
/// A current record named by its functional id, without its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    pub functional_id: String,
    pub id: Uuid,
    pub register: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused a value (`field` is `functional_id` for the record id itself).
    #[error("{register}.{field}: the value is already held by another record")]
    Unique { register: String, field: String },
    /// A record was changed by someone else after the version the write was based on.
    #[error("record {functional_id} was changed since version {expected}")]
    Conflict {
        functional_id: String,
        expected: i64,
    },
    /// A unique index cannot be created because existing records share a value.
    #[error("cannot create the unique index on {register}.{field}: existing records share a value")]
    DuplicateValues { register: String, field: String },
    /// A row was not in the state the operation expected (e.g. a change request decided by
    /// someone else meanwhile).
    #[error("{0} is no longer in the expected state")]
    Stale(String),
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// The registry's storage, by use case. Every method is atomic.
#[async_trait]
pub trait Store: Send + Sync {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Creates (and drops) the per-field indexes so they match the register definitions:
    /// a database index for every `indexed` field and a unique one for every `unique` field.
    async fn sync_field_indexes(&self, registers: &Registers) -> StoreResult<()>;

    /// Writes a change set: new versions, closes the versions they replace, the change log and
    /// one chained audit entry, in one transaction. Nothing is written if any part fails.
    async fn apply_change_set(&self, change_set: &ChangeSet) -> StoreResult<()>;

    /// A record by functional id.
    async fn record_by_functional_id(
        &self,
        functional_id: &str,
        at: At<'_>,
    ) -> StoreResult<Option<Record>>;

    /// A record by internal id.
    async fn record_by_id(&self, id: Uuid, at: At<'_>) -> StoreResult<Option<Record>>;

    /// Current versions of the records with these functional ids (missing ids are skipped).
    async fn records_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<Record>>;

    /// Who the current records with these functional ids are (missing ids are skipped):
    /// enough to link children to them, without reading their fields.
    async fn record_refs_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<RecordRef>>;

    /// Current records of `register` whose `field` (an indexed field) equals one of `values`
    /// (compared as text). Uses the field's index.
    async fn records_by_field(
        &self,
        register: &str,
        field: &FieldDef,
        values: &[String],
    ) -> StoreResult<Vec<Record>>;

    /// Records whose parent is `parent` (household members, supporting rows) as of `at`; with
    /// a label, the versions of them that carry that label.
    async fn children(&self, parent: Uuid, at: At<'_>) -> StoreResult<Vec<Record>>;

    /// Every version of a record, oldest first.
    async fn versions(&self, id: Uuid) -> StoreResult<Vec<Record>>;

    /// The record's field-level change log, oldest first.
    async fn change_log(&self, id: Uuid) -> StoreResult<Vec<ChangeLogEntry>>;

    /// Labels the current version of each record (e.g. `survey-2026-r1`). A label, once set on
    /// a record, never moves: records that already carry it are left as they are. Returns how
    /// many labels were set.
    async fn label_current_versions(
        &self,
        label: &str,
        ids: &[Uuid],
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Current records of a register in creation order (record ids are time-ordered UUIDv7),
    /// after the record `after`, at most `limit`.
    async fn records_page(
        &self,
        register: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Record>>;

    /// Audit entries with `seq > after`, in order, at most `limit`.
    async fn audit_entries(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    /// The sequence number of the last audit entry written (0 if none), as the store's head
    /// record keeps it.
    async fn audit_head(&self) -> StoreResult<i64>;

    /// Appends one entry to the registry's audit chain on its own (an anchor of the disclosure
    /// chain).
    async fn append_audit_entry(&self, draft: &AuditDraft) -> StoreResult<()>;

    /// Entries of the disclosure chain with `seq > after`, in order, at most `limit`
    /// (`registry::audit`: one per disclosure, in the disclosure log's own storage).
    async fn disclosure_audit_entries(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;

    /// The sequence number of the disclosure chain's last entry (0 if none).
    async fn disclosure_audit_head(&self) -> StoreResult<i64>;

    /// Number of current records in each register.
    async fn count_records(&self) -> StoreResult<Vec<(String, i64)>>;

    /// Refreshes the query planner's statistics (after bulk loads, so lookups keep using
    /// their indexes as a table grows from empty).
    async fn refresh_statistics(&self) -> StoreResult<()>;

    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;

    // Gateway: the partner registry and replay protection.

    /// Adds a partner and its audit entry in one transaction. A taken `sender_id` or
    /// `client_id` is [`StoreError::Unique`] naming it.
    async fn insert_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<()>;

    /// Replaces a partner's `enabled` and `document` and appends its audit entry, in one
    /// transaction. `Ok(false)` when there is no such partner (nothing written).
    async fn update_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<bool>;

    async fn partner(&self, sender_id: &str) -> StoreResult<Option<PartnerRow>>;

    async fn partner_by_client_id(&self, client_id: &str) -> StoreResult<Option<PartnerRow>>;

    /// Every partner, by sender id.
    async fn partners(&self) -> StoreResult<Vec<PartnerRow>>;

    /// Records that `sender_id` sent `message_id` (at `at`). `Ok(false)` if it was already
    /// recorded: a replay. Ids recorded before `forget_before` are forgotten first.
    async fn remember_message(
        &self,
        sender_id: &str,
        message_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // ---- Staff API (issue 3): staff users, change requests, record listings ----

    /// Adds a staff user and its audit entry in one transaction; `Unique` if the name is taken.
    async fn insert_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()>;

    /// Replaces a staff user's roles, hash and state, with its audit entry, in one transaction.
    async fn update_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()>;

    /// A staff user by name.
    async fn staff_user(&self, name: &str) -> StoreResult<Option<StaffUser>>;

    /// Every staff user, by name.
    async fn staff_users(&self) -> StoreResult<Vec<StaffUser>>;

    /// Records a change request, in one transaction with its audit entry (a pending request)
    /// or with the change set that applies it (an auto-approved one; the change set goes
    /// first, with its own audit entry).
    async fn insert_change_request(
        &self,
        request: &ChangeRequest,
        audit: Option<&AuditDraft>,
        change_set: Option<&ChangeSet>,
    ) -> StoreResult<()>;

    /// A change request by id.
    async fn change_request(&self, id: Uuid) -> StoreResult<Option<ChangeRequest>>;

    /// Change requests, newest first, optionally of one status.
    async fn change_requests(
        &self,
        status: Option<RequestStatus>,
        offset: u64,
        limit: u32,
    ) -> StoreResult<Vec<ChangeRequest>>;

    /// Decides a pending change request: its new state, the change set that applies it (for an
    /// approval) and the decision's audit entry, in one transaction. `Stale` if the request is
    /// no longer pending; `Conflict` if a record changed under the change set.
    async fn decide_change_request(
        &self,
        decision: &Decision,
        change_set: Option<&ChangeSet>,
        audit: &AuditDraft,
    ) -> StoreResult<()>;

    /// Current records of a register matching every filter (indexed fields), sorted and paged.
    async fn records_query(&self, query: &ListingQuery<'_>) -> StoreResult<Vec<Record>>;

    // DCI gateway: searches compiled from partner queries, and async jobs with their
    // callback deliveries.

    /// Creates (and drops) the indexes that queries on list elements need
    /// ([`FieldRef::element`]): one per `(register, field)` given.
    async fn sync_query_indexes(&self, indexes: &[(String, FieldRef)]) -> StoreResult<()>;

    /// One page of the records a compiled query matches, and the number of all matches when
    /// asked. One parameterised statement over the field indexes (two with the count).
    async fn query_records(&self, query: &RecordQuery) -> StoreResult<RecordPage>;

    /// Current children of each of `parents` (members and supporting rows) that belong to
    /// `registers`, ordered by register and functional id.
    async fn children_of(&self, parents: &[Uuid], registers: &[String])
    -> StoreResult<Vec<Record>>;

    /// Stores a new job (with its reference ids) before the partner is acknowledged.
    async fn insert_dci_job(&self, job: &DciJobRow, reference_ids: &[String]) -> StoreResult<()>;

    /// Claims up to `limit` jobs whose delivery is pending and due at `now` and that no live
    /// lease holds: they are leased to `worker` until `lease_until` and a job still `rcvd`
    /// becomes `pdng`. Several processes may claim at once; each job goes to one of them.
    async fn claim_dci_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>>;

    /// Writes a claimed job's progress, only while `worker` holds its lease. `Ok(false)` when
    /// it does not (the lease expired and another worker took the job over).
    async fn update_dci_job(&self, worker: &str, update: &DciJobUpdate) -> StoreResult<bool>;

    /// `sender_id`'s jobs of `kind` found by transaction id, correlation id or reference ids,
    /// oldest first.
    async fn find_dci_jobs(
        &self,
        sender_id: &str,
        kind: &str,
        lookup: &DciJobLookup,
    ) -> StoreResult<Vec<DciJobRow>>;

    /// Jobs for operators, newest first: all, or those whose delivery is in `delivery`
    /// (`pending`, `delivered`, `failed`).
    async fn list_dci_jobs(
        &self,
        delivery: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>>;

    // Consent (issue 6): the disclosure log and the audited consent policies.

    /// Appends a disclosure and the disclosure-chain entry covering it, in one transaction.
    async fn insert_disclosure(&self, disclosure: crate::consent::Disclosure) -> StoreResult<()>;

    /// Disclosures matching `query`, newest first.
    async fn disclosures(
        &self,
        query: &crate::consent::DisclosureQuery,
    ) -> StoreResult<Vec<crate::consent::Disclosure>>;

    /// The consent policies (name → digest) as last audited.
    async fn consent_policy_digests(
        &self,
    ) -> StoreResult<std::collections::BTreeMap<String, String>>;

    /// Replaces the audited consent policies, with the audit entry naming the change, in one
    /// transaction.
    async fn replace_consent_policy_digests(
        &self,
        digests: &std::collections::BTreeMap<String, String>,
        audit: &AuditDraft,
    ) -> StoreResult<()>;
}

/// A DCI async job: the request to answer, its answer once computed, and the delivery of
/// that answer to the partner's callback URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DciJobRow {
    pub job_id: Uuid,
    pub sender_id: String,
    /// `search` or `txn-status`.
    pub kind: String,
    pub transaction_id: String,
    pub correlation_id: String,
    pub request_message_id: String,
    /// `{"header", "message"}` as received and opened (decrypted).
    pub request: String,
    pub callback_url: String,
    /// The callback's `message_id`: the same on every delivery attempt.
    pub callback_message_id: String,
    /// DCI RequestStatus: `rcvd`, `pdng`, `succ`, `rjct`.
    pub status: String,
    /// The callback `message` (unsigned, unencrypted) once computed.
    pub result: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub delivery: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// After this, a failed delivery is not retried: the job is marked `failed`.
    pub deadline: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Progress of a claimed job. Once the lease is released the job is claimable again at
/// `next_attempt_at` while its delivery is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DciJobUpdate {
    pub job_id: Uuid,
    pub status: String,
    pub result: Option<String>,
    pub delivery: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Give the lease up (the job is done for now); `false` keeps working on it.
    pub release_lease: bool,
}

/// How a transaction-status request names the jobs it asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DciJobLookup {
    TransactionId(String),
    CorrelationId(String),
    ReferenceIds(Vec<String>),
}

/// A partner as stored: lookup columns beside its JSON definition (see `crate::partners`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerRow {
    pub sender_id: String,
    pub client_id: String,
    pub enabled: bool,
    pub document: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A listing of current records for [`Store::records_query`] (the staff API's listings).
#[derive(Debug, Clone)]
pub struct ListingQuery<'a> {
    pub register: &'a str,
    /// Indexed fields and the text form of the value each must equal.
    pub filters: Vec<(&'a FieldDef, String)>,
    pub status: Option<RecordStatus>,
    pub sort: RecordSort<'a>,
    pub descending: bool,
    pub offset: u64,
    pub limit: u32,
}

/// Sort key of a [`ListingQuery`]; ties are broken by record id (creation order).
#[derive(Debug, Clone, Copy)]
pub enum RecordSort<'a> {
    Created,
    FunctionalId,
    /// An indexed field; records without it come last.
    Field(&'a FieldDef),
}

/// A child record as the page queries return it, one JSON object per child (its parent is
/// the record of the row it came with).
#[derive(serde::Deserialize)]
struct ChildJson {
    record_id: String,
    version: i64,
    register: String,
    functional_id: String,
    parent_id: Option<String>,
    status: String,
    fields: crate::registry::record::Fields,
    change_set_id: String,
    valid_from: String,
}

/// `text` as an SQL string literal (standard quoting, both backends).
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Register names as an SQL list of literals, `'a', 'b'` (names already checked by
/// `RecordQuery::names_are_valid`).
fn register_list(registers: &[String]) -> String {
    registers
        .iter()
        .map(|register| sql_literal(register))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes the JSON array of `parent`'s current children.
fn decode_children(text: &str, parent: &Record) -> StoreResult<Vec<Record>> {
    let bad = |what: &str| StoreError::Other(format!("bad child record: {what}"));
    let children: Vec<ChildJson> = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    children
        .into_iter()
        .map(|c| {
            Ok(Record {
                id: Uuid::parse_str(&c.record_id).map_err(|_| bad("record_id"))?,
                register: c.register,
                functional_id: c.functional_id,
                parent_id: c
                    .parent_id
                    .as_deref()
                    .map(Uuid::parse_str)
                    .transpose()
                    .map_err(|_| bad("parent_id"))?,
                parent_functional_id: Some(parent.functional_id.clone()),
                status: crate::registry::record::RecordStatus::parse(&c.status)
                    .ok_or_else(|| bad("status"))?,
                version: c.version,
                fields: c.fields,
                change_set_id: Uuid::parse_str(&c.change_set_id)
                    .map_err(|_| bad("change_set_id"))?,
                valid_from: DateTime::parse_from_rfc3339(&c.valid_from)
                    .map_err(|_| bad("valid_from"))?
                    .with_timezone(&Utc),
                valid_to: None,
            })
        })
        .collect()
}

/// Opens the store for `url` (`sqlite://…` or `postgres://…`), applying migrations.
pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, max_connections).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::open(url, max_connections).await?))
    } else {
        anyhow::bail!("unsupported database URL scheme (use sqlite:// or postgres://)")
    }
}

/// The URL of another database on the same PostgreSQL server: `url` with its database name
/// replaced (tools and tests create and drop databases beside the one they were given).
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base
        .get(scheme_end..)
        .and_then(|rest| rest.find('/'))
        .map_or(base.len(), |i| scheme_end + i);
    let host = base.get(..path_start).unwrap_or(base);
    match query {
        Some(query) => format!("{host}/{name}?{query}"),
        None => format!("{host}/{name}"),
    }
}

/// Index names carry the register and field so a unique violation can name the field.
fn field_index_name(register: &str, field: &FieldDef) -> String {
    let kind = if field.unique { "uq" } else { "ix" };
    format!("rv_{kind}__{register}__{}", field.name)
}

/// Reads `(register, field)` back from an index name made by [`field_index_name`].
fn parse_field_index_name(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix("rv_uq__")
        .or_else(|| name.strip_prefix("rv_ix__"))?;
    let (register, field) = rest.split_once("__")?;
    Some((register.to_owned(), field.to_owned()))
}

/// Maps a sqlx error to a [`StoreError`], naming the field for unique-index violations.
fn map_sqlx(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let message = db.message().to_owned();
            let name = db.constraint().map(str::to_owned).unwrap_or_default();
            if let Some((register, field)) =
                parse_field_index_name(&name).or_else(|| parse_sqlite_unique_message(&message))
            {
                return StoreError::Unique { register, field };
            }
            StoreError::Unique {
                register: "record".to_owned(),
                field: "functional_id".to_owned(),
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Other(error.to_string()),
    }
}

/// A unique violation on the partner table, named by its column (SQLite says
/// `partner.client_id` in its message, PostgreSQL `partner_client_id_key` as the constraint).
fn partner_unique(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let client_id = db.message().contains("client_id")
                || db.constraint().is_some_and(|c| c.contains("client_id"));
            StoreError::Unique {
                register: "partner".to_owned(),
                field: if client_id { "client_id" } else { "sender_id" }.to_owned(),
            }
        }
        _ => map_sqlx(error),
    }
}

/// SQLite names an expression index in its message: `UNIQUE constraint failed: index 'name'`.
fn parse_sqlite_unique_message(message: &str) -> Option<(String, String)> {
    let start = message.find("index '")? + "index '".len();
    let name = message.get(start..)?.split('\'').next()?;
    parse_field_index_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_in_postgres_urls() {
        assert_eq!(
            url_with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            url_with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(url_with_database("postgres://u@h", "x"), "postgres://u@h/x");
        // Through the server's Unix socket (README: PostgreSQL on the same host).
        assert_eq!(
            url_with_database(
                "postgres://u@localhost/postgres?host=/var/run/postgresql",
                "x"
            ),
            "postgres://u@localhost/x?host=/var/run/postgresql"
        );
    }

    #[test]
    fn index_names_round_trip_to_register_and_field() {
        let field = FieldDef {
            name: "foundational_id".into(),
            ty: crate::registry::register::FieldType::String,
            description: String::new(),
            values: vec![],
            items: None,
            required: false,
            unique: true,
            indexed: true,
            pii: true,
            min: None,
            max: None,
        };
        let name = field_index_name("individual", &field);
        assert_eq!(
            parse_field_index_name(&name),
            Some(("individual".into(), "foundational_id".into()))
        );
        let message = format!("UNIQUE constraint failed: index '{name}'");
        assert_eq!(
            parse_sqlite_unique_message(&message),
            Some(("individual".into(), "foundational_id".into()))
        );
    }
}
