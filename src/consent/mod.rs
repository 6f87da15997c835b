//! Consent: who may receive which fields of which records, for which purpose, and the log of
//! what was disclosed. Domain code: knows no HTTP, no SQL and no DCI wire types.
//!
//! - [`policy`]: consent policies as data (`consent-policies/*.yaml`), checked at start;
//!   their changes audited ([`audit_policy_changes`]).
//! - [`decision`]: the two-step decision: which records (a condition the store's query
//!   applies), then which fields (a policy's grant, applied by the gateway to the final wire
//!   object).
//! - [`log`]: the disclosure log, append-only, each entry written with an entry of the
//!   disclosure chain carrying its digest (anchored in the audit chain).

pub mod decision;
pub mod log;
pub mod policy;

pub use decision::Request;
pub use log::{DisclosedRecord, Disclosure, DisclosureQuery, Logged};
pub use policy::{Basis, FieldGrant, Policy, PolicyError, PolicySet};

use crate::registry::audit::AuditDraft;
use crate::store::{Store, StoreResult};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// Compares the policies in use with the set last audited and, when they differ, writes one
/// audit entry naming the policies added, changed and removed (with their digests) and
/// remembers the new set, in one transaction. Returns whether anything changed.
pub async fn audit_policy_changes(
    store: &dyn Store,
    policies: &PolicySet,
    actor: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let before = store.consent_policy_digests().await?;
    let now = policies.digests();
    if before == now {
        return Ok(false);
    }
    let mut added = BTreeMap::new();
    let mut changed = BTreeMap::new();
    let mut removed = BTreeMap::new();
    for (name, digest) in &now {
        match before.get(name) {
            None => {
                added.insert(name.clone(), digest.clone());
            }
            Some(old) if old != digest => {
                changed.insert(name.clone(), serde_json::json!({"from": old, "to": digest}));
            }
            Some(_) => {}
        }
    }
    for (name, digest) in &before {
        if !now.contains_key(name) {
            removed.insert(name.clone(), digest.clone());
        }
    }
    let detail = serde_json::json!({
        "added": added,
        "changed": changed,
        "removed": removed,
        "policies": now.len(),
    });
    let audit = AuditDraft {
        at,
        actor: actor.to_owned(),
        action: "consent_policies".into(),
        subject: "consent-policies".into(),
        detail: detail.to_string(),
    };
    store.replace_consent_policy_digests(&now, &audit).await?;
    Ok(true)
}
