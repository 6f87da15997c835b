//! The PostgreSQL store, for production and for several nsr processes sharing one database.
//! Bulk writes bind whole columns as arrays (`unnest`), one statement per table per change set.

mod consent;
mod dci;
mod search_columns;

use super::replay::{RecordIds, Recorder, SeenId};
use super::{
    At, Backend, DciJobLookup, DciJobRow, DciJobUpdate, ListingQuery, PartnerRow, RecordRef,
    RecordSort, Store, StoreError, StoreResult, map_sqlx,
};
use crate::auth::{Role, StaffUser};
use crate::registry::audit::{AuditChain, AuditDraft, AuditEntry};
use crate::registry::change_request::{ChangeRequest, Decision, RequestStatus};
use crate::registry::change_set::{ChangeLogEntry, ChangeSet, RecordWrite};
use crate::registry::query::{FieldRef, RecordPage, RecordQuery};
use crate::registry::record::{Fields, Record, RecordStatus};
use crate::registry::register::{FieldDef, FieldType, Registers, is_valid_name};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const RECORD_COLUMNS: &str = "r.record_id, r.version, r.register, r.functional_id, r.parent_id, \
    p.functional_id as parent_functional_id, r.status, r.fields, r.change_set_id, r.valid_from, r.valid_to \
    from record_version r left join record_version p on p.record_id = r.parent_id and p.valid_to is null";

/// The record id behind functional id `$1` (functional ids never move between records).
const CURRENT_ID_BY_FUNCTIONAL_ID: &str =
    "select record_id from record_version where functional_id = $1 and valid_to is null";

const REQUEST_COLUMNS: &str = "change_request_id, maker, source, reason, status, submitted_at, \
    drafts, bases, record_count, decided_by, decided_at, decision_reason, change_set_id";

fn decode_user(row: &PgRow) -> StoreResult<StaffUser> {
    let Json(roles): Json<Vec<Role>> = row.try_get("roles").map_err(map_sqlx)?;
    Ok(StaffUser {
        name: row.try_get("user_name").map_err(map_sqlx)?,
        password_hash: row.try_get("password_hash").map_err(map_sqlx)?,
        roles,
        disabled: row.try_get("disabled").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
    })
}

fn decode_request(row: &PgRow) -> StoreResult<ChangeRequest> {
    let status: String = row.try_get("status").map_err(map_sqlx)?;
    let Json(drafts) = row.try_get("drafts").map_err(map_sqlx)?;
    let Json(bases) = row.try_get("bases").map_err(map_sqlx)?;
    Ok(ChangeRequest {
        id: row.try_get("change_request_id").map_err(map_sqlx)?,
        maker: row.try_get("maker").map_err(map_sqlx)?,
        source: row.try_get("source").map_err(map_sqlx)?,
        reason: row.try_get("reason").map_err(map_sqlx)?,
        status: RequestStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad stored status `{status}`")))?,
        submitted_at: row.try_get("submitted_at").map_err(map_sqlx)?,
        drafts,
        bases,
        record_count: row.try_get("record_count").map_err(map_sqlx)?,
        decided_by: row.try_get("decided_by").map_err(map_sqlx)?,
        decided_at: row.try_get("decided_at").map_err(map_sqlx)?,
        decision_reason: row.try_get("decision_reason").map_err(map_sqlx)?,
        change_set_id: row.try_get("change_set_id").map_err(map_sqlx)?,
    })
}

/// PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// For [`RecordQuery::by_identifier`] queries: generic plans (see `open`).
    lookups: PgPool,
    /// Appends disclosures, batching concurrent ones into one transaction.
    disclosures: super::batch::Batcher<crate::consent::Logged, ()>,
    /// Records partners' message ids, batching concurrent ones into one statement.
    replay: Recorder,
    /// The search columns made by the last `sync_field_indexes` (none before it: queries then
    /// read `fields`, as correct and without the field indexes).
    columns: std::sync::Arc<std::sync::RwLock<std::sync::Arc<search_columns::SearchColumns>>>,
}

/// Partners' message ids, recorded by the group-commit task (`super::replay`): one durable
/// commit for all the ids that arrived while the previous one was being written.
struct ReplayConnections(PgPool);

#[async_trait]
impl RecordIds for ReplayConnections {
    async fn record(
        &self,
        ids: &[SeenId],
        forget_before: DateTime<Utc>,
    ) -> StoreResult<std::collections::HashSet<(String, String)>> {
        let senders: Vec<&str> = ids.iter().map(|(s, _, _)| s.as_str()).collect();
        let messages: Vec<&str> = ids.iter().map(|(_, m, _)| m.as_str()).collect();
        let times: Vec<DateTime<Utc>> = ids.iter().map(|(_, _, t)| *t).collect();
        // Two replicas racing on one id: the primary key lets exactly one of them change a row.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "insert into seen_message (sender_id, message_id, seen_at) \
             select * from unnest($1::text[], $2::text[], $3::timestamptz[]) \
             on conflict (sender_id, message_id) do update set seen_at = excluded.seen_at \
             where seen_message.seen_at < $4 returning sender_id, message_id",
        )
        .bind(&senders)
        .bind(&messages)
        .bind(&times)
        .bind(forget_before)
        .fetch_all(&self.0)
        .await
        .map_err(map_sqlx)?;
        Ok(rows.into_iter().collect())
    }

    async fn purge(&self, before: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("delete from seen_message where seen_at < $1")
            .bind(before)
            .execute(&self.0)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }
}

fn decode_record(row: &PgRow) -> StoreResult<Record> {
    let status: String = row.try_get("status").map_err(map_sqlx)?;
    let Json(fields): Json<Fields> = row.try_get("fields").map_err(map_sqlx)?;
    Ok(Record {
        id: row.try_get("record_id").map_err(map_sqlx)?,
        register: row.try_get("register").map_err(map_sqlx)?,
        functional_id: row.try_get("functional_id").map_err(map_sqlx)?,
        parent_id: row.try_get("parent_id").map_err(map_sqlx)?,
        parent_functional_id: row.try_get("parent_functional_id").map_err(map_sqlx)?,
        status: RecordStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad stored status `{status}`")))?,
        version: row.try_get("version").map_err(map_sqlx)?,
        fields,
        change_set_id: row.try_get("change_set_id").map_err(map_sqlx)?,
        valid_from: row.try_get("valid_from").map_err(map_sqlx)?,
        valid_to: row.try_get("valid_to").map_err(map_sqlx)?,
    })
}

fn decode_all(rows: &[PgRow]) -> StoreResult<Vec<Record>> {
    rows.iter().map(decode_record).collect()
}

/// Partner rows; the JSON definition is read back as text.
const PARTNER_COLUMNS: &str = "select sender_id, client_id, enabled, document::text as document, created_at, updated_at from partner";

fn decode_partner(row: &PgRow) -> StoreResult<PartnerRow> {
    Ok(PartnerRow {
        sender_id: row.try_get("sender_id").map_err(map_sqlx)?,
        client_id: row.try_get("client_id").map_err(map_sqlx)?,
        enabled: row.try_get("enabled").map_err(map_sqlx)?,
        document: row.try_get("document").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
    })
}

impl PostgresStore {
    /// Connects and applies migrations.
    pub async fn open(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse()?;
        let connect = |size: u32, options: PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
        };
        let pool = connect(max_connections.max(2), options.clone()).await?;
        // Lookups by identifier on connections that keep one generic plan per statement.
        // Under `plan_cache_mode = auto` PostgreSQL re-planned such a lookup (with its consent
        // conditions) on every execution: about 0.5–4 ms of planning to run 0.05 ms, since the
        // generic plan's estimate is dearer. Other searches keep `auto`: a range needs a plan
        // made for its value (benches/dci.rs: expression p95 126 → 224 ms when forced).
        let lookups = connect(
            max_connections.max(2),
            options
                .clone()
                .options([("plan_cache_mode", "force_generic_plan")]),
        )
        .await?;
        sqlx::migrate!("src/store/postgres/migrations")
            .run(&pool)
            .await?;
        // The group-commit tasks write through connections of their own: through the shared
        // pool each batch would queue behind the searches waiting for a connection, while
        // every one of those searches waits for a batch.
        let batch_writer = connect(2, options).await?;
        let disclosure_writer = batch_writer.clone();
        let disclosures = super::batch::Batcher::start(std::sync::Arc::new(move |entries| {
            let writer = disclosure_writer.clone();
            Box::pin(async move {
                consent::insert_disclosures(&writer, &entries).await?;
                Ok(vec![(); entries.len()])
            })
        }));
        Ok(Self {
            lookups,
            disclosures,
            replay: Recorder::start(std::sync::Arc::new(ReplayConnections(batch_writer))),
            pool,
            columns: Default::default(),
        })
    }

    fn search_columns(&self) -> std::sync::Arc<search_columns::SearchColumns> {
        // A poisoned lock still holds a whole set: it is only ever replaced whole.
        self.columns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How a query reads `register`'s field: its search column, or its value in `fields`.
    fn field_sql(&self, alias: &str, register: &str, field: &FieldDef) -> String {
        self.search_columns()
            .field(alias, register, &field.name, field.ty)
    }

    async fn fetch_records(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> StoreResult<Vec<Record>> {
        let rows = query.fetch_all(&self.pool).await.map_err(map_sqlx)?;
        decode_all(&rows)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn sync_field_indexes(&self, registers: &Registers) -> StoreResult<()> {
        let columns = search_columns::sync(&self.pool, registers).await?;
        *self
            .columns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(columns);
        Ok(())
    }

    async fn apply_change_set(&self, change_set: &ChangeSet) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        write_change_set(&mut tx, change_set).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn record_by_functional_id(
        &self,
        functional_id: &str,
        at: At<'_>,
    ) -> StoreResult<Option<Record>> {
        let records = match at {
            At::Current => {
                let sql = format!(
                    "select {RECORD_COLUMNS} where r.functional_id = $1 and r.valid_to is null"
                );
                self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(functional_id))
                    .await?
            }
            At::Instant(t) => {
                let sql = format!(
                    "select {RECORD_COLUMNS} where r.record_id = ({CURRENT_ID_BY_FUNCTIONAL_ID}) and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2)"
                );
                self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(functional_id).bind(t))
                    .await?
            }
            At::Label(label) => {
                let sql = format!(
                    "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                     where r.record_id = ({CURRENT_ID_BY_FUNCTIONAL_ID}) and l.label = $2"
                );
                self.fetch_records(
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(functional_id)
                        .bind(label),
                )
                .await?
            }
        };
        Ok(records.into_iter().next())
    }

    async fn record_by_id(&self, id: Uuid, at: At<'_>) -> StoreResult<Option<Record>> {
        let records = match at {
            At::Current => {
                let sql = format!(
                    "select {RECORD_COLUMNS} where r.record_id = $1 and r.valid_to is null"
                );
                self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(id))
                    .await?
            }
            At::Instant(t) => {
                let sql = format!(
                    "select {RECORD_COLUMNS} where r.record_id = $1 and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2)"
                );
                self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(id).bind(t))
                    .await?
            }
            At::Label(label) => {
                let sql = format!(
                    "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                     where r.record_id = $1 and l.label = $2"
                );
                self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(id).bind(label))
                    .await?
            }
        };
        Ok(records.into_iter().next())
    }

    async fn records_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "select {RECORD_COLUMNS} where r.functional_id = any($1) and r.valid_to is null"
        );
        self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(functional_ids))
            .await
    }

    async fn record_refs_by_functional_ids(
        &self,
        functional_ids: &[String],
    ) -> StoreResult<Vec<RecordRef>> {
        let rows: Vec<(String, Uuid, String)> = sqlx::query_as(
            "select functional_id, record_id, register from record_version where functional_id = any($1) and valid_to is null",
        )
        .bind(functional_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(rows
            .into_iter()
            .map(|(functional_id, id, register)| RecordRef {
                functional_id,
                id,
                register,
            })
            .collect())
    }

    async fn records_by_field(
        &self,
        register: &str,
        field: &FieldDef,
        values: &[String],
    ) -> StoreResult<Vec<Record>> {
        // The register name is written into the SQL (it is a checked identifier) so that even a
        // generic plan can see the partial index's `register = '…'` predicate.
        if !is_valid_name(register) {
            return Err(StoreError::Other(format!(
                "invalid register name `{register}`"
            )));
        }
        let expr = self.field_sql("r.", register, field);
        let values_type = match field.ty {
            FieldType::Integer | FieldType::Decimal => "::text[]::numeric[]",
            FieldType::Boolean => "::text[]::boolean[]",
            _ => "::text[]",
        };
        let sql = format!(
            "select {RECORD_COLUMNS} where r.register = '{register}' and r.valid_to is null and {expr} = any($1{values_type})"
        );
        self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(values))
            .await
    }

    async fn children(&self, parent: Uuid, at: At<'_>) -> StoreResult<Vec<Record>> {
        let order = "order by r.register, r.functional_id";
        let query = match at {
            At::Current => sqlx::query(AssertSqlSafe(format!(
                "select {RECORD_COLUMNS} where r.parent_id = $1 and r.valid_to is null {order}"
            )))
            .bind(parent),
            At::Instant(t) => sqlx::query(AssertSqlSafe(format!(
                "select {RECORD_COLUMNS} where r.parent_id = $1 and r.valid_from <= $2 and (r.valid_to is null or r.valid_to > $2) {order}"
            )))
            .bind(parent)
            .bind(t),
            At::Label(label) => sqlx::query(AssertSqlSafe(format!(
                "select {RECORD_COLUMNS} join version_label l on l.record_id = r.record_id and l.version = r.version \
                 where r.parent_id = $1 and l.label = $2 {order}"
            )))
            .bind(parent)
            .bind(label.to_owned()),
        };
        self.fetch_records(query).await
    }

    async fn versions(&self, id: Uuid) -> StoreResult<Vec<Record>> {
        let sql = format!("select {RECORD_COLUMNS} where r.record_id = $1 order by r.version");
        self.fetch_records(sqlx::query(AssertSqlSafe(sql)).bind(id))
            .await
    }

    async fn change_log(&self, id: Uuid) -> StoreResult<Vec<ChangeLogEntry>> {
        let rows = sqlx::query(
            "select c.version, c.field, c.old_value, c.new_value, c.change_set_id, s.actor, s.created_at \
             from change_log c join change_set s using (change_set_id) where c.record_id = $1 order by c.version, c.field",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                let json = |name: &str| -> StoreResult<serde_json::Value> {
                    let value: Option<Json<serde_json::Value>> =
                        row.try_get(name).map_err(map_sqlx)?;
                    Ok(value.map(|Json(v)| v).unwrap_or(serde_json::Value::Null))
                };
                Ok(ChangeLogEntry {
                    record_id: id,
                    version: row.try_get("version").map_err(map_sqlx)?,
                    field: row.try_get("field").map_err(map_sqlx)?,
                    old: json("old_value")?,
                    new: json("new_value")?,
                    change_set_id: row.try_get("change_set_id").map_err(map_sqlx)?,
                    actor: row.try_get("actor").map_err(map_sqlx)?,
                    at: row.try_get("created_at").map_err(map_sqlx)?,
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
        let done = sqlx::query(
            "insert into version_label (label, record_id, version, labelled_by, labelled_at) \
             select $1, record_id, version, $2, $3 from record_version where record_id = any($4) and valid_to is null \
             on conflict (label, record_id) do nothing",
        )
        .bind(label)
        .bind(actor)
        .bind(at)
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }

    async fn records_page(
        &self,
        register: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Record>> {
        let sql = format!(
            "select {RECORD_COLUMNS} where r.register = $1 and r.valid_to is null and r.record_id > $2 \
             order by r.record_id limit $3"
        );
        self.fetch_records(
            sqlx::query(AssertSqlSafe(sql))
                .bind(register)
                .bind(after.unwrap_or_else(Uuid::nil))
                .bind(i64::from(limit)),
        )
        .await
    }

    async fn audit_entries(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        read_audit_entries(&self.pool, AuditChain::Registry, after, limit).await
    }

    async fn audit_head(&self) -> StoreResult<i64> {
        read_audit_head(&self.pool, AuditChain::Registry).await
    }

    async fn append_audit_entry(&self, draft: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        append_audit(&mut tx, draft).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn disclosure_audit_entries(
        &self,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        read_audit_entries(&self.pool, AuditChain::Disclosures, after, limit).await
    }

    async fn disclosure_audit_head(&self) -> StoreResult<i64> {
        read_audit_head(&self.pool, AuditChain::Disclosures).await
    }

    async fn count_records(&self) -> StoreResult<Vec<(String, i64)>> {
        sqlx::query_as("select register, count(*) from record_version where valid_to is null group by register order by register")
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)
    }

    async fn refresh_statistics(&self) -> StoreResult<()> {
        // Vacuumed too: an index-only scan (search_columns) visits every row of a page the
        // visibility map does not mark all-visible, and after a bulk import it marks none
        // until autovacuum comes by. The imports' refreshes during the load vacuum as well,
        // and that is faster, not slower: the benchmark's 1,000,000 individuals imported in
        // 107 s so, and in 134–140 s (three runs) when only the last refresh vacuumed.
        sqlx::raw_sql("vacuum (analyze) record_version")
            .execute(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    async fn insert_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query("insert into partner (sender_id, client_id, enabled, document, created_at, updated_at) values ($1, $2, $3, $4::jsonb, $5, $6)")
            .bind(&partner.sender_id)
            .bind(&partner.client_id)
            .bind(partner.enabled)
            .bind(&partner.document)
            .bind(partner.created_at)
            .bind(partner.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(super::partner_unique)?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn update_partner(&self, partner: &PartnerRow, audit: &AuditDraft) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let updated = sqlx::query(
            "update partner set enabled = $2, document = $3::jsonb, updated_at = $4 where sender_id = $1",
        )
        .bind(&partner.sender_id)
        .bind(partner.enabled)
        .bind(&partner.document)
        .bind(partner.updated_at)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_partner).transpose()
    }

    async fn partner_by_client_id(&self, client_id: &str) -> StoreResult<Option<PartnerRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{PARTNER_COLUMNS} where client_id = $1"
        )))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_partner).transpose()
    }

    async fn partners(&self) -> StoreResult<Vec<PartnerRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{PARTNER_COLUMNS} order by sender_id"
        )))
        .fetch_all(&self.pool)
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
            .execute(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(())
    }

    // ---- Staff API (issue 3) ----

    async fn insert_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "insert into staff_user (user_name, password_hash, roles, disabled, created_at, updated_at) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(Json(&user.roles))
        .bind(user.disabled)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn update_staff_user(&self, user: &StaffUser, audit: &AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let done = sqlx::query(
            "update staff_user set password_hash = $2, roles = $3, disabled = $4, updated_at = $5 where user_name = $1",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(Json(&user.roles))
        .bind(user.disabled)
        .bind(user.updated_at)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn staff_users(&self) -> StoreResult<Vec<StaffUser>> {
        let rows = sqlx::query(
            "select user_name, password_hash, roles, disabled, created_at, updated_at from staff_user order by user_name",
        )
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        if let Some(change_set) = change_set {
            write_change_set(&mut tx, change_set).await?;
        }
        sqlx::query(
            "insert into change_request (change_request_id, maker, source, reason, status, submitted_at, drafts, bases, \
             record_count, decided_by, decided_at, decision_reason, change_set_id) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(request.id)
        .bind(&request.maker)
        .bind(&request.source)
        .bind(&request.reason)
        .bind(request.status.as_str())
        .bind(request.submitted_at)
        .bind(Json(&request.drafts))
        .bind(Json(&request.bases))
        .bind(request.record_count)
        .bind(&request.decided_by)
        .bind(request.decided_at)
        .bind(&request.decision_reason)
        .bind(request.change_set_id)
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
        .bind(id)
        .fetch_optional(&self.pool)
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
            "select {REQUEST_COLUMNS} from change_request where ($1::text is null or status = $1) \
             order by change_request_id desc limit $2 offset $3"
        )))
        .bind(status.map(RequestStatus::as_str))
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        // Claims (and row-locks) the request: a concurrent decision waits here, then finds it
        // no longer pending.
        let claimed = sqlx::query(
            "update change_request set decided_at = $2 where change_request_id = $1 and status = 'pending'",
        )
        .bind(decision.id)
        .bind(decision.at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        if claimed.rows_affected() != 1 {
            return Err(StoreError::Stale(format!("change request {}", decision.id)));
        }
        if let Some(change_set) = change_set {
            write_change_set(&mut tx, change_set).await?;
        }
        sqlx::query(
            "update change_request set status = $2, decided_by = $3, decision_reason = $4, change_set_id = $5 \
             where change_request_id = $1",
        )
        .bind(decision.id)
        .bind(decision.status.as_str())
        .bind(&decision.by)
        .bind(&decision.reason)
        .bind(decision.change_set_id)
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
        // The register is written into the SQL so the partial field indexes' predicate is
        // visible to every plan (as in records_by_field).
        let mut sql = format!(
            "select {RECORD_COLUMNS} where r.register = '{}' and r.valid_to is null",
            query.register
        );
        let mut texts: Vec<String> = Vec::new();
        for (field, value) in &query.filters {
            texts.push(value.clone());
            let cast = match field.ty {
                FieldType::Integer | FieldType::Decimal => "::numeric",
                FieldType::Boolean => "::boolean",
                _ => "",
            };
            sql.push_str(&format!(
                " and {} = (${}::text){cast}",
                self.field_sql("r.", query.register, field),
                texts.len()
            ));
        }
        if let Some(status) = query.status {
            texts.push(status.as_str().to_owned());
            sql.push_str(&format!(" and r.status = ${}", texts.len()));
        }
        let direction = if query.descending { "desc" } else { "asc" };
        let order = match query.sort {
            RecordSort::Created => format!("r.record_id {direction}"),
            RecordSort::FunctionalId => format!("r.functional_id {direction}"),
            RecordSort::Field(field) => format!(
                "{} {direction} nulls last, r.record_id {direction}",
                self.field_sql("r.", query.register, field)
            ),
        };
        sql.push_str(&format!(
            " order by {order} limit {} offset {}",
            query.limit, query.offset
        ));
        let mut statement = sqlx::query(AssertSqlSafe(sql));
        for text in texts {
            statement = statement.bind(text);
        }
        self.fetch_records(statement).await
    }

    async fn sync_query_indexes(&self, indexes: &[(String, FieldRef)]) -> StoreResult<()> {
        let mut wanted = BTreeSet::new();
        for (register, field) in indexes {
            let (name, sql) = dci::query_index(register, field).ok_or_else(|| {
                StoreError::Other(format!("no index for {register}.{}", field.name()))
            })?;
            sqlx::query(AssertSqlSafe(sql))
                .execute(&self.pool)
                .await
                .map_err(map_sqlx)?;
            wanted.insert(name);
        }
        let existing: Vec<String> = sqlx::query_scalar(
            "select indexname::text from pg_indexes where schemaname = current_schema() and tablename = 'record_version' \
             and indexname like 'dci\\_ix\\_\\_%'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        for stale in existing.into_iter().filter(|n| !wanted.contains(n)) {
            sqlx::query(AssertSqlSafe(format!("drop index if exists {stale}")))
                .execute(&self.pool)
                .await
                .map_err(map_sqlx)?;
        }
        Ok(())
    }

    async fn query_records(&self, query: &RecordQuery) -> StoreResult<RecordPage> {
        let (page, count) = dci::compile(query, &self.search_columns())?;
        let pool = if query.by_identifier {
            &self.lookups
        } else {
            &self.pool
        };
        let rows = page.query().fetch_all(pool).await.map_err(map_sqlx)?;
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
                .fetch_one(&self.pool)
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
        let sql = format!(
            "select {RECORD_COLUMNS} where r.parent_id = any($1) and r.register = any($2) and r.valid_to is null order by r.register, r.functional_id"
        );
        self.fetch_records(
            sqlx::query(AssertSqlSafe(sql))
                .bind(parents)
                .bind(registers),
        )
        .await
    }

    async fn insert_dci_job(&self, job: &DciJobRow, reference_ids: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "insert into dci_job (job_id, sender_id, kind, transaction_id, correlation_id, request_message_id, request, \
             callback_url, callback_message_id, status, result, delivery, attempts, next_attempt_at, deadline, last_error, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(job.job_id)
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
        .bind(job.next_attempt_at)
        .bind(job.deadline)
        .bind(&job.last_error)
        .bind(job.created_at)
        .bind(job.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        sqlx::query(
            "insert into dci_job_reference (job_id, sender_id, reference_id) \
             select $1, $2, x from unnest($3::text[]) as x on conflict do nothing",
        )
        .bind(job.job_id)
        .bind(&job.sender_id)
        .bind(reference_ids)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)
    }

    async fn claim_dci_jobs(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>> {
        // SKIP LOCKED: a job another process is claiming right now is passed over, not
        // waited for, and never claimed twice.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "with due as (select job_id from dci_job where delivery = 'pending' and next_attempt_at <= $3 \
             and (lease_until is null or lease_until <= $3) order by next_attempt_at limit $4 for update skip locked) \
             update dci_job j set leased_by = $1, lease_until = $2, updated_at = $3, \
             status = case when j.status = 'rcvd' then 'pdng' else j.status end \
             from due where j.job_id = due.job_id returning {}",
            dci::JOB_COLUMNS
                .split(", ")
                .map(|c| format!("j.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        .bind(update.next_attempt_at)
        .bind(&update.last_error)
        .bind(update.updated_at)
        .bind(update.job_id)
        .bind(worker)
        .execute(&self.pool)
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
        let rows = sql.query().fetch_all(&self.pool).await.map_err(map_sqlx)?;
        rows.iter().map(dci::decode_job).collect()
    }

    async fn list_dci_jobs(
        &self,
        delivery: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<DciJobRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "select {} from dci_job where ($1::text is null or delivery = $1) order by created_at desc, job_id limit $2",
            dci::JOB_COLUMNS
        )))
        .bind(delivery)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        consent::disclosures(&self.pool, query).await
    }

    async fn consent_policy_digests(
        &self,
    ) -> StoreResult<std::collections::BTreeMap<String, String>> {
        consent::consent_policy_digests(&self.pool).await
    }

    async fn replace_consent_policy_digests(
        &self,
        digests: &std::collections::BTreeMap<String, String>,
        audit: &AuditDraft,
    ) -> StoreResult<()> {
        consent::replace_consent_policy_digests(&self.pool, digests, audit).await
    }
}

/// Writes a change set inside a transaction: the change set row, closes the replaced versions
/// (a version no longer current is a conflict), inserts the new versions and change log, and
/// chains its audit entry.
async fn write_change_set(conn: &mut PgConnection, change_set: &ChangeSet) -> StoreResult<()> {
    let at = change_set.at();
    sqlx::query("insert into change_set (change_set_id, actor, source, reason, created_at) values ($1, $2, $3, $4, $5)")
        .bind(change_set.id())
        .bind(change_set.actor())
        .bind(change_set.source())
        .bind(change_set.reason())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;

    let replaced: Vec<_> = change_set
        .writes()
        .iter()
        .filter_map(|w| w.previous_version().map(|v| (w, v)))
        .collect();
    if !replaced.is_empty() {
        let ids: Vec<Uuid> = replaced.iter().map(|(w, _)| w.envelope().id).collect();
        let versions: Vec<i64> = replaced.iter().map(|(_, v)| *v).collect();
        let closed: Vec<Uuid> = sqlx::query_scalar(
            "update record_version r set valid_to = $1 from unnest($2::uuid[], $3::int8[]) as x(id, v) \
             where r.record_id = x.id and r.version = x.v and r.valid_to is null returning r.record_id",
        )
        .bind(at)
        .bind(&ids)
        .bind(&versions)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx)?;
        if closed.len() != replaced.len() {
            let closed: BTreeSet<Uuid> = closed.into_iter().collect();
            if let Some((write, expected)) = replaced
                .iter()
                .find(|(w, _)| !closed.contains(&w.envelope().id))
            {
                return Err(StoreError::Conflict {
                    functional_id: write.envelope().functional_id.clone(),
                    expected: *expected,
                });
            }
        }
    }

    let writes = change_set.writes();
    let ids: Vec<Uuid> = writes.iter().map(|w| w.envelope().id).collect();
    let versions: Vec<i64> = writes.iter().map(|w| w.envelope().version).collect();
    let registers: Vec<&str> = writes
        .iter()
        .map(|w| w.envelope().register.as_str())
        .collect();
    let functional_ids: Vec<&str> = writes
        .iter()
        .map(|w| w.envelope().functional_id.as_str())
        .collect();
    let parents: Vec<Option<Uuid>> = writes.iter().map(|w| w.envelope().parent_id).collect();
    let statuses: Vec<&str> = writes
        .iter()
        .map(|w| w.envelope().status.as_str())
        .collect();
    let fields: Vec<&str> = writes.iter().map(RecordWrite::fields_json).collect();
    sqlx::query(
        "insert into record_version (record_id, version, register, functional_id, parent_id, status, fields, change_set_id, valid_from) \
         select id, v, reg, fid, parent, st, f::jsonb, $8, $9 \
         from unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[]) as x(id, v, reg, fid, parent, st, f)",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&registers)
    .bind(&functional_ids)
    .bind(&parents)
    .bind(&statuses)
    .bind(&fields)
    .bind(change_set.id())
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;

    let changes: Vec<_> = writes
        .iter()
        .flat_map(|w| w.changes().iter().map(move |c| (w, c)))
        .collect();
    if !changes.is_empty() {
        let json = |v: &serde_json::Value| (!v.is_null()).then(|| v.to_string());
        let ids: Vec<Uuid> = changes.iter().map(|(w, _)| w.envelope().id).collect();
        let versions: Vec<i64> = changes.iter().map(|(w, _)| w.envelope().version).collect();
        let names: Vec<&str> = changes.iter().map(|(_, c)| c.field.as_str()).collect();
        let olds: Vec<Option<String>> = changes.iter().map(|(_, c)| json(&c.old)).collect();
        let news: Vec<Option<String>> = changes.iter().map(|(_, c)| json(&c.new)).collect();
        sqlx::query(
            "insert into change_log (record_id, version, field, old_value, new_value, change_set_id) \
             select id, v, f, o::jsonb, n::jsonb, $6 from unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[]) as x(id, v, f, o, n)",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(&names)
        .bind(&olds)
        .bind(&news)
        .bind(change_set.id())
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    }

    append_audit(conn, change_set.audit_draft()).await
}

/// Chains one audit entry after the head, inside a transaction.
async fn append_audit(conn: &mut PgConnection, draft: &AuditDraft) -> StoreResult<()> {
    append_audits(conn, AuditChain::Registry, &[draft]).await
}

/// Chains `drafts`, in order, onto `chain`: the head is read once and written once, and the
/// entries go in one statement (the group commit of the disclosure log writes many).
async fn append_audits(
    conn: &mut PgConnection,
    chain: AuditChain,
    drafts: &[&AuditDraft],
) -> StoreResult<()> {
    let (log, head) = chain.tables();
    // The head row's lock serialises the chain's writers, so the chain never forks.
    let (mut seq, mut hash): (i64, String) = sqlx::query_as(AssertSqlSafe(format!(
        "select seq, hash from {head} where id = 1 for update"
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    let mut columns: (Vec<i64>, Vec<chrono::DateTime<chrono::Utc>>) = Default::default();
    let mut texts: [Vec<String>; 6] = Default::default();
    for draft in drafts {
        let entry = draft.chain(seq, &hash);
        columns.0.push(entry.seq);
        columns.1.push(entry.at);
        for (column, value) in texts.iter_mut().zip([
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
            entry.prev_hash,
            entry.hash.clone(),
        ]) {
            column.push(value);
        }
        (seq, hash) = (entry.seq, entry.hash);
    }
    let [actor, action, subject, detail, prev_hash, hashes] = texts;
    sqlx::query(AssertSqlSafe(format!(
        "insert into {log} (seq, at, actor, action, subject, detail, prev_hash, hash) \
         select * from unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])"
    )))
    .bind(columns.0)
    .bind(columns.1)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .bind(prev_hash)
    .bind(hashes)
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
    pool: &PgPool,
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
            Ok(AuditEntry {
                seq: row.try_get("seq").map_err(map_sqlx)?,
                at: row.try_get("at").map_err(map_sqlx)?,
                actor: row.try_get("actor").map_err(map_sqlx)?,
                action: row.try_get("action").map_err(map_sqlx)?,
                subject: row.try_get("subject").map_err(map_sqlx)?,
                detail: row.try_get("detail").map_err(map_sqlx)?,
                prev_hash: row.try_get("prev_hash").map_err(map_sqlx)?,
                hash: row.try_get("hash").map_err(map_sqlx)?,
            })
        })
        .collect()
}

async fn read_audit_head(pool: &PgPool, chain: AuditChain) -> StoreResult<i64> {
    let (_, head) = chain.tables();
    let seq: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "select seq from {head} where id = 1"
    )))
    .fetch_optional(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(seq.unwrap_or(0))
}
