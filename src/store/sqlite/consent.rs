//! SQLite side of consent: the append-only disclosure log (each entry in one transaction with
//! its disclosure-chain entry, in the disclosure file: `DISCLOSURE_SCHEMA`) and the consent
//! policies last audited.

use super::{append_audit, append_audits};
use crate::clock::to_text;
use crate::consent::{Disclosure, DisclosureQuery, Logged};
use crate::registry::audit::{AuditChain, AuditDraft};
use crate::store::{StoreError, StoreResult, map_sqlx};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row, SqlitePool};
use std::collections::BTreeMap;

/// Appends disclosures, each with the disclosure-chain entry covering it, in one transaction on
/// the disclosure file (the group commit of `super::super::batch`): a statement per table, not
/// per entry.
pub(super) async fn insert_disclosures(writer: &SqlitePool, entries: &[Logged]) -> StoreResult<()> {
    let mut disclosures = Vec::with_capacity(entries.len());
    let mut registrants = Vec::new();
    for Logged {
        disclosure, digest, ..
    } in entries
    {
        let document = disclosure.document();
        let id = disclosure.id.to_string();
        registrants.push(json!([id, registrant_terms(&disclosure.registrants())]));
        disclosures.push(json!([
            id,
            to_text(disclosure.at),
            disclosure.partner,
            disclosure.action,
            disclosure.message_id,
            disclosure.transaction_id,
            disclosure.correlation_id,
            digest.clone(),
            document,
        ]));
    }
    let mut tx = writer.begin().await.map_err(map_sqlx)?;
    sqlx::query(
        "insert into disclosure (disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, digest, document) \
         select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8 \
         from json_each($1) order by key",
    )
    .bind(Value::Array(disclosures).to_string())
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    sqlx::query(
        "insert into disclosure_registrant_index (rowid, registrants) \
         select d.rowid, j.value ->> 1 from json_each($1) j \
         join disclosure d on d.disclosure_id = j.value ->> 0 order by j.key",
    )
    .bind(Value::Array(registrants).to_string())
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let audits: Vec<&AuditDraft> = entries.iter().map(|entry| &entry.audit).collect();
    append_audits(&mut tx, AuditChain::Disclosures, &audits).await?;
    tx.commit().await.map_err(map_sqlx)
}

pub(super) async fn disclosures(
    reader: &SqlitePool,
    query: &DisclosureQuery,
) -> StoreResult<Vec<Disclosure>> {
    let mut sql = String::from("select d.document from disclosure d where 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    if let Some(registrant) = &query.registrant {
        if registrant.is_empty() {
            // No record has an empty functional id (and an empty phrase is no FTS5 query).
            return Ok(Vec::new());
        }
        binds.push(format!("\"{}\"", registrant_term(registrant)));
        sql.push_str(&format!(
            " and d.rowid in (select rowid from disclosure_registrant_index where disclosure_registrant_index match ${})",
            binds.len()
        ));
    }
    if let Some(partner) = &query.partner {
        binds.push(partner.clone());
        sql.push_str(&format!(" and d.partner = ${}", binds.len()));
    }
    if let Some(from) = query.from {
        binds.push(to_text(from));
        sql.push_str(&format!(" and d.at >= ${}", binds.len()));
    }
    if let Some(to) = query.to {
        binds.push(to_text(to));
        sql.push_str(&format!(" and d.at < ${}", binds.len()));
    }
    sql.push_str(&format!(
        " order by d.at desc, d.disclosure_id desc limit {} offset {}",
        query.limit,
        i64::try_from(query.offset).unwrap_or(i64::MAX)
    ));
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        q = q.bind(bind);
    }
    let rows = q.fetch_all(reader).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let document: String = row.try_get(0).map_err(map_sqlx)?;
            Disclosure::from_document(&document).map_err(StoreError::Other)
        })
        .collect()
}

/// A functional id as one term of the registrant index: its UTF-8 bytes in lower-case hex, so
/// that whatever characters an id holds, the index's tokenizer (`ascii`: runs of letters and
/// digits, folded to lower case) keeps it whole and tells it from every other id.
fn registrant_term(functional_id: &str) -> String {
    hex::encode(functional_id.as_bytes())
}

/// A disclosure's row of the registrant index: the terms of its registrants.
fn registrant_terms(functional_ids: &[String]) -> String {
    let terms: Vec<String> = functional_ids
        .iter()
        .map(|id| registrant_term(id))
        .collect();
    terms.join(" ")
}

pub(super) async fn consent_policy_digests(
    reader: &SqlitePool,
) -> StoreResult<BTreeMap<String, String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select name, digest from consent_policy_state")
            .fetch_all(reader)
            .await
            .map_err(map_sqlx)?;
    Ok(rows.into_iter().collect())
}

pub(super) async fn replace_consent_policy_digests(
    writer: &SqlitePool,
    digests: &BTreeMap<String, String>,
    audit: &AuditDraft,
) -> StoreResult<()> {
    let mut tx = writer.begin().await.map_err(map_sqlx)?;
    sqlx::query("delete from consent_policy_state")
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    for (name, digest) in digests {
        sqlx::query("insert into consent_policy_state (name, digest) values ($1, $2)")
            .bind(name)
            .bind(digest)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    }
    append_audit(&mut tx, audit).await?;
    tx.commit().await.map_err(map_sqlx)
}
