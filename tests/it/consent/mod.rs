//! Consent policies and the disclosure log, end to end through the DCI gateway on both
//! backends: a withdrawn or expired consent hides the record from the next search; a record
//! excluded by a data-sharing restriction is answered exactly like an id that does not exist;
//! the disclosure log lists exactly the fields each reply carried (sync, async, transaction
//! status); no policy means nothing is shared; the auditors' API; start-up refuses a bad
//! policy naming file and line, and audits policy changes. `properties` holds the property
//! tests of the decision.

mod properties;

use crate::dci::{Dci, Receiver, SENDER};
use crate::on_both_backends;
use crate::support::TestRegistry;
use chrono::Duration;
use nsr::auth::Role;
use nsr::clock::Clock;
use nsr::consent::DisclosureQuery;
use nsr::registry::record::Fields;
use nsr::registry::{Author, Draft, DraftMode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The policies nsr ships (`consent-policies/`: the realistic, consent-based one).
fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("consent-policies")
}

fn by_uin(uin: &str) -> Value {
    json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": uin}})
}

fn item(reply: &Value) -> &Value {
    &reply["message"]["search_response"][0]
}

fn records(reply: &Value) -> Vec<Value> {
    item(reply)["data"]["reg_records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ids(reply: &Value) -> Vec<String> {
    records(reply)
        .iter()
        .map(|r| {
            r["@id"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:nsr:")
                .to_owned()
        })
        .collect()
}

/// A reply without what differs between any two replies (ids, times, signature).
fn normalized(reply: &Value) -> Value {
    let mut reply = reply.clone();
    reply["signature"] = Value::Null;
    for key in ["message_id", "message_ts"] {
        reply["header"][key] = Value::Null;
    }
    for key in ["transaction_id", "correlation_id"] {
        reply["message"][key] = Value::Null;
    }
    if let Some(items) = reply["message"]["search_response"].as_array_mut() {
        for item in items {
            item["timestamp"] = Value::Null;
        }
    }
    reply
}

/// Patches a record (a consent row) as the registry would after a change request.
async fn patch(t: &TestRegistry, register: &str, id: &str, fields: Value) {
    let fields: Fields = fields.as_object().cloned().unwrap();
    t.registry
        .write(
            &Author {
                actor: "registrant".into(),
                source: "cli".into(),
                reason: Some("consent changed".into()),
            },
            &[Draft {
                register: register.into(),
                functional_id: Some(id.into()),
                parent: None,
                status: None,
                fields,
                mode: DraftMode::Patch,
            }],
        )
        .await
        .unwrap();
}

/// Every leaf of a wire object as a path (the test's own walk, to check the log against).
fn leaves(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let next = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, &next, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                leaves(item, &format!("{path}[]"), out);
            }
        }
        Value::Null => {}
        _ => {
            out.insert(path.to_owned());
        }
    }
}

fn paths(value: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    leaves(value, "", &mut out);
    out.into_iter().collect()
}

/// The disclosure written for the reply with this `message_id`.
async fn disclosure_of(t: &TestRegistry, message_id: &str) -> Option<nsr::consent::Disclosure> {
    let all = t
        .store()
        .disclosures(&DisclosureQuery {
            limit: 500,
            ..DisclosureQuery::default()
        })
        .await
        .unwrap();
    all.into_iter().find(|d| d.message_id == message_id)
}

/// The log entry of each record in `reg_records` equals the record's leaf paths exactly, and
/// each member inside a Group has its own entry with the member object's paths.
fn assert_log_matches(disclosure: &nsr::consent::Disclosure, reg_records: &[Value], purpose: &str) {
    let top: Vec<_> = disclosure
        .records
        .iter()
        .filter(|r| r.within.is_none())
        .collect();
    assert_eq!(top.len(), reg_records.len(), "{disclosure:?}");
    for (entry, record) in top.iter().zip(reg_records) {
        assert_eq!(
            entry.fields,
            paths(record),
            "fields of {}",
            entry.functional_id
        );
        assert_eq!(entry.purpose, purpose);
        if let Some(id) = record["@id"].as_str() {
            assert_eq!(id.trim_start_matches("urn:nsr:"), entry.functional_id);
        }
        for member in record["member_list"].as_array().into_iter().flatten() {
            let fid = member["@id"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:nsr:");
            let logged = disclosure
                .records
                .iter()
                .find(|r| {
                    r.functional_id == fid && r.within.as_deref() == Some(&entry.functional_id)
                })
                .unwrap_or_else(|| panic!("member {fid} not logged"));
            let mut expected: BTreeSet<String> = paths(member).into_iter().collect();
            if record["group_head_info"]["@id"] == member["@id"] {
                expected.extend(paths(&record["group_head_info"]));
            }
            assert_eq!(logged.fields, expected.into_iter().collect::<Vec<_>>());
        }
    }
}

async fn withdrawn_or_expired_consent_hides_the_record_from_the_next_search(t: &TestRegistry) {
    let dci = Dci::with_policies(t, &shipped_policies()).await;
    let token = dci.token().await;
    let (status, before) = dci.sync_search(&token, by_uin("FID-00000001")).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(ids(&before), ["IND-NSR-0001"]);

    // The registrant withdraws consent today: the very next search no longer finds them,
    // and answers exactly as for an id nobody has.
    let today = t.clock.now().date_naive().to_string();
    patch(
        t,
        "consent",
        "CNS-NSR-0001",
        json!({"consent_withdrawn_date": today}),
    )
    .await;
    let (_, after) = dci.sync_search(&token, by_uin("FID-00000001")).await;
    assert_eq!(item(&after)["status"], "succ", "{after}");
    assert!(records(&after).is_empty(), "{after}");
    let (_, nobody) = dci.sync_search(&token, by_uin("FID-99999999")).await;
    assert_eq!(normalized(&after), normalized(&nobody));

    // Consent that expires: found until the expiry date, not from it on.
    let expiry = (t.clock.now() + Duration::days(3)).date_naive().to_string();
    patch(
        t,
        "consent",
        "CNS-NSR-0002",
        json!({"consent_expiry_date": expiry}),
    )
    .await;
    let (_, valid) = dci.sync_search(&token, by_uin("FID-00000002")).await;
    assert_eq!(ids(&valid), ["IND-NSR-0002"]);
    t.clock.advance(Duration::days(3));
    let token = dci.token().await;
    let (_, expired) = dci.sync_search(&token, by_uin("FID-00000002")).await;
    assert!(records(&expired).is_empty(), "{expired}");

    // A consent that does not cover DCI sharing (scope social_protection only) or was never
    // captured is not consent for this policy.
    let (_, other_scope) = dci.sync_search(&token, by_uin("FID-00000010")).await;
    assert!(records(&other_scope).is_empty(), "{other_scope}");
    let (_, not_captured) = dci.sync_search(&token, by_uin("FID-00000014")).await;
    assert!(records(&not_captured).is_empty(), "{not_captured}");
}

async fn a_restricted_record_is_answered_like_an_id_that_does_not_exist(t: &TestRegistry) {
    // The test policy: every field, on a legal basis (no consent needed), restrictions apply.
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let members_of_hh1 = json!({
        "query_type": "expression",
        "response_entity": "Member",
        "query": {"type": "ns:org:QueryType:expression", "value": {"expression": {"collection": "Member", "query": {"household_id": {"$eq": "HH-NSR-0001"}}}}},
        "pagination": {"page_size": 2, "page_number": 1},
    });
    let (_, before) = dci.sync_search(&token, members_of_hh1.clone()).await;
    let total_before = item(&before)["pagination"]["total_count"].as_u64().unwrap();
    assert!(total_before >= 2, "{before}");
    let (_, found) = dci.sync_search(&token, by_uin("FID-00000001")).await;
    assert_eq!(ids(&found), ["IND-NSR-0001"]);

    // A restriction naming another partner changes nothing for this one.
    let (_, other) = dci.sync_search(&token, by_uin("FID-00000007")).await;
    assert_eq!(
        ids(&other),
        ["IND-NSR-0007"],
        "restricted for credit-bureau only"
    );

    // IND-NSR-0001 excludes this partner for this purpose.
    patch(
        t,
        "consent",
        "CNS-NSR-0001",
        json!({"data_sharing_restrictions": [{"partner": SENDER, "purpose": "social_protection"}]}),
    )
    .await;
    let (_, restricted) = dci.sync_search(&token, by_uin("FID-00000001")).await;
    let (_, nobody) = dci.sync_search(&token, by_uin("FID-99999999")).await;
    assert!(records(&restricted).is_empty());
    assert_eq!(normalized(&restricted), normalized(&nobody));

    // Nor does it count in a population query's total, nor fill a page.
    let (_, after) = dci.sync_search(&token, members_of_hh1).await;
    assert_eq!(
        item(&after)["pagination"]["total_count"].as_u64().unwrap(),
        total_before - 1,
        "{after}"
    );
    assert!(!ids(&after).contains(&"IND-NSR-0001".to_owned()));

    // Their household (a Group lists every member) is not shared either: answered like a
    // household that does not exist.
    let group = |id: &str| json!({"query_type": "idtype-value", "response_entity": "Group", "query": {"type": "HOUSEHOLD_ID", "value": id}});
    let (_, household) = dci.sync_search(&token, group("HH-NSR-0001")).await;
    let (_, no_household) = dci.sync_search(&token, group("HH-NSR-9999")).await;
    assert!(records(&household).is_empty(), "{household}");
    assert_eq!(normalized(&household), normalized(&no_household));
    // Another household is.
    let (_, household2) = dci.sync_search(&token, group("HH-NSR-0002")).await;
    assert_eq!(ids(&household2), ["HH-NSR-0002"]);

    // A restriction for every partner ("*") on this purpose applies as well.
    patch(
        t,
        "consent",
        "CNS-NSR-0002",
        json!({"data_sharing_restrictions": [{"partner": "*", "purpose": "social_protection"}]}),
    )
    .await;
    let (_, starred) = dci.sync_search(&token, by_uin("FID-00000002")).await;
    assert!(records(&starred).is_empty());
}

async fn the_disclosure_log_lists_exactly_the_fields_each_reply_carried(t: &TestRegistry) {
    // The realistic policy: about twenty fields, consent required.
    let dci = Dci::with_policies(t, &shipped_policies()).await;
    let token = dci.token().await;
    let (_, reply) = dci.sync_search(&token, by_uin("FID-00000009")).await;
    let sent = records(&reply);
    assert_eq!(ids(&reply), ["IND-NSR-0009"]);
    let member = &sent[0];
    // Granted: name, sex, disability rows; not granted: occupation, education, e-mail.
    assert!(member["demographic_info"]["name"]["given_name"].is_string());
    assert!(member["disability_info"].is_array());
    for absent in [
        "nsr:occupation",
        "nsr:education_level",
        "language_code",
        "last_updated",
    ] {
        assert!(member.get(absent).is_none(), "{absent} was sent: {member}");
    }
    assert!(member["demographic_info"].get("email").is_none());
    let message_id = reply["header"]["message_id"].as_str().unwrap();
    let disclosure = disclosure_of(t, message_id).await.expect("logged");
    assert_eq!(disclosure.partner, SENDER);
    assert_eq!(disclosure.action, "on-search");
    assert_eq!(disclosure.purposes, ["social_protection"]);
    assert_eq!(
        disclosure.transaction_id,
        reply["message"]["transaction_id"].as_str().unwrap()
    );
    assert_log_matches(&disclosure, &sent, "social_protection");
    // The policy's allowed fields bound what was sent: nothing outside the granted paths.
    for path in &disclosure.records[0].fields {
        assert!(
            !path.contains("occupation") && !path.contains("email") && !path.contains("education"),
            "{path}"
        );
    }

    // The disclosure chain covers the entry: an entry carries its digest, and, once anchored in
    // the registry's chain, both chains hold.
    let chained = t.store().disclosure_audit_entries(0, 10_000).await.unwrap();
    let audit = chained
        .iter()
        .find(|e| e.action == "disclosure" && e.subject == disclosure.id.to_string())
        .expect("audited");
    let detail: Value = serde_json::from_str(&audit.detail).unwrap();
    assert_eq!(detail["digest"], disclosure.digest());
    let anchored = t.registry.anchor_disclosures(0).await.unwrap();
    assert_eq!(anchored, chained.len() as i64);
    let entries = t.store().audit_entries(0, 10_000).await.unwrap();
    assert_eq!(
        t.registry.verify_audit().await.unwrap(),
        Ok(entries.len() as i64)
    );

    // A reply that answers nothing (every item rejected) discloses nothing and is not logged.
    let (_, rejected) = dci
        .sync_search(&token, json!({"consent": {"purpose": {"code": "marketing"}}, "query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}}))
        .await;
    assert_eq!(
        item(&rejected)["status_reason_code"],
        "rjct.search_criteria.invalid"
    );
    assert!(
        item(&rejected)["status_reason_message"]
            .as_str()
            .unwrap()
            .contains("no consent policy")
    );
    assert!(
        disclosure_of(t, rejected["header"]["message_id"].as_str().unwrap())
            .await
            .is_none()
    );
}

async fn groups_and_their_members_are_logged_field_by_field(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "response_entity": "Group", "query": {"type": "HOUSEHOLD_ID", "value": "HH-NSR-0002"}}),
        )
        .await;
    let sent = records(&reply);
    assert_eq!(ids(&reply), ["HH-NSR-0002"]);
    assert!(
        sent[0]["member_list"]
            .as_array()
            .is_some_and(|m| m.len() >= 2)
    );
    let disclosure = disclosure_of(t, reply["header"]["message_id"].as_str().unwrap())
        .await
        .expect("logged");
    assert_log_matches(&disclosure, &sent, "social_protection");
    // Each member can find the disclosure by their own id.
    let member = sent[0]["member_list"][0]["@id"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:nsr:")
        .to_owned();
    let theirs = nsr::consent::log::disclosures_of(t.store().as_ref(), &member, 0, 10)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    assert!(theirs[0].records.iter().all(|r| r.functional_id == member));
}

async fn with_no_policy_nothing_is_shared(t: &TestRegistry) {
    let empty = tempfile::tempdir().unwrap();
    let dci = Dci::with_policies(t, empty.path()).await;
    let token = dci.token().await;
    for criteria in [
        by_uin("FID-00000001"),
        json!({"query_type": "expression", "query": {"value": {"expression": {"query": {"birth_date": {"$gt": "1900-01-01"}}}}}, "pagination": {"page_size": 5}}),
    ] {
        let (status, reply) = dci.sync_search(&token, criteria).await;
        assert_eq!(status, 200);
        assert_eq!(item(&reply)["status"], "rjct", "{reply}");
        assert_eq!(
            item(&reply)["status_reason_code"],
            "rjct.search_criteria.invalid"
        );
        assert!(
            item(&reply)["status_reason_message"]
                .as_str()
                .unwrap()
                .contains("no consent policy lets this partner")
        );
        assert!(item(&reply).get("data").is_none());
    }
    let logged = t
        .store()
        .disclosures(&DisclosureQuery {
            limit: 10,
            ..DisclosureQuery::default()
        })
        .await
        .unwrap();
    assert!(logged.is_empty());
}

async fn async_callbacks_and_status_replies_pass_the_same_decision(t: &TestRegistry) {
    let dci = Dci::with_policies(t, &shipped_policies()).await;
    let token = dci.token().await;
    let (receiver, base) = Receiver::start().await;
    let message = dci.search_message(vec![dci.search_item("a-1", by_uin("FID-00000001"))]);
    let transaction_id = message["transaction_id"].as_str().unwrap().to_owned();
    let mut header = dci.header("search", 1);
    header["sender_uri"] = json!(format!("{base}/on-search"));
    let (status, ack) = dci
        .post("/registry/search", &token, &dci.envelope(&header, &message))
        .await;
    assert_eq!(
        (status, ack["message"]["ack_status"].as_str()),
        (202, Some("ACK")),
        "{ack}"
    );
    dci.worker().run_once().await.unwrap();
    assert!(
        receiver
            .wait_until(std::time::Duration::from_secs(10), |r| r.count() >= 1)
            .await
    );
    let callback = receiver.all()[0].clone();
    let sent = callback["message"]["search_response"][0]["data"]["reg_records"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].get("nsr:occupation").is_none(),
        "field outside the policy sent"
    );
    assert!(
        callback["message"]["search_response"][0]
            .get("@nsr-purpose")
            .is_none()
    );
    assert!(
        !callback.to_string().contains("@nsr-record"),
        "marker leaked"
    );
    let logged = disclosure_of(t, callback["header"]["message_id"].as_str().unwrap())
        .await
        .expect("the callback is logged");
    assert_eq!(logged.action, "on-search");
    assert_log_matches(&logged, &sent, "social_protection");

    // Transaction status replays the stored result: fields cut the same way, logged.
    let status_request = |dci: &Dci<'_>| {
        json!({
            "transaction_id": dci.next_id("status"),
            "txnstatus_request": {"reference_id": "s-1", "txn_type": "search", "attribute_type": "transaction_id", "attribute_value": transaction_id},
        })
    };
    let message = status_request(&dci);
    let (status, replay) = dci
        .post(
            "/registry/sync/txn/status",
            &token,
            &dci.envelope(&dci.header("txn-status", 1), &message),
        )
        .await;
    assert_eq!(status, 200, "{replay}");
    let items = &replay["message"]["txnstatus_response"]["txn_status"]["search_response"];
    assert_eq!(items[0]["data"]["reg_records"], json!(sent));
    let logged = disclosure_of(t, replay["header"]["message_id"].as_str().unwrap())
        .await
        .expect("the status reply is logged");
    assert_eq!(logged.action, "txn-on-status");
    assert_log_matches(&logged, &sent, "social_protection");

    // The async status request: its callback carries the same records, logged.
    let message = status_request(&dci);
    let mut header = dci.header("txn-status", 1);
    header["sender_uri"] = json!(format!("{base}/txn-on-status"));
    let (status, ack) = dci
        .post(
            "/registry/txn/status",
            &token,
            &dci.envelope(&header, &message),
        )
        .await;
    assert_eq!(status, 202, "{ack}");
    dci.worker().run_once().await.unwrap();
    assert!(
        receiver
            .wait_until(std::time::Duration::from_secs(10), |r| r.count() >= 2)
            .await
    );
    let callback = receiver.all()[1].clone();
    assert_eq!(callback["header"]["action"], "txn-on-status");
    let items = &callback["message"]["txnstatus_response"]["txn_status"]["search_response"];
    assert_eq!(items[0]["data"]["reg_records"], json!(sent));
    let logged = disclosure_of(t, callback["header"]["message_id"].as_str().unwrap())
        .await
        .expect("the status callback is logged");
    assert_eq!(logged.action, "txn-on-status");
    assert_log_matches(&logged, &sent, "social_protection");

    // Consent withdrawn: the next status reply no longer carries the record.
    let today = t.clock.now().date_naive().to_string();
    patch(
        t,
        "consent",
        "CNS-NSR-0001",
        json!({"consent_withdrawn_date": today}),
    )
    .await;
    let message = status_request(&dci);
    let (_, replay) = dci
        .post(
            "/registry/sync/txn/status",
            &token,
            &dci.envelope(&dci.header("txn-status", 1), &message),
        )
        .await;
    let items = &replay["message"]["txnstatus_response"]["txn_status"]["search_response"];
    assert_eq!(items[0]["data"]["reg_records"], json!([]), "{replay}");
    let logged = disclosure_of(t, replay["header"]["message_id"].as_str().unwrap())
        .await
        .expect("logged");
    assert!(logged.records.is_empty());
}

async fn auditors_list_disclosures_by_registrant_partner_and_period(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let start = t.clock.now();
    dci.sync_search(&token, by_uin("FID-00000001")).await;
    t.clock.advance(Duration::hours(1));
    let token = dci.token().await;
    dci.sync_search(&token, by_uin("FID-00000002")).await;

    let staff = |roles: &[Role], name: &str| {
        let auth = dci.auth.clone();
        let roles = roles.to_vec();
        let name = name.to_owned();
        async move {
            let user = auth
                .users()
                .add("test-admin", &name, "a long passphrase here", &roles)
                .await
                .unwrap();
            auth.issue_token(&user).unwrap().token
        }
    };
    let auditor = staff(&[Role::Auditor], "audit-ana").await;
    let viewer = staff(&[Role::Viewer], "view-vic").await;
    let get = |path: String, token: String| {
        let dci = &dci;
        async move {
            dci.send(
                axum::http::Request::get(path)
                    .header("authorization", format!("Bearer {token}"))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
        }
    };
    let (status, all) = get("/api/v1/disclosures".into(), auditor.clone()).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["disclosures"].as_array().unwrap().len(), 2);
    let (_, one) = get(
        "/api/v1/disclosures?registrant=IND-NSR-0001".into(),
        auditor.clone(),
    )
    .await;
    let listed = one["disclosures"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["records"][0]["functional_id"], "IND-NSR-0001");
    assert_eq!(listed[0]["partner"], SENDER);
    let (_, by_partner) = get(
        "/api/v1/disclosures?partner=someone.else".into(),
        auditor.clone(),
    )
    .await;
    assert!(by_partner["disclosures"].as_array().unwrap().is_empty());
    let until = (start + Duration::minutes(30))
        .to_rfc3339()
        .replace('+', "%2B");
    let (_, early) = get(format!("/api/v1/disclosures?to={until}"), auditor.clone()).await;
    let early = early["disclosures"].as_array().unwrap();
    assert_eq!(early.len(), 1, "{early:?}");
    assert_eq!(early[0]["records"][0]["functional_id"], "IND-NSR-0001");
    let (_, own) = get(
        "/api/v1/registrants/IND-NSR-0002/disclosures".into(),
        auditor.clone(),
    )
    .await;
    assert_eq!(own["disclosures"].as_array().unwrap().len(), 1, "{own}");
    let (status, _) = get("/api/v1/disclosures".into(), viewer).await;
    assert_eq!(status, 403);
}

async fn start_up_refuses_a_bad_policy_naming_file_and_line_and_audits_changes(t: &TestRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(shipped_policies().join("spmis-targeting.yaml")).unwrap();
    std::fs::write(dir.path().join("spmis.yaml"), &good).unwrap();
    let config = nsr::config::Config {
        consent_policies_dir: dir.path().to_path_buf(),
        ..crate::dci::config()
    };
    let keys = std::sync::Arc::new(
        nsr::crypto::KeyStore::open_or_init(&t.dir.path().join("keys"), t.clock.now())
            .unwrap()
            .0,
    );
    let audited = |t: &TestRegistry| {
        let store = t.store().clone();
        async move {
            store
                .audit_entries(0, 10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.action == "consent_policies")
                .collect::<Vec<_>>()
        }
    };
    nsr::cli::open_gateway(&config, &t.registry, keys.clone())
        .await
        .unwrap();
    let first = audited(t).await;
    assert_eq!(first.len(), 1);
    assert!(
        first[0].detail.contains("spmis-targeting"),
        "{}",
        first[0].detail
    );
    // The same policies again: nothing new to audit.
    nsr::cli::open_gateway(&config, &t.registry, keys.clone())
        .await
        .unwrap();
    assert_eq!(audited(t).await.len(), 1);
    // A changed policy is audited, naming it as changed.
    std::fs::write(
        dir.path().join("spmis.yaml"),
        good.replace("max_page_size: 20", "max_page_size: 10"),
    )
    .unwrap();
    nsr::cli::open_gateway(&config, &t.registry, keys.clone())
        .await
        .unwrap();
    let after = audited(t).await;
    assert_eq!(after.len(), 2);
    let detail: Value = serde_json::from_str(&after[1].detail).unwrap();
    assert!(detail["changed"]["spmis-targeting"].is_object(), "{detail}");

    // An unknown field stops start-up, naming the file and the line.
    let bad = good.replace("    - middle_name\n", "    - middle_nam\n");
    let line = bad.lines().position(|l| l.contains("middle_nam")).unwrap() + 1;
    std::fs::write(dir.path().join("spmis.yaml"), bad).unwrap();
    let error = nsr::cli::open_gateway(&config, &t.registry, keys)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains(&format!("spmis.yaml:{line}:")) && error.contains("middle_nam"),
        "{error}"
    );
}

async fn a_policy_bounds_query_types_page_size_and_searchable_fields(t: &TestRegistry) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lookups.yaml"),
        format!(
            "partners: [{SENDER}]\npurposes: [social_protection]\nquery_types: [idtype-value]\n\
             consent:\n  required: false\n  legal_basis: Test Act s. 1\nmax_page_size: 2\n\
             registers:\n  individual: [$functional_id, first_name, last_name]\n"
        ),
    )
    .unwrap();
    let dci = Dci::with_policies(t, dir.path()).await;
    let token = dci.token().await;
    // Population queries are not granted.
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "expression", "query": {"value": {"expression": {"query": {"member_id": {"$eq": "IND-NSR-0001"}}}}}}),
        )
        .await;
    assert_eq!(item(&reply)["status"], "rjct");
    assert!(
        item(&reply)["status_reason_message"]
            .as_str()
            .unwrap()
            .contains("does not allow query_type `expression`"),
        "{reply}"
    );
    // The policy's page limit (2) binds below the gateway's (10).
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "query": {"type": "NSR_ID", "value": "IND-NSR-0001"}, "pagination": {"page_size": 3}}),
        )
        .await;
    assert_eq!(
        item(&reply)["status_reason_code"],
        "rjct.pagination.invalid",
        "{reply}"
    );
    // A field it may not receive cannot be searched on either (UIN is foundational_id).
    let (_, reply) = dci.sync_search(&token, by_uin("FID-00000001")).await;
    assert_eq!(item(&reply)["status"], "rjct", "{reply}");
    // What it may use works, and sends only the granted fields.
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "query": {"type": "NSR_ID", "value": "IND-NSR-0001"}}),
        )
        .await;
    let sent = records(&reply);
    assert_eq!(ids(&reply), ["IND-NSR-0001"]);
    let mut expected = BTreeSet::new();
    leaves(&sent[0], "", &mut expected);
    let data: Vec<String> = expected
        .into_iter()
        .filter(|p| !p.starts_with("@context") && !p.ends_with("@type"))
        .collect();
    assert_eq!(
        data,
        [
            "@id",
            "demographic_info.name.given_name",
            "demographic_info.name.surname",
            "member_identifier[].identifier_type",
            "member_identifier[].identifier_value",
        ],
        "{}",
        sent[0]
    );
    assert_eq!(
        sent[0]["member_identifier"],
        json!([{"@type": "Identifier", "identifier_type": "NSR_ID", "identifier_value": "IND-NSR-0001"}])
    );
}

async fn the_disclosure_log_refuses_updates_and_deletes(t: &TestRegistry) {
    use sqlx::Connection;
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    dci.sync_search(&token, by_uin("FID-00000001")).await;
    let registrants = if t.url.starts_with("sqlite:") {
        [
            "update disclosure_registrant_index set registrants = 'aa'",
            "delete from disclosure_registrant_index",
        ]
    } else {
        [
            "update disclosure_registrant set functional_id = 'IND-X'",
            "delete from disclosure_registrant",
        ]
    };
    let statements = [
        "update disclosure set partner = 'someone-else'",
        "delete from disclosure",
    ];
    for sql in statements.into_iter().chain(registrants) {
        let refused = if t.url.starts_with("sqlite:") {
            // The log's own file (store::sqlite, DISCLOSURE_SCHEMA).
            let url = format!("{}.disclosures", t.url);
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.is_err()
        } else {
            let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.is_err()
        };
        assert!(refused, "{sql} was allowed");
    }
    let logged = t
        .store()
        .disclosures(&DisclosureQuery {
            limit: 10,
            ..DisclosureQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].partner, SENDER);
}

async fn a_reply_whose_disclosure_cannot_be_logged_is_not_sent(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let audit_before = t.store().disclosure_audit_head().await.unwrap();
    // The log's registrant index is gone: the entry cannot be written whole.
    t.execute_raw_on_disclosures(if t.url.starts_with("sqlite:") {
        "drop table disclosure_registrant_index"
    } else {
        "drop table disclosure_registrant"
    })
    .await;
    let message = dci.search_message(vec![dci.search_item("r-1", by_uin("FID-00000001"))]);
    let envelope = dci.envelope(&dci.header("search", 1), &message);
    let (status, reply) = dci.post("/registry/sync/search", &token, &envelope).await;
    assert_eq!(status, 500, "{reply}");
    assert!(!reply.to_string().contains("FID-00000001"), "{reply}");
    assert!(reply.get("message").is_none() || reply["message"].get("search_response").is_none());
    // Nothing of it was written: no entry, no chain entry.
    let logged = t
        .store()
        .disclosures(&DisclosureQuery {
            limit: 10,
            ..DisclosureQuery::default()
        })
        .await
        .unwrap();
    assert!(logged.is_empty());
    assert_eq!(
        t.store().disclosure_audit_head().await.unwrap(),
        audit_before
    );
    assert!(
        t.store()
            .disclosure_audit_entries(0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A disclosure to [`SENDER`] for social protection, as the gateway would log it, for tests of
/// the log itself: message `m-<tag>`, transaction `t-<tag>`, correlation `c-<tag>`.
pub(crate) fn made_up_disclosure(
    at: chrono::DateTime<chrono::Utc>,
    tag: &str,
    records: Vec<nsr::consent::DisclosedRecord>,
) -> nsr::consent::Disclosure {
    nsr::consent::Disclosure {
        id: uuid::Uuid::now_v7(),
        at,
        partner: SENDER.into(),
        action: "on-search".into(),
        message_id: format!("m-{tag}"),
        transaction_id: format!("t-{tag}"),
        correlation_id: format!("c-{tag}"),
        purposes: vec!["social_protection".into()],
        records,
    }
}

/// A Member record of a disclosure, answering item `r-1`, with the wire paths `fields`.
fn disclosed_member(functional_id: &str, fields: &[&str]) -> nsr::consent::DisclosedRecord {
    nsr::consent::DisclosedRecord {
        reference_id: "r-1".into(),
        purpose: "social_protection".into(),
        entity: "Member".into(),
        functional_id: functional_id.into(),
        record_id: None,
        within: None,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

async fn a_registrant_finds_exactly_the_disclosures_that_carried_it(t: &TestRegistry) {
    // Ids that share a prefix, differ only in case, or hold characters a word index splits
    // on: each finds its own disclosures and no other's.
    let now = t.clock.now();
    let ids = ["IND-A", "IND-AB", "IND-a", "HH-A B/ç.1", "IND-A-B"];
    let mut entries = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let entry = made_up_disclosure(
            now,
            &format!("r{i}"),
            vec![disclosed_member(id, &["name.given_name"])],
        );
        t.store().insert_disclosure(entry.clone()).await.unwrap();
        entries.push(entry);
    }
    // A household with a member inside: both are registrants of the one disclosure.
    let mut household = disclosed_member("HH-A", &["group_identifier[].identifier_value"]);
    household.entity = "Group".into();
    let mut member = disclosed_member("IND-A", &["member_list[].name.given_name"]);
    member.within = Some("HH-A".into());
    let group = made_up_disclosure(now, "group", vec![household, member]);
    t.store().insert_disclosure(group.clone()).await.unwrap();
    let by_registrant = |registrant: &str| DisclosureQuery {
        registrant: Some(registrant.into()),
        limit: 10,
        ..DisclosureQuery::default()
    };
    for (id, entry) in ids.iter().zip(&entries) {
        let mut wanted = vec![entry.clone()];
        if *id == "IND-A" {
            wanted.insert(0, group.clone());
        }
        let found = t.store().disclosures(&by_registrant(id)).await.unwrap();
        assert_eq!(found, wanted, "{id}");
    }
    assert_eq!(
        t.store().disclosures(&by_registrant("HH-A")).await.unwrap(),
        vec![group.clone()]
    );
    for unknown in ["IND", "A", "IND-ABC", "hh-a", ""] {
        assert!(
            t.store()
                .disclosures(&by_registrant(unknown))
                .await
                .unwrap()
                .is_empty(),
            "{unknown}"
        );
    }
}

async fn disclosures_written_together_are_each_logged_and_chained(t: &TestRegistry) {
    // Replies answered at the same moment are committed together (group commit): each entry
    // keeps its own registrants and its own entry, in one unbroken disclosure chain.
    let audit_before = t
        .store()
        .disclosure_audit_entries(0, 10_000)
        .await
        .unwrap()
        .len();
    let registry_before = t.store().audit_head().await.unwrap();
    let now = t.clock.now();
    let entries: Vec<nsr::consent::Disclosure> = (0..24)
        .map(|i| {
            let records = (0..=i % 3)
                .map(|j| {
                    disclosed_member(
                        &format!("IND-{i}-{j}"),
                        &[&format!("field_{j}"), "identifier[].identifier_value"],
                    )
                })
                .collect();
            made_up_disclosure(now, &i.to_string(), records)
        })
        .collect();
    let writes: Vec<_> = entries
        .iter()
        .map(|entry| {
            let (store, entry) = (t.store().clone(), entry.clone());
            tokio::spawn(async move { store.insert_disclosure(entry.clone()).await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }

    let audit = t.store().disclosure_audit_entries(0, 10_000).await.unwrap();
    assert_eq!(audit.len(), audit_before + entries.len());
    for entry in &entries {
        let listed = t
            .store()
            .disclosures(&DisclosureQuery {
                registrant: Some(entry.records[0].functional_id.clone()),
                limit: 10,
                ..DisclosureQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, std::slice::from_ref(entry));
        for record in &entry.records {
            let by_registrant = t
                .store()
                .disclosures(&DisclosureQuery {
                    registrant: Some(record.functional_id.clone()),
                    limit: 10,
                    ..DisclosureQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(by_registrant.len(), 1, "{}", record.functional_id);
        }
        let covering: Vec<_> = audit
            .iter()
            .filter(|a| a.action == "disclosure" && a.subject == entry.id.to_string())
            .collect();
        assert_eq!(covering.len(), 1);
        let detail: Value = serde_json::from_str(&covering[0].detail).unwrap();
        assert_eq!(detail["digest"], entry.digest());
    }
    let seqs: Vec<i64> = audit.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=audit.len() as i64).collect::<Vec<_>>());
    // None of them went into the registry's chain.
    assert_eq!(
        t.registry.verify_audit().await.unwrap(),
        Ok(registry_before)
    );
    assert_eq!(t.store().audit_head().await.unwrap(), registry_before);
}

async fn the_disclosure_chain_is_anchored_in_the_audit_chain_and_verified(t: &TestRegistry) {
    use nsr::registry::audit::{ANCHOR_ACTION, ChainBreak, entry_hash};
    let now = t.clock.now();
    for i in 0..3 {
        let entry = made_up_disclosure(
            now,
            &i.to_string(),
            vec![disclosed_member(&format!("IND-{i}"), &["name.given_name"])],
        );
        t.store().insert_disclosure(entry.clone()).await.unwrap();
    }
    let registry_head = t.store().audit_head().await.unwrap();
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(registry_head));

    // One anchor names the disclosure chain's last entry and its hash; anchoring again with
    // nothing new writes nothing, whatever the caller remembers.
    assert_eq!(t.registry.anchor_disclosures(0).await.unwrap(), 3);
    let chain = t.store().disclosure_audit_entries(0, 10).await.unwrap();
    assert_eq!(chain.len(), 3);
    let anchor = t
        .store()
        .audit_entries(registry_head, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(anchor.seq, registry_head + 1);
    assert_eq!(anchor.action, ANCHOR_ACTION);
    let detail: Value = serde_json::from_str(&anchor.detail).unwrap();
    assert_eq!(detail, json!({"seq": 3, "hash": chain[2].hash}));
    assert_eq!(t.registry.anchor_disclosures(3).await.unwrap(), 3);
    assert_eq!(t.registry.anchor_disclosures(0).await.unwrap(), 3);
    assert_eq!(t.store().audit_head().await.unwrap(), anchor.seq);
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(anchor.seq));

    // An edited disclosure-chain entry breaks that chain.
    t.execute_raw_on_disclosures("update disclosure_audit_log set actor = 'mallory' where seq = 2")
        .await;
    let broken = t.registry.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(
        broken,
        ChainBreak::Disclosures(Box::new(ChainBreak::Edited { seq: 2 }))
    );
    assert_eq!(
        broken.to_string(),
        "the disclosure chain is broken: audit entry 2 was edited: its hash does not match its content"
    );
    t.execute_raw_on_disclosures(&format!(
        "update disclosure_audit_log set actor = '{}' where seq = 2",
        chain[1].actor
    ))
    .await;
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(anchor.seq));

    // Entry 3 rewritten and rehashed, head and all: the disclosure chain alone holds, the
    // anchor does not.
    let forged = entry_hash(
        3,
        chain[2].at,
        &chain[2].actor,
        &chain[2].action,
        &chain[2].subject,
        "{\"digest\":\"forged\"}",
        &chain[2].prev_hash,
    );
    t.execute_raw_on_disclosures(&format!(
        "update disclosure_audit_log set detail = '{{\"digest\":\"forged\"}}', hash = '{forged}' where seq = 3"
    ))
    .await;
    t.execute_raw_on_disclosures(&format!(
        "update disclosure_audit_head set hash = '{forged}' where id = 1"
    ))
    .await;
    assert_eq!(
        t.registry.verify_audit().await.unwrap(),
        Err(ChainBreak::Anchor {
            anchor: anchor.seq,
            seq: 3
        })
    );

    // Entry 3 removed and the head rewound to 2: the anchor names an entry that is gone.
    t.execute_raw_on_disclosures("delete from disclosure_audit_log where seq = 3")
        .await;
    t.execute_raw_on_disclosures(&format!(
        "update disclosure_audit_head set seq = 2, hash = '{}' where id = 1",
        chain[1].hash
    ))
    .await;
    let broken = t.registry.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(
        broken,
        ChainBreak::Anchor {
            anchor: anchor.seq,
            seq: 3
        }
    );
    assert!(
        broken.to_string().contains("rewritten or cut short"),
        "{broken}"
    );
}

on_both_backends!(
    a_registrant_finds_exactly_the_disclosures_that_carried_it,
    disclosures_written_together_are_each_logged_and_chained,
    the_disclosure_chain_is_anchored_in_the_audit_chain_and_verified,
    a_reply_whose_disclosure_cannot_be_logged_is_not_sent,
    a_policy_bounds_query_types_page_size_and_searchable_fields,
    the_disclosure_log_refuses_updates_and_deletes,
    withdrawn_or_expired_consent_hides_the_record_from_the_next_search,
    a_restricted_record_is_answered_like_an_id_that_does_not_exist,
    the_disclosure_log_lists_exactly_the_fields_each_reply_carried,
    groups_and_their_members_are_logged_field_by_field,
    with_no_policy_nothing_is_shared,
    async_callbacks_and_status_replies_pass_the_same_decision,
    auditors_list_disclosures_by_registrant_partner_and_period,
    start_up_refuses_a_bad_policy_naming_file_and_line_and_audits_changes,
);

/// On SQLite the disclosure log moved to a file of its own: what an older nsr logged in the
/// main file is copied over when the store opens, and listed as before.
#[tokio::test]
async fn sqlite_adopts_disclosures_logged_in_the_main_file() {
    let t = TestRegistry::new(crate::support::Db::Sqlite).await.unwrap();
    let earlier = made_up_disclosure(
        t.clock.now(),
        "earlier",
        vec![disclosed_member("IND-EARLIER", &["name.given_name"])],
    );
    let document = serde_json::to_string(&earlier).unwrap();
    t.execute_raw(&format!(
        "insert into disclosure (disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, document, digest) \
         values ('{}', '2026-11-01T09:00:00.000000Z', '{SENDER}', 'on-search', 'm-earlier', 't-earlier', 'c-earlier', '{document}', '{}')",
        earlier.id,
        earlier.digest(),
    ))
    .await;
    t.execute_raw(&format!(
        "insert into disclosure_registrant (disclosure_id, functional_id) values ('{}', 'IND-EARLIER')",
        earlier.id
    ))
    .await;
    let by_registrant = DisclosureQuery {
        registrant: Some("IND-EARLIER".into()),
        limit: 10,
        ..DisclosureQuery::default()
    };
    // The open store's disclosure file was made, empty, before the row went in.
    assert!(
        t.store()
            .disclosures(&by_registrant)
            .await
            .unwrap()
            .is_empty()
    );
    std::fs::remove_file(t.dir.path().join("nsr.sqlite3.disclosures")).unwrap();
    let reopened = nsr::store::open(&t.url, 2).await.unwrap();
    assert_eq!(
        reopened.disclosures(&by_registrant).await.unwrap(),
        vec![earlier.clone()]
    );
    // Once only: opening again copies nothing twice.
    let again = nsr::store::open(&t.url, 2).await.unwrap();
    assert_eq!(
        again.disclosures(&by_registrant).await.unwrap(),
        vec![earlier]
    );
}

/// A disclosure file written before the registrant index kept one row per disclosure and
/// registrant in a table: opening it moves them into the index, once, and drops the table.
#[tokio::test]
async fn sqlite_moves_a_disclosure_files_registrant_rows_into_its_index() {
    use sqlx::Connection;
    let t = TestRegistry::new(crate::support::Db::Sqlite).await.unwrap();
    let now = t.clock.now();
    let first = made_up_disclosure(
        now,
        "first",
        vec![
            disclosed_member("IND-ONE", &["name.given_name"]),
            disclosed_member("IND-TWO", &["name.surname"]),
        ],
    );
    let second = made_up_disclosure(
        now,
        "second",
        vec![disclosed_member("IND-TWO", &["name.given_name"])],
    );
    // The earlier layout: no index, the table with its append-only triggers.
    t.execute_raw_on_disclosures("drop table disclosure_registrant_index")
        .await;
    for statement in [
        "create table disclosure_registrant (disclosure_id text not null references disclosure (disclosure_id), \
         functional_id text not null, primary key (disclosure_id, functional_id))",
        "create index disclosure_registrant_lookup on disclosure_registrant (functional_id)",
        "create trigger disclosure_registrant_no_delete before delete on disclosure_registrant \
         begin select raise(abort, 'the disclosure log is append-only'); end",
    ] {
        t.execute_raw_on_disclosures(statement).await;
    }
    for entry in [&first, &second] {
        let document = serde_json::to_string(entry).unwrap();
        t.execute_raw_on_disclosures(&format!(
            "insert into disclosure (disclosure_id, at, partner, action, message_id, transaction_id, correlation_id, document, digest) \
             values ('{}', '{}', '{SENDER}', 'on-search', '{}', '{}', '{}', '{document}', '{}')",
            entry.id,
            nsr::clock::to_text(entry.at),
            entry.message_id,
            entry.transaction_id,
            entry.correlation_id,
            entry.digest(),
        ))
        .await;
        for registrant in entry.registrants() {
            t.execute_raw_on_disclosures(&format!(
                "insert into disclosure_registrant (disclosure_id, functional_id) values ('{}', '{registrant}')",
                entry.id
            ))
            .await;
        }
    }
    let by_registrant = |registrant: &str| DisclosureQuery {
        registrant: Some(registrant.into()),
        limit: 10,
        ..DisclosureQuery::default()
    };
    for _ in 0..2 {
        // The second open finds nothing left to move and changes nothing.
        let reopened = nsr::store::open(&t.url, 2).await.unwrap();
        assert_eq!(
            reopened
                .disclosures(&by_registrant("IND-ONE"))
                .await
                .unwrap(),
            vec![first.clone()]
        );
        assert_eq!(
            reopened
                .disclosures(&by_registrant("IND-TWO"))
                .await
                .unwrap(),
            vec![second.clone(), first.clone()]
        );
        let url = format!("{}.disclosures", t.url);
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "select name from sqlite_master where name like 'disclosure_registrant%' and type = 'table' order by name",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            tables.first().map(String::as_str),
            Some("disclosure_registrant_index")
        );
        assert!(
            !tables.iter().any(|name| name == "disclosure_registrant"),
            "{tables:?}"
        );
    }
}
