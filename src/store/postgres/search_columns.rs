//! Search columns: each non-unique indexed field of a register is also a stored generated
//! column of `record_version` (`sv__<register>__<field>`, typed, null on other registers' rows),
//! and its index is built over that column, the record id, and the register's other search
//! columns. PostgreSQL answers from an index alone (an index-only scan) only when every column a
//! query reads is in it, and never counts an expression over `fields` as such a column. So with
//! expression indexes a search on a district and a birth date visited the row of every match to
//! count it (about 3,600 heap pages, 30 ms); over these columns it counts from the index.
//!
//! Unique fields keep their expression index (`rv_uq__…`): it is their constraint, and a lookup
//! by it reads one row anyway.
//!
//! Each column and each index carries, as its comment, the definition it was made from; one
//! whose comment differs (an earlier nsr's expression index, or a definition since changed) is
//! made again. Adding columns rewrites the table once, in one statement.

use super::map_sqlx;
use crate::registry::register::{FieldDef, FieldType, RegisterDef, Registers};
use crate::store::{StoreError, StoreResult, field_index_name, sql_literal};
use sqlx::{AssertSqlSafe, PgPool};
use std::collections::{BTreeMap, BTreeSet};

/// The registers' fields that have a search column, by `(register, field)`.
#[derive(Debug, Default, Clone)]
pub(super) struct SearchColumns(BTreeSet<(String, String)>);

impl SearchColumns {
    /// How a query reads top-level field `name` (of type `ty`) of `register`'s rows under
    /// `alias.`: its search column, or else its value in `fields`.
    pub(super) fn field(&self, alias: &str, register: &str, name: &str, ty: FieldType) -> String {
        if self.0.contains(&(register.to_owned(), name.to_owned())) {
            format!("{alias}{}", column_name(register, name))
        } else {
            cast(format!("({alias}fields->>'{name}')"), ty)
        }
    }
}

/// The advisory lock `sync` holds (any constant of nsr's own: "nsr fields").
const SYNC_LOCK: i64 = 0x6e73_7220_6669_656c;

fn column_name(register: &str, field: &str) -> String {
    format!("sv__{register}__{field}")
}

/// The expression over `fields` a field's value is read with, in column and unique index
/// definitions.
fn field_expr(field: &FieldDef) -> String {
    SearchColumns::default().field("", "", &field.name, field.ty)
}

/// Numbers and booleans are cast so that ranges compare by value, not as text.
pub(super) fn cast(text: String, ty: FieldType) -> String {
    match ty {
        FieldType::Integer | FieldType::Decimal => format!("({text}::numeric)"),
        FieldType::Boolean => format!("({text}::boolean)"),
        _ => text,
    }
}

fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Integer | FieldType::Decimal => "numeric",
        FieldType::Boolean => "boolean",
        _ => "text",
    }
}

/// The fields of `def` that get a search column.
fn searched(def: &RegisterDef) -> impl Iterator<Item = &FieldDef> {
    def.indexed_fields().filter(|f| !f.unique)
}

/// The `add column` clause of a search column (also its comment: its definition).
fn column_clause(def: &RegisterDef, field: &FieldDef) -> String {
    format!(
        "{} {} generated always as (case when register = '{}' then {} end) stored",
        column_name(&def.name, &field.name),
        sql_type(field.ty),
        def.name,
        field_expr(field)
    )
}

/// The `create index` statement of a field's index (also its comment: its definition).
fn index_sql(def: &RegisterDef, field: &FieldDef) -> String {
    let name = field_index_name(&def.name, field);
    if field.unique {
        return format!(
            "create unique index {name} on record_version ({}) where register = '{}' and valid_to is null",
            field_expr(field),
            def.name
        );
    }
    let carried: Vec<String> = searched(def)
        .filter(|f| f.name != field.name)
        .map(|f| column_name(&def.name, &f.name))
        .collect();
    let include = if carried.is_empty() {
        String::new()
    } else {
        format!(" include ({})", carried.join(", "))
    };
    format!(
        "create index {name} on record_version ({}, record_id){include} where register = '{}' and valid_to is null",
        column_name(&def.name, &field.name),
        def.name
    )
}

/// Makes the database's search columns and field indexes those of `registers` (register and
/// field names are checked identifiers), and returns the columns that queries may use.
///
/// All in one transaction, behind an advisory lock: nsr processes starting together on one
/// database change it one after the other, and the later ones find nothing left to do.
pub(super) async fn sync(pool: &PgPool, registers: &Registers) -> StoreResult<SearchColumns> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(SYNC_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let mut columns = BTreeMap::new();
    let mut indexes = BTreeMap::new();
    let mut searchable = BTreeSet::new();
    for def in registers.iter() {
        for field in searched(def) {
            searchable.insert((def.name.clone(), field.name.clone()));
            columns.insert(
                column_name(&def.name, &field.name),
                column_clause(def, field),
            );
        }
        for field in def.indexed_fields() {
            indexes.insert(
                field_index_name(&def.name, field),
                (
                    index_sql(def, field),
                    (def.name.as_str(), field.name.as_str()),
                ),
            );
        }
    }

    let existing: Vec<(String, Option<String>)> = sqlx::query_as(
        "select a.attname::text, col_description(a.attrelid, a.attnum) from pg_attribute a \
         where a.attrelid = 'record_version'::regclass and a.attnum > 0 and not a.attisdropped \
         and a.attname like 'sv\\_\\_%'",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let kept: BTreeSet<&String> = existing
        .iter()
        .filter(|(name, comment)| columns.get(name) == comment.as_ref())
        .map(|(name, _)| name)
        .collect();
    // Dropping a column drops the indexes over it; they are made again below.
    let mut changes: Vec<String> = existing
        .iter()
        .filter(|(name, _)| !kept.contains(name))
        .map(|(name, _)| format!("drop column {name}"))
        .collect();
    let added: Vec<(&String, &String)> = columns
        .iter()
        .filter(|(name, _)| !kept.contains(name))
        .collect();
    changes.extend(
        added
            .iter()
            .map(|(_, clause)| format!("add column {clause}")),
    );
    if !changes.is_empty() {
        // Adding a stored column writes every row again, under a lock on the table: said
        // before it starts.
        tracing::info!(
            added = added.len(),
            dropped = changes.len() - added.len(),
            "changing record_version's search columns (adding one rewrites the table)"
        );
        let statement = format!("alter table record_version {}", changes.join(", "));
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        for (name, clause) in &added {
            let comment = format!(
                "comment on column record_version.{name} is {}",
                sql_literal(clause)
            );
            sqlx::query(AssertSqlSafe(comment))
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
    }

    let existing: Vec<(String, Option<String>)> = sqlx::query_as(
        "select c.relname::text, obj_description(c.oid, 'pg_class') from pg_index i \
         join pg_class c on c.oid = i.indexrelid \
         where i.indrelid = 'record_version'::regclass \
         and (c.relname like 'rv\\_ix\\_\\_%' or c.relname like 'rv\\_uq\\_\\_%')",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let mut current = BTreeSet::new();
    for (name, comment) in &existing {
        if indexes.get(name).map(|(sql, _)| sql) == comment.as_ref() {
            current.insert(name.clone());
        } else {
            if indexes.contains_key(name) {
                tracing::info!(index = %name, "building a field index again: its definition changed");
            }
            sqlx::query(AssertSqlSafe(format!("drop index if exists {name}")))
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
    }
    for (name, (sql, (register, field))) in indexes.iter().filter(|(n, _)| !current.contains(*n)) {
        if let Err(error) = sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&mut *tx)
            .await
        {
            return Err(match map_sqlx(error) {
                StoreError::Unique { .. } => StoreError::DuplicateValues {
                    register: (*register).to_owned(),
                    field: (*field).to_owned(),
                },
                other => other,
            });
        }
        let comment = format!("comment on index {name} is {}", sql_literal(sql));
        sqlx::query(AssertSqlSafe(comment))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(SearchColumns(searchable))
}
