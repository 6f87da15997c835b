//! Response bodies of the staff API, built from domain values. Personal (`pii: true`) fields
//! are masked here for callers whose roles do not see them (see `auth::Role::sees_pii`).

use crate::auth::Caller;
use crate::registry::change_request::{Base, ChangeRequest};
use crate::registry::change_set::ChangeLogEntry;
use crate::registry::record::{Fields, Record};
use crate::registry::register::{RegisterDef, Registers};
use crate::registry::{Draft, DraftMode, RecordView};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Whether a field is shown to the caller: non-personal fields always; personal ones to roles
/// that see them. An unknown register's fields are all treated as personal.
fn shown(def: Option<&RegisterDef>, field: &str, reveal: bool) -> bool {
    reveal || def.is_some_and(|d| d.field(field).is_some_and(|f| !f.pii))
}

/// Masks the personal fields of `fields` in place; returns their names.
fn mask_fields(fields: &mut Fields, def: Option<&RegisterDef>, reveal: bool) -> Vec<String> {
    let mut masked = Vec::new();
    for (name, value) in fields.iter_mut() {
        if !shown(def, name, reveal) {
            *value = Value::String(MASK.to_owned());
            masked.push(name.clone());
        }
    }
    masked
}

/// One version of a record.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordBody {
    /// Internal id.
    pub id: Uuid,
    pub register: String,
    /// `IND-…`, `HH-…`, `DIS-…`.
    pub functional_id: String,
    pub parent_id: Option<Uuid>,
    pub parent_functional_id: Option<String>,
    /// `ACTIVE`, `INACTIVE` or `ARCHIVED`.
    pub status: String,
    pub version: i64,
    /// The record's fields, as defined by its register (see `GET /api/v1/registers`).
    #[schema(value_type = Object)]
    pub fields: Fields,
    /// Fields whose values are masked (`***`) because the caller's roles do not see personal data.
    pub masked: Vec<String>,
    /// The change set that wrote this version.
    pub change_set_id: Uuid,
    pub valid_from: DateTime<Utc>,
    /// When a later version replaced this one (`null` while current).
    pub valid_to: Option<DateTime<Utc>>,
}

impl RecordBody {
    pub fn new(record: Record, registers: &Registers, caller: &Caller) -> Self {
        let mut fields = record.fields;
        let masked = mask_fields(
            &mut fields,
            registers.get(&record.register),
            caller.sees_pii(),
        );
        Self {
            id: record.id,
            register: record.register,
            functional_id: record.functional_id,
            parent_id: record.parent_id,
            parent_functional_id: record.parent_functional_id,
            status: record.status.as_str().to_owned(),
            version: record.version,
            fields,
            masked,
            change_set_id: record.change_set_id,
            valid_from: record.valid_from,
            valid_to: record.valid_to,
        }
    }
}

/// A record with its household, the household's members and its supporting rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordViewBody {
    pub record: RecordBody,
    /// The record's household (the record itself for a household).
    pub household: Option<RecordBody>,
    pub members: Vec<RecordBody>,
    /// Supporting-table rows linked to the record.
    pub supporting: Vec<RecordBody>,
}

impl RecordViewBody {
    pub fn new(view: RecordView, registers: &Registers, caller: &Caller) -> Self {
        let body = |r: Record| RecordBody::new(r, registers, caller);
        Self {
            record: body(view.record),
            household: view.household.map(body),
            members: view.members.into_iter().map(body).collect(),
            supporting: view.supporting.into_iter().map(body).collect(),
        }
    }
}

/// Every version of a record, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionsBody {
    pub versions: Vec<RecordBody>,
}

/// One field change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeBody {
    /// The version the change produced.
    pub version: i64,
    /// The field, or `_status` / `_parent` for the record's status and parent.
    pub field: String,
    /// `null` when the field was absent.
    #[schema(value_type = Object)]
    pub old: Value,
    /// `null` when the field was removed.
    #[schema(value_type = Object)]
    pub new: Value,
    pub change_set_id: Uuid,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// A record's field-level change log, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesBody {
    pub changes: Vec<ChangeBody>,
}

impl ChangesBody {
    pub fn new(
        register: &str,
        entries: Vec<ChangeLogEntry>,
        registers: &Registers,
        caller: &Caller,
    ) -> Self {
        let def = registers.get(register);
        let reveal = caller.sees_pii();
        let changes = entries
            .into_iter()
            .map(|e| {
                let keep = e.field.starts_with('_') || shown(def, &e.field, reveal);
                let hide = |v: Value| {
                    if keep || v.is_null() {
                        v
                    } else {
                        Value::String(MASK.to_owned())
                    }
                };
                ChangeBody {
                    version: e.version,
                    old: hide(e.old),
                    new: hide(e.new),
                    field: e.field,
                    change_set_id: e.change_set_id,
                    actor: e.actor,
                    at: e.at,
                }
            })
            .collect();
        Self { changes }
    }
}

/// One page of a register's records.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody {
    pub items: Vec<RecordBody>,
    pub page: u64,
    pub page_size: u32,
    /// Whether the next page has records.
    pub has_more: bool,
}

/// A register definition, as in `specs/registers/<name>.yaml`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterBody {
    pub name: String,
    pub title: String,
    /// `register` (Individual, Household) or `table` (supporting rows).
    pub kind: String,
    /// Functional id prefix.
    pub prefix: String,
    /// Registers a record may belong to.
    pub parents: Vec<String>,
    pub parent_required: bool,
    pub fields: Vec<FieldBody>,
}

/// One field of a register.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldBody {
    pub name: String,
    /// `string`, `integer`, `decimal`, `boolean`, `date`, `datetime`, `enum`, `list`, `object`.
    #[serde(rename = "type")]
    pub ty: String,
    pub description: String,
    /// Allowed values of an enum.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Element type of a list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    pub required: bool,
    pub unique: bool,
    /// Listings can filter and sort on indexed fields.
    pub indexed: bool,
    /// Personal data: masked for viewers and auditors.
    pub pii: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl From<&RegisterDef> for RegisterBody {
    fn from(def: &RegisterDef) -> Self {
        Self {
            name: def.name.clone(),
            title: def.title.clone(),
            kind: format!("{:?}", def.kind).to_lowercase(),
            prefix: def.prefix.clone(),
            parents: def.parents.clone(),
            parent_required: def.parent_required,
            fields: def
                .fields
                .iter()
                .map(|f| FieldBody {
                    name: f.name.clone(),
                    ty: f.ty.name().to_owned(),
                    description: f.description.clone(),
                    values: f.values.clone(),
                    items: f.items.map(|i| i.name().to_owned()),
                    required: f.required,
                    unique: f.unique,
                    indexed: f.indexed || f.unique,
                    pii: f.pii,
                    min: f.min,
                    max: f.max,
                })
                .collect(),
        }
    }
}

/// The register definitions in use.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistersBody {
    pub registers: Vec<RegisterBody>,
}

/// One write a change request asks for, as validated and stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftBody {
    pub register: String,
    /// The record written (generated at submission for a new individual or household).
    pub functional_id: Option<String>,
    /// The new parent (functional id), if the change sets one.
    pub parent: Option<String>,
    /// The new status, if the change sets one.
    pub status: Option<String>,
    /// `replace` (a new record's content) or `patch` (fields changed; `null` removes one).
    pub mode: String,
    #[schema(value_type = Object)]
    pub fields: Fields,
    pub masked: Vec<String>,
}

/// What a change request was made against, for one record.
#[derive(Debug, Serialize, ToSchema)]
pub struct BaseBody {
    pub functional_id: String,
    /// `null` for a record the request creates.
    pub record_id: Option<Uuid>,
    pub register: String,
    /// The version the request was made against (0: a record it creates).
    pub version: i64,
    /// The fields it touches (`_status`, `_parent` for status and parent).
    pub fields: Vec<String>,
}

/// A change request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeRequestBody {
    pub id: Uuid,
    /// `pending`, `approved`, `rejected` or `cancelled`.
    pub status: String,
    pub maker: String,
    /// Where it came from: `api`, `csv-import`, `cli`…
    pub source: String,
    pub reason: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// The writes, one per change (empty for a bulk-import batch).
    pub changes: Vec<DraftBody>,
    pub bases: Vec<BaseBody>,
    pub record_count: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The rejection reason.
    pub decision_reason: Option<String>,
    /// The change set that applied it.
    pub change_set_id: Option<Uuid>,
}

impl ChangeRequestBody {
    pub fn new(request: ChangeRequest, registers: &Registers, caller: &Caller) -> Self {
        let reveal = caller.sees_pii();
        let changes = request
            .drafts
            .into_iter()
            .map(|d: Draft| {
                let mut fields = d.fields;
                let masked = mask_fields(&mut fields, registers.get(&d.register), reveal);
                DraftBody {
                    register: d.register,
                    functional_id: d.functional_id,
                    parent: d.parent,
                    status: d.status.map(|s| s.as_str().to_owned()),
                    mode: match d.mode {
                        DraftMode::Replace => "replace",
                        DraftMode::Patch => "patch",
                    }
                    .to_owned(),
                    fields,
                    masked,
                }
            })
            .collect();
        Self {
            id: request.id,
            status: request.status.as_str().to_owned(),
            maker: request.maker,
            source: request.source,
            reason: request.reason,
            submitted_at: request.submitted_at,
            changes,
            bases: request
                .bases
                .into_iter()
                .map(|b: Base| BaseBody {
                    functional_id: b.functional_id,
                    record_id: b.record_id,
                    register: b.register,
                    version: b.version,
                    fields: b.fields,
                })
                .collect(),
            record_count: request.record_count,
            decided_by: request.decided_by,
            decided_at: request.decided_at,
            decision_reason: request.decision_reason,
            change_set_id: request.change_set_id,
        }
    }
}

/// A page of change requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeRequestsBody {
    pub items: Vec<ChangeRequestBody>,
    pub page: u64,
    pub page_size: u32,
    pub has_more: bool,
}
