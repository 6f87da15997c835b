//! PostgreSQL side of consent: the append-only disclosure log (each entry in one transaction with
//! its disclosure-chain entry) and the consent policies last audited.

use super::{append_audit, append_audits};
use crate::consent::{Disclosure, DisclosureQuery, Logged};
use crate::registry::audit::{AuditChain, AuditDraft};
use crate::store::{StoreError, StoreResult, map_sqlx};
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::collections::BTreeMap;

/// Appends disclosures, each with the disclosure-chain entry covering it, in one transaction (the group
/// commit of `super::super::batch`): a statement per table, not per entry (each is a round
/// trip to the server).
pub(super) async fn insert_disclosures(writer: &PgPool, entries: &[Logged]) -> StoreResult<()> {
    let mut ids = Vec::with_capacity(entries.len());
    let mut at = Vec::with_capacity(entries.len());
    let mut texts: [Vec<String>; 7] = Default::default();
    let mut registrants: (Vec<uuid::Uuid>, Vec<String>) = Default::default();
    for Logged {
        disclosure, digest, ..
    } in entries
    {
        let document = disclosure.document();
        for registrant in disclosure.registrants() {
            registrants.0.push(disclosure.id);
            registrants.1.push(registrant);
        }
        ids.push(disclosure.id);
        at.push(disclosure.at);
        for (column, value) in texts.iter_mut().zip([
            disclosure.partner.clone(),
            disclosure.action.clone(),
            disclosure.message_id.clone(),
            disclosure.transaction_id.clone(),
            disclosure.correlation_id.clone(),
            digest.clone(),
            document,
        ]) {
            column.push(value);
        }
    }
    let [
        partner,
        action,
        message_id,
        transaction_id,
        correlation_id,
        digest,
        document,
    ] = texts;
    let mut tx = writer.begin().await.map_err(map_sqlx)?;
    sqlx::query(
        "insert into disclosure (disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, digest, document) \
         select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
    )
    .bind(ids)
    .bind(at)
    .bind(partner)
    .bind(action)
    .bind(message_id)
    .bind(transaction_id)
    .bind(correlation_id)
    .bind(digest)
    .bind(document)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    sqlx::query(
        "insert into disclosure_registrant (disclosure_id, functional_id) \
         select * from unnest($1::uuid[], $2::text[])",
    )
    .bind(registrants.0)
    .bind(registrants.1)
    .execute(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let audits: Vec<&AuditDraft> = entries.iter().map(|entry| &entry.audit).collect();
    append_audits(&mut tx, AuditChain::Disclosures, &audits).await?;
    tx.commit().await.map_err(map_sqlx)
}

pub(super) async fn disclosures(
    reader: &PgPool,
    query: &DisclosureQuery,
) -> StoreResult<Vec<Disclosure>> {
    let mut sql = String::from("select d.document from disclosure d where 1 = 1");
    enum Bind {
        Text(String),
        Time(chrono::DateTime<chrono::Utc>),
    }
    let mut binds: Vec<Bind> = Vec::new();
    if let Some(registrant) = &query.registrant {
        binds.push(Bind::Text(registrant.clone()));
        sql.push_str(&format!(
            " and d.disclosure_id in (select disclosure_id from disclosure_registrant where functional_id = ${})",
            binds.len()
        ));
    }
    if let Some(partner) = &query.partner {
        binds.push(Bind::Text(partner.clone()));
        sql.push_str(&format!(" and d.partner = ${}", binds.len()));
    }
    if let Some(from) = query.from {
        binds.push(Bind::Time(from));
        sql.push_str(&format!(" and d.at >= ${}", binds.len()));
    }
    if let Some(to) = query.to {
        binds.push(Bind::Time(to));
        sql.push_str(&format!(" and d.at < ${}", binds.len()));
    }
    sql.push_str(&format!(
        " order by d.at desc, d.disclosure_id desc limit {} offset {}",
        query.limit,
        i64::try_from(query.offset).unwrap_or(i64::MAX)
    ));
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for bind in binds {
        q = match bind {
            Bind::Text(text) => q.bind(text),
            Bind::Time(at) => q.bind(at),
        };
    }
    let rows = q.fetch_all(reader).await.map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let document: String = row.try_get(0).map_err(map_sqlx)?;
            Disclosure::from_document(&document).map_err(StoreError::Other)
        })
        .collect()
}

pub(super) async fn consent_policy_digests(
    reader: &PgPool,
) -> StoreResult<BTreeMap<String, String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("select name, digest from consent_policy_state")
            .fetch_all(reader)
            .await
            .map_err(map_sqlx)?;
    Ok(rows.into_iter().collect())
}

pub(super) async fn replace_consent_policy_digests(
    writer: &PgPool,
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
