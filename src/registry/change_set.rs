//! Change sets: the only way anything is written. A change set produces a new version of every
//! record it touches, a field-level change log and one audit entry, all in one transaction.

use super::audit::{AuditDraft, write_canonical_object};
use super::record::{Fields, Record};
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

/// A group of record writes applied atomically. Sealed at construction: its audit entry
/// (with the content digest) and each record's JSON text are computed once, by whoever
/// prepares it, so the writer's path (the bottleneck of a bulk import) only writes.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    id: Uuid,
    actor: String,
    source: String,
    reason: Option<String>,
    at: DateTime<Utc>,
    writes: Vec<RecordWrite>,
    audit: AuditDraft,
}

/// One new version of one record.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    /// The new version. Its field map is dropped when the change set is sealed: from then on
    /// the fields live only in `fields_json` (a bulk import holds thousands of these).
    record: Record,
    previous_version: Option<i64>,
    changes: Vec<FieldChange>,
    fields_json: String,
}

impl RecordWrite {
    /// `record` is the new version (its `version` is `previous_version + 1`, or 1 for a new
    /// record). `previous_version` is the version it replaces: the store refuses the change
    /// set if that version is no longer current. `changes` are the field-level changes
    /// against it (empty for a new record, whose first version holds every initial value).
    pub fn new(record: Record, previous_version: Option<i64>, changes: Vec<FieldChange>) -> Self {
        let mut canonical = Vec::with_capacity(1024);
        write_canonical_object(&record.fields, &mut canonical);
        // serde_json writes valid UTF-8; the fallback cannot happen.
        let fields_json = String::from_utf8(canonical).unwrap_or_else(|_| "{}".to_owned());
        Self {
            record,
            previous_version,
            changes,
            fields_json,
        }
    }

    /// The version's envelope: id, register, functional id, parent, status, version. Its
    /// `fields` are empty once sealed in a change set; see [`RecordWrite::fields_json`].
    pub fn envelope(&self) -> &Record {
        &self.record
    }

    /// The fields, while the write is not yet sealed in a change set.
    pub fn fields(&self) -> &Fields {
        &self.record.fields
    }

    pub fn previous_version(&self) -> Option<i64> {
        self.previous_version
    }

    pub fn changes(&self) -> &[FieldChange] {
        &self.changes
    }

    /// The record's fields as canonical JSON text (keys sorted at every depth, compact), as
    /// the stores write them and the content digest covers them.
    pub fn fields_json(&self) -> &str {
        &self.fields_json
    }
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
    /// Seals a change set: `actor` is who made the change (a user name, `seeder`…), `source`
    /// where it came from (`csv-import`, `sample`, `cli`…).
    pub fn new(
        id: Uuid,
        actor: String,
        source: String,
        reason: Option<String>,
        at: DateTime<Utc>,
        mut writes: Vec<RecordWrite>,
    ) -> Self {
        let digest = content_digest(&writes);
        for write in &mut writes {
            write.record.fields = Fields::new();
        }
        let created = writes
            .iter()
            .filter(|w| w.previous_version.is_none())
            .count();
        let detail = serde_json::json!({
            "source": source,
            "reason": reason,
            "created": created,
            "updated": writes.len() - created,
            "digest": digest,
        });
        let audit = AuditDraft {
            at,
            actor: actor.clone(),
            action: "change_set".to_owned(),
            subject: id.to_string(),
            detail: detail.to_string(),
        };
        Self {
            id,
            actor,
            source,
            reason,
            at,
            writes,
            audit,
        }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    pub fn writes(&self) -> &[RecordWrite] {
        &self.writes
    }

    /// The audit entry this change set writes.
    pub fn audit_draft(&self) -> &AuditDraft {
        &self.audit
    }
}

/// SHA-256 over every version a change set writes (id, version, status, parent and the
/// canonical JSON of the fields), recorded in its audit entry so the chain also vouches for
/// the data.
fn content_digest(writes: &[RecordWrite]) -> String {
    let mut hasher = Sha256::new();
    let mut buffer = Vec::with_capacity(4096);
    for write in writes {
        let r = &write.record;
        buffer.clear();
        let parent = r.parent_id.map(|p| p.to_string()).unwrap_or_default();
        buffer.extend_from_slice(
            format!("{}|{}|{}|{}|", r.id, r.version, r.status.as_str(), parent).as_bytes(),
        );
        buffer.extend_from_slice(write.fields_json.as_bytes());
        buffer.push(b'\n');
        hasher.update(&buffer);
    }
    hex::encode(hasher.finalize())
}
