//! The disclosure log: for every reply that carried registry data to a partner, who received
//! it, for what purpose, in which transaction, and exactly which records and which fields
//! (wire paths, as sent). Append-only: the store offers no update or delete, and the tables
//! refuse both. Each entry is written in one transaction with an entry of the disclosure
//! chain whose detail carries the entry's digest; that chain is anchored in the audit chain
//! (`registry::audit`), and `nsr audit verify` walks both.

use crate::registry::audit::AuditDraft;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One record a reply carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosedRecord {
    /// The search item (`reference_id`) it answered.
    pub reference_id: String,
    pub purpose: String,
    /// `Member`, `Group`.
    pub entity: String,
    pub functional_id: String,
    pub record_id: Option<Uuid>,
    /// For a member inside a household's `member_list` or `group_head_info`: the
    /// household's functional id (its fields are listed on the household's entry, under
    /// those paths).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub within: Option<String>,
    /// Every leaf of the record as sent, as a path (`demographic_info.name.surname`,
    /// `member_list[].member_identifier[].identifier_value`), sorted, each once.
    pub fields: Vec<String>,
}

/// One reply's disclosure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The partner's `sender_id`.
    pub partner: String,
    /// The reply: `on-search` or `txn-on-status`.
    pub action: String,
    /// The reply's `message_id`.
    pub message_id: String,
    pub transaction_id: String,
    pub correlation_id: String,
    /// The purposes of the items answered, sorted, each once.
    pub purposes: Vec<String>,
    pub records: Vec<DisclosedRecord>,
}

impl Disclosure {
    /// SHA-256 (hex) of the entry's canonical JSON: what its audit entry carries.
    pub fn digest(&self) -> String {
        Self::digest_of(&serde_json::to_string(self).unwrap_or_default())
    }

    /// SHA-256 (hex) of an entry's canonical JSON text (`serde_json::to_string` of it).
    pub fn digest_of(document: &str) -> String {
        hex::encode(Sha256::digest(document.as_bytes()))
    }

    /// The disclosure-chain entry that covers this disclosure (no personal data: counts and
    /// digest).
    pub fn audit_draft(&self) -> AuditDraft {
        AuditDraft {
            at: self.at,
            actor: format!("partner:{}", self.partner),
            action: "disclosure".into(),
            subject: self.id.to_string(),
            detail: serde_json::json!({
                "digest": self.digest(),
                "action": self.action,
                "transaction_id": self.transaction_id,
                "records": self.records.len(),
            })
            .to_string(),
        }
    }

    /// Functional ids of every record disclosed (households and the members inside them).
    pub fn registrants(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .records
            .iter()
            .map(|r| r.functional_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Which disclosures to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisclosureQuery {
    /// Disclosures that carried this registrant's record (by functional id).
    pub registrant: Option<String>,
    pub partner: Option<String>,
    /// `at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `at < to`.
    pub to: Option<DateTime<Utc>>,
    pub offset: u64,
    pub limit: u32,
}

/// The most entries one page lists.
pub const MAX_PAGE: u32 = 500;

/// Disclosures for auditors: by registrant, partner and period, newest first, paged.
pub async fn list_disclosures(
    store: &dyn crate::store::Store,
    query: &DisclosureQuery,
) -> crate::store::StoreResult<Vec<Disclosure>> {
    let mut query = query.clone();
    query.limit = query.limit.clamp(1, MAX_PAGE);
    store.disclosures(&query).await
}

/// One registrant's own disclosures (for the self-service pages): each entry keeps only the
/// registrant's own records, so it says nothing about anyone else in the same reply.
pub async fn disclosures_of(
    store: &dyn crate::store::Store,
    registrant: &str,
    offset: u64,
    limit: u32,
) -> crate::store::StoreResult<Vec<Disclosure>> {
    let query = DisclosureQuery {
        registrant: Some(registrant.to_owned()),
        offset,
        limit: limit.clamp(1, MAX_PAGE),
        ..DisclosureQuery::default()
    };
    let mut entries = store.disclosures(&query).await?;
    for entry in &mut entries {
        entry.records.retain(|r| r.functional_id == registrant);
    }
    Ok(entries)
}
