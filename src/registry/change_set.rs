//! Change sets: the only way anything is written. A change set produces a new version of every
//! record it touches, a field-level change log and one audit entry, all in one transaction.

use super::audit::{AuditDraft, write_canonical_object};
use super::record::Record;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Pseudo-field names in the change log for the record envelope. Field names start with a
/// letter, so these cannot clash with a register's fields.
pub const STATUS_FIELD: &str = "_status";
/// See [`STATUS_FIELD`].
pub const PARENT_FIELD: &str = "_parent";

/// A group of record writes applied atomically.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub id: Uuid,
    /// Who made the change (a user name, `seeder`, `import`…).
    pub actor: String,
    /// Where it came from: `csv-import`, `sample`, `cli`, …
    pub source: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    pub writes: Vec<RecordWrite>,
}

/// One new version of one record.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    /// The new version (its `version` is `previous_version + 1`, or 1 for a new record).
    pub record: Record,
    /// The version this write replaces; the store refuses the change set if that version is
    /// no longer current (someone else changed the record meanwhile).
    pub previous_version: Option<i64>,
    /// Field-level changes against the previous version (empty for a new record, whose
    /// first version holds every value it was created with).
    pub changes: Vec<FieldChange>,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    /// `null` when the field was absent before.
    pub old: Value,
    /// `null` when the field was removed.
    pub new: Value,
}

/// A change-log row as read back, with who and when from its change set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeLogEntry {
    pub record_id: Uuid,
    pub version: i64,
    pub field: String,
    pub old: Value,
    pub new: Value,
    pub change_set_id: Uuid,
    pub actor: String,
    pub at: DateTime<Utc>,
}

impl ChangeSet {
    /// SHA-256 over every version this change set writes (id, version, status, parent and the
    /// canonical JSON of the fields), recorded in the audit entry so the chain also vouches
    /// for the data.
    pub fn content_digest(&self) -> String {
        let mut hasher = Sha256::new();
        let mut buffer = Vec::with_capacity(4096);
        for write in &self.writes {
            let r = &write.record;
            buffer.clear();
            let parent = r.parent_id.map(|p| p.to_string()).unwrap_or_default();
            buffer.extend_from_slice(
                format!("{}|{}|{}|{}|", r.id, r.version, r.status.as_str(), parent).as_bytes(),
            );
            write_canonical_object(&r.fields, &mut buffer);
            buffer.push(b'\n');
            hasher.update(&buffer);
        }
        hex::encode(hasher.finalize())
    }

    /// The audit entry this change set writes.
    pub fn audit_draft(&self) -> AuditDraft {
        let created = self
            .writes
            .iter()
            .filter(|w| w.previous_version.is_none())
            .count();
        let detail = serde_json::json!({
            "source": self.source,
            "reason": self.reason,
            "created": created,
            "updated": self.writes.len() - created,
            "digest": self.content_digest(),
        });
        AuditDraft {
            at: self.at,
            actor: self.actor.clone(),
            action: "change_set".to_owned(),
            subject: self.id.to_string(),
            detail: detail.to_string(),
        }
    }
}
