//! The consent decision, in two steps (ARCHITECTURE.md): first which records, then which
//! fields.
//!
//! **Which records** is a condition on the query, so the store's one statement applies it and
//! an excluded record changes neither the page nor `total_count`: the reply is the one a
//! search for a record that does not exist would get. An individual is *eligible* for a
//! partner and purpose when
//! - the policy requires consent and some current, ACTIVE Consent row of theirs is captured,
//!   has a `consent_scope` the policy accepts, and is neither withdrawn
//!   (`consent_withdrawn_date`) nor expired (`consent_expiry_date`) on the request's date
//!   (from that date on it no longer holds); under a legal basis no consent row is needed;
//! - and no current, ACTIVE Consent row carries a `data_sharing_restrictions` entry that
//!   names this partner (or `*`, or no partner) and this purpose (or `*`, or no purpose).
//!   Restrictions apply under a legal basis too: the registrant's exclusion is honoured
//!   whatever stands in for consent.
//!
//! A household is eligible when it has at least one current member and every current member
//! is eligible: its fields (poverty score, size, dwelling) describe all of them, and its
//! `member_list` would otherwise reveal a member who is excluded.
//!
//! Consent is read live by the query on every request, so a withdrawal takes effect on the
//! next request; nothing is cached. Every candidate of a search is checked for restrictions;
//! a partial index over the consent rows that carry any (migration 0006) makes that one index
//! probe for the many who have none.
//!
//! **Which fields** is [`Policy::allows_field`]; the gateway applies it to the wire object
//! after mapping (`dci::disclosure`).

use super::policy::{Basis, Policy};
use crate::registry::query::{ElementCondition, FieldRef, Filter, Op, Scalar, Target};
use crate::registry::register::{FieldDef, FieldType};
use chrono::NaiveDate;
use serde_json::Value;

/// The register consent rows live in, and the registers the decision knows.
pub const CONSENT_REGISTER: &str = "consent";
pub const INDIVIDUAL_REGISTER: &str = "individual";
pub const HOUSEHOLD_REGISTER: &str = "household";

/// Who asks, for what, when: the inputs of the records step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub partner: &'a str,
    pub purpose: &'a str,
    /// The request's date (the clock's, in UTC).
    pub today: NaiveDate,
}

fn field(name: &str, ty: FieldType) -> Target {
    let def = FieldDef {
        name: name.to_owned(),
        ty,
        description: String::new(),
        values: Vec::new(),
        items: None,
        required: false,
        unique: false,
        indexed: false,
        pii: false,
        min: None,
        max: None,
    };
    // The names are constants of this module and valid; a scalar type is always accepted.
    FieldRef::field(&def).map_or(Target::FunctionalId, Target::Field)
}

fn active() -> Filter {
    Filter::Compare {
        target: Target::Status,
        op: Op::Eq,
        value: Scalar::Text("ACTIVE".into()),
    }
}

/// Absent, or later than `today` (dates compare as ISO text).
fn not_yet(name: &str, today: NaiveDate) -> Filter {
    let target = field(name, FieldType::Date);
    Filter::Or(vec![
        Filter::Absent(target.clone()),
        Filter::Compare {
            target,
            op: Op::Gt,
            value: Scalar::Text(today.format("%Y-%m-%d").to_string()),
        },
    ])
}

/// The condition on a consent row that it is valid consent for `scopes` on `today`.
fn valid_consent(scopes: &[String], today: NaiveDate) -> Filter {
    Filter::And(vec![
        active(),
        Filter::Compare {
            target: field("consent_captured", FieldType::Boolean),
            op: Op::Eq,
            value: Scalar::Bool(true),
        },
        Filter::Element {
            list: "consent_scope".into(),
            conditions: vec![ElementCondition {
                key: None,
                values: scopes.to_vec(),
                or_absent: false,
            }],
        },
        not_yet("consent_withdrawn_date", today),
        not_yet("consent_expiry_date", today),
    ])
}

/// The condition on a consent row that it restricts sharing with this partner and purpose.
fn restricting(request: &Request<'_>) -> Filter {
    Filter::And(vec![
        active(),
        Filter::Element {
            list: "data_sharing_restrictions".into(),
            conditions: vec![
                ElementCondition {
                    key: Some("partner".into()),
                    values: vec![request.partner.to_owned(), "*".into()],
                    or_absent: true,
                },
                ElementCondition {
                    key: Some("purpose".into()),
                    values: vec![request.purpose.to_owned(), "*".into()],
                    or_absent: true,
                },
            ],
        },
    ])
}

/// The records-step condition on individuals.
pub fn individual_filter(policy: &Policy, request: &Request<'_>) -> Filter {
    let not_restricted = Filter::Not(Box::new(Filter::ChildWhere {
        register: CONSENT_REGISTER.into(),
        filter: Box::new(restricting(request)),
    }));
    match &policy.basis {
        Basis::Consent { scopes } => {
            let scopes: Vec<String> = scopes.iter().cloned().collect();
            Filter::And(vec![
                Filter::ChildWhere {
                    register: CONSENT_REGISTER.into(),
                    filter: Box::new(valid_consent(&scopes, request.today)),
                },
                not_restricted,
            ])
        }
        Basis::LegalBasis(_) => not_restricted,
    }
}

/// The records-step condition for records of `register`; `None` when the decision has no
/// rule for that register (then nothing of it is shared: the caller refuses).
pub fn records_filter(policy: &Policy, register: &str, request: &Request<'_>) -> Option<Filter> {
    match register {
        INDIVIDUAL_REGISTER => Some(individual_filter(policy, request)),
        HOUSEHOLD_REGISTER => {
            let member = individual_filter(policy, request);
            Some(Filter::And(vec![
                Filter::ChildWhere {
                    register: INDIVIDUAL_REGISTER.into(),
                    filter: Box::new(Filter::Compare {
                        target: Target::FunctionalId,
                        op: Op::Ne,
                        value: Scalar::Text(String::new()),
                    }),
                },
                Filter::Not(Box::new(Filter::ChildWhere {
                    register: INDIVIDUAL_REGISTER.into(),
                    filter: Box::new(Filter::Not(Box::new(member))),
                })),
            ]))
        }
        _ => None,
    }
}

/// One consent row as the decision sees it (for the pure evaluation the property tests and
/// the store's condition are checked against).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRow {
    pub active: bool,
    /// The row's fields, as stored.
    pub fields: serde_json::Map<String, Value>,
}

fn date_not_yet(fields: &serde_json::Map<String, Value>, name: &str, today: NaiveDate) -> bool {
    match fields.get(name) {
        None | Some(Value::Null) => true,
        Some(Value::String(date)) => date.as_str() > today.format("%Y-%m-%d").to_string().as_str(),
        Some(_) => false,
    }
}

fn matches_or_absent(value: Option<&Value>, wanted: &str) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text == wanted || text == "*",
        Some(_) => false,
    }
}

/// Whether an individual with these consent rows is eligible: the same rule as
/// [`individual_filter`], evaluated in memory.
pub fn individual_eligible(policy: &Policy, request: &Request<'_>, rows: &[ConsentRow]) -> bool {
    let restricted = rows.iter().filter(|r| r.active).any(|row| {
        row.fields
            .get("data_sharing_restrictions")
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items.iter().any(|item| {
                    matches_or_absent(item.get("partner"), request.partner)
                        && matches_or_absent(item.get("purpose"), request.purpose)
                })
            })
    });
    if restricted {
        return false;
    }
    match &policy.basis {
        Basis::LegalBasis(_) => true,
        Basis::Consent { scopes } => rows.iter().filter(|r| r.active).any(|row| {
            row.fields.get("consent_captured") == Some(&Value::Bool(true))
                && row
                    .fields
                    .get("consent_scope")
                    .and_then(Value::as_array)
                    .is_some_and(|s| {
                        s.iter()
                            .any(|v| v.as_str().is_some_and(|v| scopes.contains(v)))
                    })
                && date_not_yet(&row.fields, "consent_withdrawn_date", request.today)
                && date_not_yet(&row.fields, "consent_expiry_date", request.today)
        }),
    }
}
