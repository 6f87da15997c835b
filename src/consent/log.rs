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
use std::collections::HashMap;
use uuid::Uuid;

/// One record a reply carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
    /// Every leaf of the record as sent, as a path (`demographic_info.name.surname`,
    /// `member_list[].member_identifier[].identifier_value`), sorted, each once.
    pub fields: Vec<String>,
}

/// One reply's disclosure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// SHA-256 (hex) of the entry's canonical JSON (`serde_json::to_string` of it, every
    /// record with its own list of fields): what its audit entry carries, whichever way the
    /// entry is stored ([`Disclosure::document`]).
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        // Streamed: a page of 100 records is about 100 KB of JSON.
        if serde_json::to_writer(&mut hasher, self).is_err() {
            return String::new();
        }
        hex::encode(hasher.finalize())
    }

    /// The entry as stored: its JSON with each distinct list of fields written once, in
    /// `field_lists`, and each record's `fields` giving the position of its list there. The
    /// records of one reply mostly carry the same fields: a page of 100 in the benchmark
    /// (`benches/dci.rs`) is stored in 30 KB instead of 124 KB.
    pub fn document(&self) -> String {
        let mut positions: HashMap<&[String], usize> = HashMap::new();
        let mut field_lists: Vec<&[String]> = Vec::new();
        let records = self
            .records
            .iter()
            .map(|record| {
                let fields = *positions.entry(&record.fields).or_insert_with(|| {
                    field_lists.push(&record.fields);
                    field_lists.len() - 1
                });
                StoredRecordRef {
                    reference_id: &record.reference_id,
                    purpose: &record.purpose,
                    entity: &record.entity,
                    functional_id: &record.functional_id,
                    record_id: record.record_id,
                    within: record.within.as_deref(),
                    fields,
                }
            })
            .collect();
        let stored = StoredRef {
            id: self.id,
            at: self.at,
            partner: &self.partner,
            action: &self.action,
            message_id: &self.message_id,
            transaction_id: &self.transaction_id,
            correlation_id: &self.correlation_id,
            purposes: &self.purposes,
            field_lists,
            records,
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored entry: a [`Disclosure::document`], or an entry stored before documents
    /// shared their lists of fields (each record with its own list).
    pub fn from_document(text: &str) -> Result<Self, String> {
        let stored: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let field_lists = stored.field_lists.unwrap_or_default();
        let records = stored
            .records
            .into_iter()
            .map(|record| {
                let fields = match record.fields {
                    StoredFields::Listed(fields) => fields,
                    StoredFields::Shared(position) => field_lists
                        .get(position)
                        .cloned()
                        .ok_or_else(|| format!("no list of fields at position {position}"))?,
                };
                Ok(DisclosedRecord {
                    reference_id: record.reference_id,
                    purpose: record.purpose,
                    entity: record.entity,
                    functional_id: record.functional_id,
                    record_id: record.record_id,
                    within: record.within,
                    fields,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            id: stored.id,
            at: stored.at,
            partner: stored.partner,
            action: stored.action,
            message_id: stored.message_id,
            transaction_id: stored.transaction_id,
            correlation_id: stored.correlation_id,
            purposes: stored.purposes,
            records,
        })
    }

    /// The entry ready to be logged: its digest and the disclosure-chain entry carrying it,
    /// computed once.
    pub fn into_logged(self) -> Logged {
        let digest = self.digest();
        let audit = self.audit_draft(&digest);
        Logged {
            disclosure: self,
            digest,
            audit,
        }
    }

    /// The disclosure-chain entry that covers this disclosure, whose digest is `digest` (no
    /// personal data: counts and digest).
    fn audit_draft(&self, digest: &str) -> AuditDraft {
        AuditDraft {
            at: self.at,
            actor: format!("partner:{}", self.partner),
            action: "disclosure".into(),
            subject: self.id.to_string(),
            detail: serde_json::json!({
                "digest": digest,
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

/// A disclosure with what the log writes beside it ([`Disclosure::into_logged`]).
#[derive(Debug, Clone)]
pub struct Logged {
    pub disclosure: Disclosure,
    /// [`Disclosure::digest`].
    pub digest: String,
    /// Its entry of the disclosure chain, carrying the digest.
    pub audit: AuditDraft,
}

/// [`Disclosure::document`]'s shape, borrowed from the entry.
#[derive(Serialize)]
struct StoredRef<'a> {
    id: Uuid,
    at: DateTime<Utc>,
    partner: &'a str,
    action: &'a str,
    message_id: &'a str,
    transaction_id: &'a str,
    correlation_id: &'a str,
    purposes: &'a [String],
    field_lists: Vec<&'a [String]>,
    records: Vec<StoredRecordRef<'a>>,
}

#[derive(Serialize)]
struct StoredRecordRef<'a> {
    reference_id: &'a str,
    purpose: &'a str,
    entity: &'a str,
    functional_id: &'a str,
    record_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    within: Option<&'a str>,
    fields: usize,
}

/// A stored entry, in either form.
#[derive(Deserialize)]
struct Stored {
    id: Uuid,
    at: DateTime<Utc>,
    partner: String,
    action: String,
    message_id: String,
    transaction_id: String,
    correlation_id: String,
    purposes: Vec<String>,
    #[serde(default)]
    field_lists: Option<Vec<Vec<String>>>,
    records: Vec<StoredRecord>,
}

#[derive(Deserialize)]
struct StoredRecord {
    reference_id: String,
    purpose: String,
    entity: String,
    functional_id: String,
    record_id: Option<Uuid>,
    #[serde(default)]
    within: Option<String>,
    fields: StoredFields,
}

/// A record's fields: its own list (entries stored before `field_lists`), or a position in
/// `field_lists`.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredFields {
    Listed(Vec<String>),
    Shared(usize),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, fields: &[&str]) -> DisclosedRecord {
        DisclosedRecord {
            reference_id: "r-1".into(),
            purpose: "social_protection".into(),
            entity: "Member".into(),
            functional_id: id.into(),
            record_id: Some(Uuid::now_v7()),
            within: None,
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn disclosure(records: Vec<DisclosedRecord>) -> Disclosure {
        Disclosure {
            id: Uuid::now_v7(),
            at: DateTime::from_timestamp(1_790_000_000, 123_456_000).unwrap_or_default(),
            partner: "pmt.example".into(),
            action: "on-search".into(),
            message_id: "m-1".into(),
            transaction_id: "t-1".into(),
            correlation_id: "c-1".into(),
            purposes: vec!["social_protection".into()],
            records,
        }
    }

    #[test]
    fn a_stored_document_reads_back_as_the_entry() {
        let mut member = record("IND-2", &["name.given_name", "name.surname"]);
        member.within = Some("HH-1".into());
        member.record_id = None;
        let mut household = record("HH-1", &["member_list[].name.given_name"]);
        household.entity = "Group".into();
        let entry = disclosure(vec![
            record("IND-1", &["name.given_name", "name.surname"]),
            household,
            member,
            record("IND-3", &[]),
        ]);
        let document = entry.document();
        let stored: serde_json::Value = serde_json::from_str(&document).unwrap_or_default();
        // Three distinct lists, in order of first use; the first and third records share one.
        assert_eq!(
            stored["field_lists"],
            serde_json::json!([
                ["name.given_name", "name.surname"],
                ["member_list[].name.given_name"],
                []
            ])
        );
        let positions: Vec<Option<u64>> = (0..4)
            .map(|i| stored["records"][i]["fields"].as_u64())
            .collect();
        assert_eq!(positions, [Some(0), Some(1), Some(0), Some(2)]);
        assert_eq!(Disclosure::from_document(&document), Ok(entry));
    }

    #[test]
    fn an_entry_stored_with_a_list_per_record_still_reads_and_keeps_its_digest() {
        let entry = disclosure(vec![record("IND-1", &["name.given_name"])]);
        let earlier = serde_json::to_string(&entry).unwrap_or_default();
        assert_eq!(Disclosure::from_document(&earlier).as_ref(), Ok(&entry));
        // The digest is of the entry's canonical JSON, as it was before documents shared lists:
        // the chain entries written then still match.
        assert_eq!(
            entry.digest(),
            hex::encode(Sha256::digest(earlier.as_bytes()))
        );
    }

    #[test]
    fn a_page_of_records_with_the_same_fields_is_stored_in_a_fraction_of_the_space() {
        let fields: Vec<String> = (0..30)
            .map(|i| format!("demographic_info.field_{i}"))
            .collect();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let entry = disclosure(
            (0..100)
                .map(|i| record(&format!("IND-{i:012}"), &fields))
                .collect(),
        );
        let each_listed = serde_json::to_string(&entry).unwrap_or_default().len();
        let shared = entry.document().len();
        assert!(shared * 5 < each_listed, "{shared} against {each_listed}");
    }

    #[test]
    fn a_document_naming_a_missing_list_is_refused() {
        let entry = disclosure(vec![record("IND-1", &["name.given_name"])]);
        let broken = entry.document().replace("\"fields\":0", "\"fields\":1");
        assert_eq!(
            Disclosure::from_document(&broken),
            Err("no list of fields at position 1".to_owned())
        );
    }
}
