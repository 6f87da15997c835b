//! Property tests of the consent decision over generated policies, records, consent rows and
//! requests:
//! - every field of every released record is allowed by the policy for that partner and
//!   purpose (a field the policy does not allow cannot change what is sent), and a record is
//!   released only when the registrant's consent (or the legal basis) and restrictions allow;
//! - with no policy nothing is released;
//! - adding a policy for another partner or purpose never changes what this partner gets for
//!   this purpose, and a policy overlapping an existing one is refused;
//! - the store's query applies the same records rule as the decision (both backends).

use crate::on_both_backends;
use crate::support::{TestRegistry, mappings_dir, registers};
use chrono::{NaiveDate, TimeZone, Utc};
use nsr::consent::decision::{self, ConsentRow, Request};
use nsr::consent::policy::parse_policy;
use nsr::consent::{Basis, PolicySet};
use nsr::dci::Mapping;
use nsr::dci::disclosure::{Release, wire_record};
use nsr::dci::mapping::Related;
use nsr::registry::query::{Filter, RecordQuery};
use nsr::registry::record::{Fields, Record, RecordStatus};
use nsr::registry::{Author, Draft, DraftMode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;
use uuid::Uuid;

const PARTNERS: &[&str] = &["p1.example", "p2.example"];
const PURPOSES: &[&str] = &["social_protection", "research"];
const SCOPES: &[&str] = &["dci_sharing", "social_protection", "research"];

/// Individual fields (with valid values) a generated record may hold.
fn individual_values() -> Vec<(&'static str, Value)> {
    vec![
        ("foundational_id", json!("FID-1")),
        ("first_name", json!("Ada")),
        ("middle_name", json!("B")),
        ("last_name", json!("Okafor")),
        ("prefix", json!("Ms")),
        ("gender", json!("FEMALE")),
        ("birth_date", json!("1990-05-01")),
        (
            "phone_numbers",
            json!([{"type": "mobile", "number": "+100", "is_primary": true}]),
        ),
        ("emails", json!(["ada@example.org"])),
        ("marital_status", json!("MARRIED")),
        ("employment_status", json!("EMPLOYED")),
        ("language_code", json!("eng")),
        ("registration_date", json!("2026-01-01")),
        ("relationship_to_head", json!("SELF")),
        ("occupation", json!("Weaver")),
        ("income_level", json!("LOW")),
        ("education_level", json!("PRIMARY")),
        ("citizenship_category", json!("CITIZEN")),
        ("residency_status", json!("USUAL_MEMBER")),
        ("disability_status", json!("YES")),
        ("primary_livelihood", json!("AGRICULTURE")),
        ("admin_area_code", json!("D01")),
        ("address_line_1", json!("1 Main St")),
        ("postal_code", json!("0001")),
        ("country_code", json!("XX")),
    ]
}

const RECORD_ATTRIBUTES: &[&str] = &["$functional_id", "$parent", "$valid_from", "$status"];
const DISABILITY_FIELDS: &[&str] = &["disability_domain", "disability_severity"];

fn mapping() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| Mapping::load_dir(&mappings_dir(), &registers()).unwrap())
}

fn registers_cached() -> &'static nsr::registry::register::Registers {
    static REGISTERS: OnceLock<nsr::registry::register::Registers> = OnceLock::new();
    REGISTERS.get_or_init(registers)
}

/// A generated policy for one partner and purpose.
#[derive(Debug, Clone)]
struct GenPolicy {
    partner: usize,
    purpose: usize,
    individual: Vec<String>,
    disability: Vec<String>,
    /// `None`: legal basis.
    scopes: Option<Vec<String>>,
}

impl GenPolicy {
    fn yaml(&self, name: &str) -> String {
        let list = |items: &[String]| format!("[{}]", items.join(", "));
        let consent = match &self.scopes {
            Some(scopes) => format!("  required: true\n  scopes: {}", list(scopes)),
            None => "  required: false\n  legal_basis: Test Act s. 1".to_owned(),
        };
        let mut registers = format!("  individual: {}\n", list(&self.individual));
        if !self.disability.is_empty() {
            registers.push_str(&format!("  disability: {}\n", list(&self.disability)));
        }
        format!(
            "name: {name}\npartners: [{}]\npurposes: [{}]\nquery_types: [idtype-value]\nconsent:\n{consent}\nmax_page_size: 10\nregisters:\n{registers}",
            PARTNERS[self.partner], PURPOSES[self.purpose]
        )
    }

    fn parse(&self, name: &str) -> nsr::consent::Policy {
        parse_policy(
            Path::new(&format!("{name}.yaml")),
            &self.yaml(name),
            registers_cached(),
        )
        .unwrap()
    }
}

fn subset(items: Vec<String>) -> impl Strategy<Value = Vec<String>> {
    let n = items.len();
    proptest::collection::vec(any::<bool>(), n).prop_map(move |keep| {
        items
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(i, _)| i.clone())
            .collect()
    })
}

fn gen_policy() -> impl Strategy<Value = GenPolicy> {
    let individual: Vec<String> = individual_values()
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(RECORD_ATTRIBUTES.iter().map(|s| (*s).to_owned()))
        .collect();
    (
        0..PARTNERS.len(),
        0..PURPOSES.len(),
        subset(individual).prop_filter("at least one field", |f| !f.is_empty()),
        subset(DISABILITY_FIELDS.iter().map(|s| (*s).to_owned()).collect()),
        proptest::option::of(
            subset(SCOPES.iter().map(|s| (*s).to_owned()).collect())
                .prop_filter("a scope", |s| !s.is_empty()),
        ),
    )
        .prop_map(
            |(partner, purpose, individual, disability, scopes)| GenPolicy {
                partner,
                purpose,
                individual,
                disability,
                scopes,
            },
        )
}

/// Policies with distinct (partner, purpose): one optional policy per pair.
fn gen_policies() -> impl Strategy<Value = Vec<GenPolicy>> {
    proptest::collection::vec(proptest::option::of(gen_policy()), 4).prop_map(|slots| {
        slots
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.map(|mut p| {
                    p.partner = i / 2;
                    p.purpose = i % 2;
                    p
                })
            })
            .collect()
    })
}

fn set_of(policies: &[GenPolicy]) -> PolicySet {
    PolicySet::new(
        policies
            .iter()
            .enumerate()
            .map(|(i, p)| p.parse(&format!("policy-{i}")))
            .collect(),
    )
    .unwrap()
}

fn gen_restriction() -> impl Strategy<Value = Value> {
    let who = prop_oneof![
        Just(Some("p1.example")),
        Just(Some("p2.example")),
        Just(Some("*")),
        Just(None)
    ];
    let why = prop_oneof![
        Just(Some("social_protection")),
        Just(Some("research")),
        Just(Some("*")),
        Just(None)
    ];
    (who, why).prop_map(|(who, why)| {
        let mut item = serde_json::Map::new();
        if let Some(who) = who {
            item.insert("partner".into(), json!(who));
        }
        if let Some(why) = why {
            item.insert("purpose".into(), json!(why));
        }
        Value::Object(item)
    })
}

/// Dates around the request date (2026-11-01).
fn gen_date() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("2026-10-01".to_owned()),
        Just("2026-11-01".to_owned()),
        Just("2026-11-02".to_owned()),
        Just("2027-01-01".to_owned()),
    ])
}

fn gen_consent() -> impl Strategy<Value = ConsentRow> {
    (
        any::<bool>(),
        prop_oneof![3 => Just(true), 1 => Just(false)],
        subset(SCOPES.iter().map(|s| (*s).to_owned()).collect()),
        gen_date(),
        gen_date(),
        proptest::collection::vec(gen_restriction(), 0..2),
    )
        .prop_map(
            |(captured, active, scopes, withdrawn, expiry, restrictions)| {
                let mut fields = serde_json::Map::new();
                fields.insert("consent_captured".into(), json!(captured));
                if !scopes.is_empty() {
                    fields.insert("consent_scope".into(), json!(scopes));
                }
                if let Some(date) = withdrawn {
                    fields.insert("consent_withdrawn_date".into(), json!(date));
                }
                if let Some(date) = expiry {
                    fields.insert("consent_expiry_date".into(), json!(date));
                }
                if !restrictions.is_empty() {
                    fields.insert("data_sharing_restrictions".into(), json!(restrictions));
                }
                ConsentRow { active, fields }
            },
        )
}

/// A generated individual with disability rows.
#[derive(Debug, Clone)]
struct GenPerson {
    fields: Fields,
    disabilities: Vec<Fields>,
}

fn gen_person() -> impl Strategy<Value = GenPerson> {
    let names: Vec<String> = individual_values()
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    (
        subset(names),
        proptest::collection::vec(
            (
                prop_oneof![Just("VISION"), Just("HEARING"), Just("MOBILITY")],
                prop_oneof![Just("SOME_DIFFICULTY"), Just("CANNOT_DO_AT_ALL")],
            ),
            0..3,
        ),
    )
        .prop_map(|(present, rows)| {
            let values = individual_values();
            let fields = values
                .into_iter()
                .filter(|(n, _)| present.iter().any(|p| p == n))
                .map(|(n, v)| (n.to_owned(), v))
                .collect();
            let disabilities = rows
                .into_iter()
                .map(|(d, s)| {
                    json!({"disability_domain": d, "disability_severity": s})
                        .as_object()
                        .cloned()
                        .unwrap()
                })
                .collect();
            GenPerson {
                fields,
                disabilities,
            }
        })
}

/// The record's version is valid from day `valid_from_day % 10` of October; from 10 on the
/// record is also INACTIVE (one number varies both attributes a policy may withhold).
fn record(person: &GenPerson, functional_id: &str, valid_from_day: u32) -> (Record, Related) {
    let status = if valid_from_day >= 10 {
        RecordStatus::Inactive
    } else {
        RecordStatus::Active
    };
    let version = 1;
    let id = Uuid::from_u128(1);
    let at = Utc
        .with_ymd_and_hms(2026, 10, valid_from_day % 10, 8, 0, 0)
        .unwrap();
    let individual = Record {
        id,
        register: "individual".into(),
        functional_id: functional_id.into(),
        parent_id: Some(Uuid::from_u128(2)),
        parent_functional_id: Some(format!("HH-{functional_id}")),
        status,
        version,
        fields: person.fields.clone(),
        change_set_id: Uuid::from_u128(3),
        valid_from: at,
        valid_to: None,
    };
    let rows = person
        .disabilities
        .iter()
        .enumerate()
        .map(|(i, fields)| Record {
            id: Uuid::from_u128(100 + i as u128),
            register: "disability".into(),
            functional_id: format!("DIS-{i}"),
            parent_id: Some(id),
            parent_functional_id: Some(functional_id.into()),
            status: RecordStatus::Active,
            version: 1,
            fields: fields.clone(),
            change_set_id: Uuid::from_u128(3),
            valid_from: at,
            valid_to: None,
        })
        .collect();
    (individual, Related::new(rows))
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

/// What `partner` receives of this person for `purpose` under `policies`: `None` when the
/// request is refused (no policy), `Some(None)` when the record is withheld, else the record.
fn response(
    policies: &PolicySet,
    partner: &str,
    purpose: &str,
    person: &GenPerson,
    consents: &[ConsentRow],
    functional_id: &str,
    valid_from_day: u32,
) -> Option<Option<Value>> {
    let release = Release::new(policies, mapping());
    let view = release.grant(partner, purpose)?;
    let request = Request {
        partner,
        purpose,
        today: today(),
    };
    if !decision::individual_eligible(&view.policy, &request, consents) {
        return Some(None);
    }
    let (record, related) = record(person, functional_id, valid_from_day);
    Some(wire_record(view, "Member", &record, &related))
}

/// The test's own reading of consent and restrictions (not the code's).
fn consent_allows(basis: &Basis, partner: &str, purpose: &str, rows: &[ConsentRow]) -> bool {
    let day = "2026-11-01";
    let active = || rows.iter().filter(|r| r.active);
    let restricted = active().any(|r| {
        r.fields
            .get("data_sharing_restrictions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|x| {
                let hits = |key: &str, wanted: &str| match x.get(key).and_then(Value::as_str) {
                    None => true,
                    Some(v) => v == wanted || v == "*",
                };
                hits("partner", partner) && hits("purpose", purpose)
            })
    });
    let consented = |scopes: &std::collections::BTreeSet<String>| {
        active().any(|r| {
            let later = |key: &str| {
                r.fields
                    .get(key)
                    .and_then(Value::as_str)
                    .is_none_or(|d| d > day)
            };
            r.fields.get("consent_captured") == Some(&json!(true))
                && r.fields
                    .get("consent_scope")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|s| s.as_str().is_some_and(|s| scopes.contains(s)))
                && later("consent_withdrawn_date")
                && later("consent_expiry_date")
        })
    };
    !restricted
        && match basis {
            Basis::LegalBasis(_) => true,
            Basis::Consent { scopes } => consented(scopes),
        }
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        // About a quarter of the cases have a policy for the request and a registrant it
        // releases: 256 cases check the field property some 60 times.
        cases: 256,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

#[test]
fn every_released_field_is_allowed_by_the_policy_and_the_registrants_consent() {
    runner()
        .run(
            &(
                gen_policies(),
                0..PARTNERS.len(),
                0..PURPOSES.len(),
                gen_person(),
                proptest::collection::vec(gen_consent(), 0..3),
            ),
            |(policies, partner, purpose, person, consents)| {
                let (partner, purpose) = (PARTNERS[partner], PURPOSES[purpose]);
                let set = set_of(&policies);
                let got = response(&set, partner, purpose, &person, &consents, "IND-A", 1);
                let Some(policy) = set.grant(partner, purpose) else {
                    prop_assert!(got.is_none(), "released without a policy");
                    return Ok(());
                };
                let got = got.unwrap();
                // Released exactly when consent (or the legal basis) and restrictions allow.
                prop_assert_eq!(
                    got.is_some(),
                    consent_allows(&policy.basis, partner, purpose, &consents)
                );
                let Some(sent) = got else { return Ok(()) };
                prop_assert!(!sent.to_string().contains("@nsr-"), "marker sent");
                // Information flow: changing or removing any field the policy does not allow
                // (and any record attribute it does not allow) changes nothing that is sent.
                let mut hidden = person.clone();
                for (name, _) in individual_values() {
                    if !policy.allows_field("individual", name) {
                        hidden.fields.remove(name);
                    }
                }
                for row in &mut hidden.disabilities {
                    for name in DISABILITY_FIELDS {
                        if !policy.allows_field("disability", name) {
                            row.remove(*name);
                        }
                    }
                }
                let fid = if policy.allows_field("individual", "$functional_id")
                    || policy.allows_field("individual", "$parent")
                {
                    "IND-A"
                } else {
                    "IND-B"
                };
                let day = if policy.allows_field("individual", "$valid_from") {
                    1
                } else {
                    2
                };
                let again = response(&set, partner, purpose, &hidden, &consents, fid, day)
                    .unwrap()
                    .unwrap();
                prop_assert_eq!(&sent, &again);
                Ok(())
            },
        )
        .unwrap();
}

/// Household fields (valid values) a generated household may hold.
fn household_values() -> Vec<(&'static str, Value)> {
    vec![
        ("headship_type", json!("FEMALE_HEADED")),
        ("size_total", json!(3)),
        ("admin_area_code", json!("D02")),
        ("address_line_1", json!("2 Side St")),
        ("dwelling_type", json!("PERMANENT")),
        ("water_source_type", json!("PIPED")),
        ("household_head_id", json!("IND-M0")),
    ]
}

/// Whether a policy allows `(register, field)`.
type Allowed<'a> = &'a dyn Fn(&str, &str) -> bool;

/// A Group: the household and its members (with their disability rows), each field present
/// or not; `hide` removes what `allowed(register, field)` refuses.
fn group(present: &[bool], members: &[GenPerson], hide: Option<Allowed<'_>>) -> (Record, Related) {
    let keep = |register: &str, field: &str| hide.is_none_or(|allowed| allowed(register, field));
    let at = Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0).unwrap();
    let household_id = Uuid::from_u128(10);
    let household = Record {
        id: household_id,
        register: "household".into(),
        functional_id: "HH-G".into(),
        parent_id: None,
        parent_functional_id: None,
        status: RecordStatus::Active,
        version: 1,
        fields: household_values()
            .into_iter()
            .zip(present.iter().chain(std::iter::repeat(&true)))
            .filter(|((name, _), here)| **here && keep("household", name))
            .map(|((name, value), _)| (name.to_owned(), value))
            .collect(),
        change_set_id: Uuid::from_u128(3),
        valid_from: at,
        valid_to: None,
    };
    let mut children = Vec::new();
    for (m, person) in members.iter().enumerate() {
        let id = Uuid::from_u128(20 + m as u128);
        children.push(Record {
            id,
            register: "individual".into(),
            functional_id: format!("IND-M{m}"),
            parent_id: Some(household_id),
            parent_functional_id: Some("HH-G".into()),
            status: RecordStatus::Active,
            version: 1,
            fields: person
                .fields
                .iter()
                .filter(|(name, _)| keep("individual", name))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            change_set_id: Uuid::from_u128(3),
            valid_from: at,
            valid_to: None,
        });
        for (k, row) in person.disabilities.iter().enumerate() {
            children.push(Record {
                id: Uuid::from_u128(1000 + 10 * m as u128 + k as u128),
                register: "disability".into(),
                functional_id: format!("DIS-{m}-{k}"),
                parent_id: Some(id),
                parent_functional_id: Some(format!("IND-M{m}")),
                status: RecordStatus::Active,
                version: 1,
                fields: row
                    .iter()
                    .filter(|(name, _)| keep("disability", name))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                change_set_id: Uuid::from_u128(3),
                valid_from: at,
                valid_to: None,
            });
        }
    }
    (household, Related::new(children))
}

#[test]
fn a_group_and_its_members_carry_only_allowed_fields() {
    let household_fields: Vec<String> = household_values()
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(["$functional_id".to_owned()])
        .collect();
    runner()
        .run(
            &(
                gen_policy(),
                subset(household_fields),
                proptest::collection::vec(any::<bool>(), 7),
                proptest::collection::vec(gen_person(), 1..4),
            ),
            |(policy, household, present, members)| {
                prop_assume!(!household.is_empty());
                let mut yaml = policy.yaml("group");
                yaml.push_str(&format!("  household: [{}]\n", household.join(", ")));
                let parsed =
                    parse_policy(Path::new("group.yaml"), &yaml, registers_cached()).unwrap();
                let set = PolicySet::new(vec![parsed.clone()]).unwrap();
                let release = Release::new(&set, mapping());
                let view = release
                    .grant(PARTNERS[policy.partner], PURPOSES[policy.purpose])
                    .unwrap();
                let (record, related) = group(&present, &members, None);
                let Some(sent) = wire_record(view, "Group", &record, &related) else {
                    return Ok(());
                };
                prop_assert!(!sent.to_string().contains("@nsr-"));
                // Removing every field the policy does not allow, from the household and
                // from each member and their rows, changes nothing that is sent.
                let allowed = |register: &str, field: &str| parsed.allows_field(register, field);
                let (record, related) = group(&present, &members, Some(&allowed));
                let again = wire_record(view, "Group", &record, &related).unwrap();
                prop_assert_eq!(&sent, &again);
                // Members are sent only when individuals are granted at all, and then only
                // as the member entity's shape.
                if let Some(list) = sent.get("member_list").and_then(Value::as_array) {
                    let member_shape = view.shape("Member").unwrap();
                    for member in list {
                        prop_assert!(member_shape.fits(member));
                        let kept = member_shape.retain(member.clone());
                        prop_assert_eq!(kept, Some(member.clone()));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn with_no_policy_nothing_is_released() {
    runner()
        .run(
            &(
                0..PARTNERS.len(),
                0..PURPOSES.len(),
                gen_person(),
                proptest::collection::vec(gen_consent(), 0..3),
            ),
            |(partner, purpose, person, consents)| {
                let got = response(
                    &PolicySet::empty(),
                    PARTNERS[partner],
                    PURPOSES[purpose],
                    &person,
                    &consents,
                    "IND-A",
                    1,
                );
                prop_assert!(got.is_none());
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn adding_a_policy_never_widens_what_another_allows() {
    runner()
        .run(
            &(
                gen_policies(),
                gen_policy(),
                0..PARTNERS.len(),
                0..PURPOSES.len(),
                gen_person(),
                proptest::collection::vec(gen_consent(), 0..3),
            ),
            |(policies, extra, partner, purpose, person, consents)| {
                let (partner_name, purpose_name) = (PARTNERS[partner], PURPOSES[purpose]);
                let before = set_of(&policies);
                let mut more = policies.clone();
                more.push(extra.clone());
                let parsed: Vec<_> = more
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.parse(&format!("policy-{i}")))
                    .collect();
                let overlaps = policies
                    .iter()
                    .any(|p| p.partner == extra.partner && p.purpose == extra.purpose);
                let after = PolicySet::new(parsed);
                if overlaps {
                    // A second policy for a partner and purpose already covered is refused:
                    // it cannot widen the first.
                    prop_assert!(after.is_err());
                    return Ok(());
                }
                let after = after.unwrap();
                if (extra.partner, extra.purpose) == (partner, purpose) {
                    return Ok(());
                }
                let a = response(
                    &before,
                    partner_name,
                    purpose_name,
                    &person,
                    &consents,
                    "IND-A",
                    1,
                );
                let b = response(
                    &after,
                    partner_name,
                    purpose_name,
                    &person,
                    &consents,
                    "IND-A",
                    1,
                );
                prop_assert_eq!(a, b);
                Ok(())
            },
        )
        .unwrap();
}

/// Writes generated people with generated consent rows and compares the store's answer to
/// the records condition with the in-memory decision, for every partner, purpose and basis.
async fn the_store_applies_the_same_records_rule_as_the_decision(t: &TestRegistry) {
    let mut runner = TestRunner::deterministic();
    let people = 24;
    let mut drafts = vec![Draft {
        register: "household".into(),
        functional_id: Some("HH-PROP".into()),
        parent: None,
        status: None,
        fields: json!({"headship_type": "FEMALE_HEADED"})
            .as_object()
            .cloned()
            .unwrap(),
        mode: DraftMode::Replace,
    }];
    let mut consents: Vec<(String, Vec<ConsentRow>)> = Vec::new();
    for n in 0..people {
        let id = format!("IND-PROP{n:02}");
        drafts.push(Draft {
            register: "individual".into(),
            functional_id: Some(id.clone()),
            parent: Some("HH-PROP".into()),
            status: None,
            fields: json!({"first_name": "P", "last_name": format!("{n}"), "gender": "FEMALE"})
                .as_object()
                .cloned()
                .unwrap(),
            mode: DraftMode::Replace,
        });
        let rows = proptest::collection::vec(gen_consent(), 0..3)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for (k, row) in rows.iter().enumerate() {
            drafts.push(Draft {
                register: "consent".into(),
                functional_id: Some(format!("CNS-PROP{n:02}{k}")),
                parent: Some(id.clone()),
                status: Some(if row.active {
                    RecordStatus::Active
                } else {
                    RecordStatus::Archived
                }),
                fields: row.fields.clone(),
                mode: DraftMode::Replace,
            });
        }
        consents.push((id, rows));
    }
    t.registry
        .write(
            &Author {
                actor: "test".into(),
                source: "cli".into(),
                reason: None,
            },
            &drafts,
        )
        .await
        .unwrap();
    for partner in PARTNERS {
        for purpose in PURPOSES {
            for scopes in [None, Some(vec!["dci_sharing".to_owned()])] {
                let policy = GenPolicy {
                    partner: PARTNERS.iter().position(|p| p == partner).unwrap(),
                    purpose: PURPOSES.iter().position(|p| p == purpose).unwrap(),
                    individual: vec!["first_name".into()],
                    disability: vec![],
                    scopes,
                }
                .parse("store");
                let request = Request {
                    partner,
                    purpose,
                    today: today(),
                };
                let filter = decision::records_filter(&policy, "individual", &request).unwrap();
                let page = t
                    .store()
                    .query_records(&RecordQuery {
                        register: "individual".into(),
                        filter: Filter::And(vec![
                            filter,
                            Filter::Compare {
                                target: nsr::registry::query::Target::ParentFunctionalId,
                                op: nsr::registry::query::Op::Eq,
                                value: nsr::registry::query::Scalar::Text("HH-PROP".into()),
                            },
                        ]),
                        sort: Vec::new(),
                        limit: 100,
                        offset: 0,
                        count: false,
                        child_registers: Vec::new(),
                        by_identifier: false,
                    })
                    .await
                    .unwrap();
                let mut from_store: Vec<String> =
                    page.records.into_iter().map(|r| r.functional_id).collect();
                from_store.sort();
                let expected: Vec<String> = consents
                    .iter()
                    .filter(|(_, rows)| {
                        let allowed = consent_allows(&policy.basis, partner, purpose, rows);
                        assert_eq!(
                            decision::individual_eligible(&policy, &request, rows),
                            allowed,
                            "{rows:?}"
                        );
                        allowed
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(
                    from_store, expected,
                    "{partner} {purpose} {:?}",
                    policy.basis
                );
            }
        }
    }
}

on_both_backends!(the_store_applies_the_same_records_rule_as_the_decision);
