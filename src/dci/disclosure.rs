//! The release decision: what registry data a reply may carry to a partner, applied to every
//! message that can hold registry records — the sync search reply, the async `on-search`
//! callback, and both transaction-status replies (which replay stored results) — after it is
//! built and before it is sealed (`Gateway::seal_reply` is the only caller, and the only way
//! registry data reaches `Envelopes::seal`). There is no switch that turns it off.
//!
//! The consent decision has two steps (`consent::decision`):
//! 1. *Which records* is applied twice. When a search runs, the records condition of the
//!    partner's policy becomes part of the store's query (so an excluded record changes
//!    neither the page nor `total_count`). When a reply carries results computed earlier (an
//!    async callback retried later, a transaction-status reply), the records in it are checked
//!    again against the live consent data before release, and those no longer eligible are
//!    dropped; an item whose purpose no policy grants any more is rejected.
//! 2. *Which fields* is applied here, on the final wire object: each record is cut down to the
//!    [`Shape`] the partner's policy allows for its entity (members inside a Group to the
//!    member entity's), dropping anything the shape does not name.
//!
//! Then every reply that answered at least one search item is written to the disclosure log
//! (`consent::log`): partner, purposes, transaction, and for each record exactly the wire
//! paths it carried.

use super::codes::search as search_code;
use super::mapping::{FieldGate, MARKER, Mapping, Shape};
use crate::consent::decision::{self, Request};
use crate::consent::{DisclosedRecord, Disclosure, Policy, PolicySet};
use crate::registry::query::{Filter, RecordQuery, Scalar, Target};
use crate::store::{Store, StoreError};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// Where the gateway notes a search item's purpose in the (unsealed) item; removed before
/// sealing.
pub const PURPOSE_KEY: &str = "@nsr-purpose";

/// Why a reply may not be sent at all.
#[derive(Debug, thiserror::Error)]
#[error("disclosure refused: {0}")]
pub struct Withheld(pub String);

impl From<StoreError> for Withheld {
    fn from(error: StoreError) -> Self {
        Withheld(error.to_string())
    }
}

/// One policy as the gateway uses it: the mapping restricted to what it allows (render and
/// search), and each entity's wire shape.
pub struct PolicyView {
    pub policy: Policy,
    pub mapping: Arc<Mapping>,
    shapes: BTreeMap<String, Shape>,
}

impl PolicyView {
    pub fn shape(&self, entity: &str) -> Option<&Shape> {
        self.shapes.get(entity)
    }
}

struct Gate<'a>(&'a Policy);

impl FieldGate for Gate<'_> {
    fn reads(&self, register: &str) -> bool {
        self.0.reads_register(register)
    }
    fn allows(&self, register: &str, field: &str) -> bool {
        self.0.allows_field(register, field)
    }
}

/// The policies in use, each with its view of the mapping.
pub struct Release {
    views: Vec<PolicyView>,
}

impl Release {
    pub fn new(policies: &PolicySet, mapping: &Mapping) -> Self {
        let views = policies
            .policies()
            .iter()
            .map(|policy| {
                let restricted = mapping.restricted(&Gate(policy));
                let shapes = restricted
                    .entity_names()
                    .filter_map(|name| restricted.shape(name).map(|s| (name.to_owned(), s)))
                    .collect();
                PolicyView {
                    policy: policy.clone(),
                    mapping: Arc::new(restricted),
                    shapes,
                }
            })
            .collect();
        Self { views }
    }

    /// The view of the one policy covering `partner` and `purpose`; `None`: nothing is shared.
    pub fn grant(&self, partner: &str, purpose: &str) -> Option<&PolicyView> {
        self.views
            .iter()
            .find(|v| v.policy.partners.contains(partner) && v.policy.purposes.contains(purpose))
    }
}

/// The purpose a search item names: `search_criteria.consent.purpose` or
/// `search_criteria.authorize.purpose`, each an object with a `code` (or `text`), or a string.
pub fn purpose_of(criteria: &Value) -> Result<String, String> {
    let read = |holder: &str| -> Option<Result<String, String>> {
        let purpose = criteria.get(holder)?.get("purpose")?;
        let text = match purpose {
            Value::String(text) => Some(text.clone()),
            Value::Object(object) => object
                .get("code")
                .or_else(|| object.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        Some(
            text.filter(|t| !t.trim().is_empty() && t.len() <= 200)
                .ok_or_else(|| format!("search_criteria.{holder}.purpose must carry a code (or text) naming the purpose")),
        )
    };
    match (read("consent"), read("authorize")) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
        (Some(Ok(a)), Some(Ok(b))) if a != b => Err(
            "search_criteria.consent.purpose and authorize.purpose name different purposes".into(),
        ),
        (Some(Ok(p)), _) | (None, Some(Ok(p))) => Ok(p),
        (None, None) => Err(
            "search_criteria.consent.purpose (or authorize.purpose) is required: name the purpose of the search".into(),
        ),
    }
}

/// What a reply is, for the log.
pub struct ReplyInfo<'a> {
    pub partner: &'a str,
    pub action: &'a str,
    pub message_id: &'a str,
    /// Whether the results were computed in this same request (else: stored earlier, and
    /// their records are checked again).
    pub fresh: bool,
    pub now: DateTime<Utc>,
}

/// The search items of a reply message (SearchResponse or TxnStatusResponse).
fn items_mut(message: &mut Value) -> Option<&mut Vec<Value>> {
    if message.get("search_response").is_some() {
        return message
            .get_mut("search_response")
            .and_then(Value::as_array_mut);
    }
    message
        .get_mut("txnstatus_response")
        .and_then(|r| r.get_mut("txn_status"))
        .and_then(|s| s.get_mut("search_response"))
        .and_then(Value::as_array_mut)
}

/// Applies the decision to `message` in place and returns the disclosure to log (`None` when
/// the reply answers no search item with data).
pub async fn release(
    rules: &Release,
    store: &dyn Store,
    reply: &ReplyInfo<'_>,
    message: &mut Value,
) -> Result<Option<Disclosure>, Withheld> {
    let transaction_id = text(message, "transaction_id");
    let correlation_id = text(message, "correlation_id");
    let mut records = Vec::new();
    let mut purposes = BTreeSet::new();
    let mut answered = false;
    if let Some(items) = items_mut(message) {
        for item in items.iter_mut() {
            let purpose = item
                .as_object_mut()
                .and_then(|o| o.remove(PURPOSE_KEY))
                .and_then(|p| p.as_str().map(str::to_owned));
            if item.get("data").is_none() {
                continue;
            }
            answered = true;
            let view = purpose
                .as_deref()
                .and_then(|p| rules.grant(reply.partner, p));
            let (Some(purpose), Some(view)) = (purpose, view) else {
                // Data without a purpose some policy grants this partner: not released.
                *item = withheld_item(item);
                continue;
            };
            purposes.insert(purpose.clone());
            let reference_id = text(item, "reference_id");
            let entity = item["data"]["reg_record_type"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(shape) = view.shape(&entity) else {
                *item = withheld_item(item);
                continue;
            };
            let Some(list) = item
                .get_mut("data")
                .and_then(|d| d.get_mut("reg_records"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            if !reply.fresh {
                let still = still_eligible(store, view, &entity, &purpose, reply, list).await?;
                list.retain(|r| marker(r).is_some_and(|(_, fid, _)| still.contains(&fid)));
            }
            for record in list.iter_mut() {
                let kept = shape
                    .retain(std::mem::take(record))
                    .unwrap_or_else(|| Value::Object(Map::new()));
                *record = kept;
                collect(record, &reference_id, &purpose, &entity, &mut records);
                strip_markers(record);
            }
        }
    }
    strip_markers(message);
    if !answered {
        return Ok(None);
    }
    Ok(Some(Disclosure {
        id: Uuid::now_v7(),
        at: reply.now.trunc_subsecs(6),
        partner: reply.partner.to_owned(),
        action: reply.action.to_owned(),
        message_id: reply.message_id.to_owned(),
        transaction_id,
        correlation_id,
        purposes: purposes.into_iter().collect(),
        records,
    }))
}

/// A search item whose data may not be released: rejected, with no data.
fn withheld_item(item: &Value) -> Value {
    let mut out = Map::new();
    for key in ["reference_id", "timestamp", "locale"] {
        if let Some(value) = item.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    out.insert("status".into(), "rjct".into());
    out.insert(
        "status_reason_code".into(),
        search_code::PURPOSE_NOT_PERMITTED.into(),
    );
    out.insert(
        "status_reason_message".into(),
        "no consent policy lets this partner receive these records for this purpose now".into(),
    );
    Value::Object(out)
}

/// `(record id, functional id, entity)` from a record object's marker.
fn marker(record: &Value) -> Option<(Option<Uuid>, String, String)> {
    let marker = record.get(MARKER)?;
    let fid = marker.get("functional_id")?.as_str()?.to_owned();
    let id = marker
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let entity = marker
        .get("entity")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((id, fid, entity))
}

/// The functional ids among `records` that are still eligible now (stored results).
async fn still_eligible(
    store: &dyn Store,
    view: &PolicyView,
    entity: &str,
    purpose: &str,
    reply: &ReplyInfo<'_>,
    records: &[Value],
) -> Result<HashSet<String>, Withheld> {
    let ids: Vec<Scalar> = records
        .iter()
        .filter_map(|r| marker(r).map(|(_, fid, _)| Scalar::Text(fid)))
        .collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let Some(register) = view.mapping.entity(entity).map(|e| e.register.clone()) else {
        return Ok(HashSet::new());
    };
    let request = Request {
        partner: reply.partner,
        purpose,
        today: reply.now.date_naive(),
    };
    let Some(eligible) = decision::records_filter(&view.policy, &register, &request) else {
        return Ok(HashSet::new());
    };
    let query = RecordQuery {
        register,
        filter: Filter::And(vec![
            Filter::In {
                target: Target::FunctionalId,
                values: ids.clone(),
            },
            eligible,
        ]),
        sort: Vec::new(),
        limit: u32::try_from(ids.len()).unwrap_or(u32::MAX),
        offset: 0,
        count: false,
        child_registers: Vec::new(),
        by_identifier: true,
    };
    let page = store.query_records(&query).await?;
    Ok(page.records.into_iter().map(|r| r.functional_id).collect())
}

/// Adds the log entries of one released record (and of the members inside it).
fn collect(
    record: &Value,
    reference_id: &str,
    purpose: &str,
    entity: &str,
    out: &mut Vec<DisclosedRecord>,
) {
    let Some((id, fid, _)) = marker(record) else {
        return;
    };
    out.push(DisclosedRecord {
        reference_id: reference_id.to_owned(),
        purpose: purpose.to_owned(),
        entity: entity.to_owned(),
        functional_id: fid.clone(),
        record_id: id,
        within: None,
        fields: leaf_paths(record),
    });
    // Members inside (member_list, group_head_info): one entry each, with every path it was
    // sent with (the head appears in both).
    let mut nested = Vec::new();
    nested_marked(record, true, &mut nested);
    let mut members: BTreeMap<String, (Option<Uuid>, String, BTreeSet<String>)> = BTreeMap::new();
    for member in nested {
        if let Some((id, member_fid, member_entity)) = marker(member) {
            members
                .entry(member_fid)
                .or_insert_with(|| (id, member_entity, BTreeSet::new()))
                .2
                .extend(leaf_paths(member));
        }
    }
    for (member_fid, (id, member_entity, fields)) in members {
        out.push(DisclosedRecord {
            reference_id: reference_id.to_owned(),
            purpose: purpose.to_owned(),
            entity: member_entity,
            functional_id: member_fid,
            record_id: id,
            within: Some(fid.clone()),
            fields: fields.into_iter().collect(),
        });
    }
}

/// Marked objects below `value` (not `value` itself when `top`).
fn nested_marked<'v>(value: &'v Value, top: bool, out: &mut Vec<&'v Value>) {
    match value {
        Value::Object(object) => {
            if !top && object.contains_key(MARKER) {
                out.push(value);
            }
            for (key, child) in object {
                if key != MARKER {
                    nested_marked(child, false, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                nested_marked(item, false, out);
            }
        }
        _ => {}
    }
}

/// Every leaf of a wire object as a path: keys joined by `.`, `[]` after a list, markers
/// left out; sorted, each once. What the disclosure log records of each record.
pub fn leaf_paths(value: &Value) -> Vec<String> {
    // One path buffer, grown and cut back on the way down and up: a page of 100 records has
    // thousands of leaves.
    fn walk(value: &Value, path: &mut String, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(object) => {
                for (key, child) in object {
                    if key == MARKER || key == PURPOSE_KEY {
                        continue;
                    }
                    let len = path.len();
                    if len > 0 {
                        path.push('.');
                    }
                    path.push_str(key);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                let len = path.len();
                path.push_str("[]");
                for item in items {
                    walk(item, path, out);
                }
                path.truncate(len);
            }
            Value::Null => {}
            _ => {
                if !out.contains(path.as_str()) {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut String::new(), &mut out);
    out.into_iter().collect()
}

/// Removes every marker and purpose note, anywhere in `value`.
fn strip_markers(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.remove(MARKER);
            object.remove(PURPOSE_KEY);
            for child in object.values_mut() {
                strip_markers(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_markers),
        _ => {}
    }
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// What a record of `entity` looks like on the wire under `view`'s policy: rendered with the
/// policy's mapping, cut to its shape, unmarked — the same two steps a reply's records go
/// through (rendering in the search, cutting in [`release`]). `None` when the policy does not
/// serve the entity.
pub fn wire_record(
    view: &PolicyView,
    entity: &str,
    record: &crate::registry::record::Record,
    related: &super::mapping::Related,
) -> Option<Value> {
    let mapped = view.mapping.entity(entity)?;
    let shape = view.shape(entity)?;
    let rendered = view.mapping.render_marked(mapped, record, related);
    let mut kept = shape
        .retain(rendered)
        .unwrap_or_else(|| Value::Object(Map::new()));
    strip_markers(&mut kept);
    Some(kept)
}
