//! Change requests through the API: maker-checker, the conflict rule, validation, rejection
//! and cancellation, auto-approval by source, bulk import through the same path.

use super::{TestApp, api_contract};
use crate::support::Db;
use nsr::auth::Role;
use nsr::ingest::csv_import::{ImportOptions, import_csv};
use nsr::registry::Author;
use nsr::registry::change_request::RequestStatus;
use serde_json::{Value, json};

fn update(id: &str, fields: Value) -> Value {
    json!({"reason": "survey visit", "changes": [{"op": "update", "id": id, "fields": fields}]})
}

async fn a_request_is_approved_by_someone_else_and_appears_everywhere(app: &TestApp) {
    app.seed().await;
    // A holds both roles, so refusing A's own approval is the maker rule, not the role table.
    let ana = app.user("ana", &[Role::Enumerator, Role::Approver]).await;
    let ben = app.user("ben", &[Role::Approver]).await;

    let submitted = app
        .post(
            "/api/v1/change-requests",
            &ana,
            update(
                "IND-T1",
                json!({"occupation": "Teacher", "first_name": "Adaeze"}),
            ),
        )
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    assert_eq!(submitted.body["status"], "pending");
    assert_eq!(submitted.body["bases"][0]["version"], 1);
    assert_eq!(
        submitted.body["bases"][0]["fields"],
        json!(["occupation", "first_name"])
    );
    let id = submitted.body["id"].as_str().unwrap().to_owned();
    // Pending: nothing written yet.
    let record = app.get("/api/v1/records/IND-T1", &ana).await;
    assert_eq!(record.body["record"]["version"], 1);

    let own = app
        .post(
            &format!("/api/v1/change-requests/{id}/approve"),
            &ana,
            json!({}),
        )
        .await;
    assert_eq!(
        (own.status, own.code()),
        (403, "change_request.own_request"),
        "{own:?}"
    );

    let approved = app
        .post(
            &format!("/api/v1/change-requests/{id}/approve"),
            &ben,
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
    assert_eq!(approved.body["status"], "approved");
    assert_eq!(approved.body["decided_by"], "ben");
    let change_set = approved.body["change_set_id"].as_str().unwrap().to_owned();

    // The record…
    let record = app.get("/api/v1/records/IND-T1", &ana).await;
    assert_eq!(record.body["record"]["version"], 2);
    assert_eq!(record.body["record"]["fields"]["occupation"], "Teacher");
    assert_eq!(record.body["record"]["change_set_id"], change_set.as_str());
    // …its versions…
    let versions = app.get("/api/v1/records/IND-T1/versions", &ana).await;
    let versions = versions.body["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["fields"]["first_name"], "Ada");
    assert_eq!(versions[1]["fields"]["first_name"], "Adaeze");
    // …its change log (the maker is the author of the change)…
    let changes = app.get("/api/v1/records/IND-T1/changes", &ana).await;
    let fields: Vec<(&str, &str)> = changes.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["field"].as_str().unwrap(), c["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [("first_name", "ana"), ("occupation", "ana")]);
    // …and the audit chain: submitted by A, written as A's change set, approved by B.
    let auditor = app.user("aud", &[Role::Auditor]).await;
    let audit = app.get("/api/v1/audit", &auditor).await;
    let entries: Vec<(String, String, String)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["subject"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(action, _, _)| action.starts_with("change_"))
        .collect();
    let tail = &entries[entries.len() - 3..];
    assert_eq!(
        tail,
        [
            ("change_request.submit".into(), "ana".into(), id.clone()),
            ("change_set".into(), "ana".into(), change_set.clone()),
            ("change_request.approve".into(), "ben".into(), id.clone()),
        ]
    );
    let verified = app.get("/api/v1/audit/verify", &auditor).await;
    assert_eq!(verified.body["intact"], true, "{verified:?}");
    assert_eq!(
        app.t.registry.verify_audit().await.unwrap().map(|_| ()),
        Ok(())
    );

    // Decided once only.
    let again = app
        .post(
            &format!("/api/v1/change-requests/{id}/approve"),
            &ben,
            json!({}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (409, "change_request.not_pending")
    );
}

async fn a_concurrent_change_to_the_same_field_is_a_conflict_and_a_disjoint_one_applies(
    app: &TestApp,
) {
    app.seed().await;
    let ana = app.user("ana", &[Role::Enumerator]).await;
    let eve = app.user("eve", &[Role::Enumerator]).await;
    let ben = app.user("ben", &[Role::Approver]).await;
    let submit = |token: String, body: Value| async move {
        let reply = app.post("/api/v1/change-requests", &token, body).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body["id"].as_str().unwrap().to_owned()
    };
    // Three requests made against version 1 of IND-T1.
    let first = submit(
        ana.clone(),
        update("IND-T1", json!({"first_name": "Adaeze"})),
    )
    .await;
    let same_field = submit(
        eve.clone(),
        update(
            "IND-T1",
            json!({"first_name": "Ada-Mae", "occupation": "Nurse"}),
        ),
    )
    .await;
    let disjoint = submit(
        eve.clone(),
        update("IND-T1", json!({"marital_status": "MARRIED"})),
    )
    .await;

    let approve = |id: String| {
        let ben = ben.clone();
        async move {
            app.post(
                &format!("/api/v1/change-requests/{id}/approve"),
                &ben,
                json!({}),
            )
            .await
        }
    };
    assert_eq!(approve(first).await.status, 200);

    let conflict = approve(same_field.clone()).await;
    assert_eq!(
        (conflict.status, conflict.code()),
        (409, "change_request.conflict"),
        "{conflict:?}"
    );
    let named: Vec<(&str, &str)> = conflict.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["field"].as_str().unwrap(), p["code"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [("changes[0].first_name", "conflict")]);
    assert!(
        conflict.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("first_name"),
        "{conflict:?}"
    );
    // Still pending, nothing of it written.
    let pending = app
        .get(&format!("/api/v1/change-requests/{same_field}"), &ben)
        .await;
    assert_eq!(pending.body["status"], "pending");

    let applied = approve(disjoint).await;
    assert_eq!(applied.status, 200, "{applied:?}");
    let record = app.get("/api/v1/records/IND-T1", &ana).await;
    let fields = &record.body["record"]["fields"];
    assert_eq!(record.body["record"]["version"], 3);
    assert_eq!(fields["first_name"], "Adaeze", "the first approval is kept");
    assert_eq!(
        fields["marital_status"], "MARRIED",
        "the disjoint change is re-based onto it"
    );
    assert!(fields.get("occupation").is_none());

    // A maker who states the version they saw is refused at submission too.
    let stale = app
        .post(
            "/api/v1/change-requests",
            &ana,
            json!({"changes": [{"op": "update", "id": "IND-T1", "version": 1, "fields": {"first_name": "X"}}]}),
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (409, "change_request.conflict")
    );
}

async fn every_problem_is_reported_at_submission_and_nothing_is_held(app: &TestApp) {
    app.seed().await;
    let ana = app.user("ana", &[Role::Enumerator]).await;
    let reply = app
        .post(
            "/api/v1/change-requests",
            &ana,
            json!({"changes": [
                {"op": "update", "id": "IND-T1", "fields": {"gender": "MAN", "shoe_size": 42}},
                {"op": "update", "id": "IND-NOPE", "fields": {"occupation": "x"}},
                {"op": "create", "register": "individual", "parent": "HH-T1", "fields": {"foundational_id": "NID-2", "gender": "FEMALE"}},
                {"op": "move", "id": "HH-T1", "household": "HH-T2"},
                {"op": "remove_row", "id": "IND-T2"},
                {"op": "add_row", "register": "household", "id": "HH-X", "parent": "IND-T1"},
                {"op": "create", "register": "shock", "id": "SHK-X", "parent": "IND-T1", "fields": {"shock_type": "FIRE"}},
            ]}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, "change_request.invalid"),
        "{reply:?}"
    );
    let problems: Vec<(String, String)> = reply.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("changes[1].id", "not_found"),
        ("changes[3].id", "invalid_id"),
        ("changes[4].id", "invalid_id"),
        ("changes[5].register", "unknown_register"),
        ("changes[6].register", "unknown_register"),
    ] {
        assert!(
            problems.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing from {problems:?}"
        );
    }
    // Field problems come from validating the drafts (once the targets resolve).
    let reply = app
        .post(
            "/api/v1/change-requests",
            &ana,
            json!({"changes": [
                {"op": "update", "id": "IND-T1", "fields": {"gender": "MAN", "shoe_size": 42}},
                {"op": "create", "register": "individual", "parent": "HH-T1", "fields": {"foundational_id": "NID-2", "gender": "FEMALE"}},
            ]}),
        )
        .await;
    assert_eq!(reply.status, 422, "{reply:?}");
    let problems: Vec<(String, String)> = reply.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("changes[0].gender", "not_in_enum"),
        ("changes[0].shoe_size", "unknown_field"),
        ("changes[1].foundational_id", "unique"),
    ] {
        assert!(
            problems.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing from {problems:?}"
        );
    }
    let list = app.get("/api/v1/change-requests", &ana).await;
    assert_eq!(list.body["items"], json!([]));
    let empty = app
        .post("/api/v1/change-requests", &ana, json!({"changes": []}))
        .await;
    assert_eq!(empty.status, 422);
    let malformed = app
        .post(
            "/api/v1/change-requests",
            &ana,
            json!({"changes": [{"op": "explode"}]}),
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "request.invalid_json")
    );
}

async fn every_kind_of_change_applies_as_one_change_set(app: &TestApp) {
    app.seed().await;
    let ana = app.user("ana", &[Role::Enumerator]).await;
    let ben = app.user("ben", &[Role::Approver]).await;
    let reply = app
        .post(
            "/api/v1/change-requests",
            &ana,
            json!({"reason": "household split", "changes": [
                {"op": "create", "register": "individual", "parent": "HH-T2", "fields": {"gender": "FEMALE", "first_name": "Ngozi"}},
                {"op": "move", "id": "IND-T2", "household": "HH-T2"},
                {"op": "add_row", "register": "shock", "id": "SHK-T1", "parent": "IND-T2", "fields": {"shock_type": "FLOOD", "shock_date": "2026-10-01"}},
                {"op": "remove_row", "id": "DIS-T1"},
                {"op": "set_status", "id": "HH-T1", "status": "INACTIVE"},
            ]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let new_id = reply.body["changes"][0]["functional_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(new_id.starts_with("IND-"), "{new_id}");
    let id = reply.body["id"].as_str().unwrap();
    let approved = app
        .post(
            &format!("/api/v1/change-requests/{id}/approve"),
            &ben,
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let change_set = approved.body["change_set_id"].clone();

    let household = app.get("/api/v1/records/HH-T2", &ana).await;
    let mut members: Vec<&str> = household.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["functional_id"].as_str().unwrap())
        .collect();
    members.sort();
    let mut expected = vec!["IND-T2", new_id.as_str()];
    expected.sort();
    assert_eq!(members, expected);
    let moved = app.get("/api/v1/records/IND-T2", &ana).await;
    assert_eq!(moved.body["supporting"][0]["functional_id"], "SHK-T1");
    assert_eq!(moved.body["record"]["change_set_id"], change_set);
    let row = app.get("/api/v1/records/DIS-T1", &ana).await;
    assert_eq!(row.body["record"]["status"], "ARCHIVED");
    let old = app.get("/api/v1/records/HH-T1", &ana).await;
    assert_eq!(old.body["record"]["status"], "INACTIVE");
    let changes = app.get("/api/v1/records/IND-T2/changes", &ana).await;
    assert_eq!(changes.body["changes"][0]["field"], "_parent");
    assert_eq!(changes.body["changes"][0]["new"], "HH-T2");
}

async fn requests_are_rejected_with_a_reason_or_cancelled_by_their_maker(app: &TestApp) {
    app.seed().await;
    let ana = app.user("ana", &[Role::Enumerator]).await;
    let eve = app.user("eve", &[Role::Enumerator]).await;
    let ben = app.user("ben", &[Role::Approver]).await;
    let submit = || async {
        let reply = app
            .post(
                "/api/v1/change-requests",
                &ana,
                update("IND-T1", json!({"occupation": "Baker"})),
            )
            .await;
        reply.body["id"].as_str().unwrap().to_owned()
    };
    let first = submit().await;
    let no_reason = app
        .post(
            &format!("/api/v1/change-requests/{first}/reject"),
            &ben,
            json!({"reason": " "}),
        )
        .await;
    assert_eq!(
        (no_reason.status, no_reason.code()),
        (422, "change_request.invalid")
    );
    let rejected = app
        .post(
            &format!("/api/v1/change-requests/{first}/reject"),
            &ben,
            json!({"reason": "no evidence of occupation"}),
        )
        .await;
    assert_eq!(rejected.status, 200, "{rejected:?}");
    assert_eq!(rejected.body["status"], "rejected");
    assert_eq!(
        rejected.body["decision_reason"],
        "no evidence of occupation"
    );

    let second = submit().await;
    let by_other = app
        .post(
            &format!("/api/v1/change-requests/{second}/cancel"),
            &eve,
            json!({}),
        )
        .await;
    assert_eq!(
        (by_other.status, by_other.code()),
        (403, "change_request.not_maker")
    );
    let cancelled = app
        .post(
            &format!("/api/v1/change-requests/{second}/cancel"),
            &ana,
            json!({}),
        )
        .await;
    assert_eq!(cancelled.body["status"], "cancelled", "{cancelled:?}");
    let late = app
        .post(
            &format!("/api/v1/change-requests/{second}/approve"),
            &ben,
            json!({}),
        )
        .await;
    assert_eq!(
        (late.status, late.code()),
        (409, "change_request.not_pending")
    );

    // Nothing was written by either.
    let record = app.get("/api/v1/records/IND-T1", &ana).await;
    assert_eq!(record.body["record"]["version"], 1);
    let listed = app
        .get("/api/v1/change-requests?status=cancelled", &ben)
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let unknown = app
        .get(
            "/api/v1/change-requests/01890000-0000-7000-8000-000000000000",
            &ben,
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "change_request.not_found")
    );
    let bad = app.get("/api/v1/change-requests/not-a-uuid", &ben).await;
    assert_eq!((bad.status, bad.code()), (400, "request.invalid_path"));
}

async fn bulk_import_records_one_approved_request_per_batch(app: &TestApp) {
    app.seed().await;
    let csv = "id,parent_id,gender,first_name\n\
               IND-B1,HH-T1,FEMALE,Ama\n\
               IND-B2,HH-T1,MALE,Kofi\n\
               IND-B3,HH-T2,MALE,Yaw\n";
    let options = |source: &str| ImportOptions {
        register: "individual".into(),
        batch_size: 2,
        errors_path: app.t.dir.path().join("bulk.errors.csv"),
        author: Author {
            actor: "admin".into(),
            source: source.into(),
            reason: Some("bulk".into()),
        },
    };
    let refused = import_csv(
        &app.t.registry,
        csv.as_bytes(),
        &options("survey-tablet"),
        &mut |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("auto_approve_sources"),
        "{refused}"
    );
    let report = import_csv(
        &app.t.registry,
        csv.as_bytes(),
        &options("csv-import"),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((report.created, report.batches), (3, 2));
    let requests = app
        .t
        .registry
        .change_requests(Some(RequestStatus::Approved), 0, 10)
        .await
        .unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.source == "csv-import"
        && r.decided_by.as_deref() == Some("auto-approve")
        && r.drafts.is_empty()));
    let mut counts: Vec<i64> = requests.iter().map(|r| r.record_count).collect();
    counts.sort();
    assert_eq!(counts, [1, 2]);
    // Each names the change set that wrote its records.
    let b3 = app
        .t
        .registry
        .find("IND-B3", nsr::store::At::Current)
        .await
        .unwrap()
        .unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r.change_set_id == Some(b3.change_set_id))
    );
}

api_contract!(
    a_request_is_approved_by_someone_else_and_appears_everywhere,
    a_concurrent_change_to_the_same_field_is_a_conflict_and_a_disjoint_one_applies,
    every_problem_is_reported_at_submission_and_nothing_is_held,
    every_kind_of_change_applies_as_one_change_set,
    requests_are_rejected_with_a_reason_or_cancelled_by_their_maker,
    bulk_import_records_one_approved_request_per_batch,
);

#[tokio::test]
async fn an_auto_approved_source_is_applied_at_submission() {
    let app = TestApp::with(Db::Sqlite, super::settings(), Some(vec!["api".into()]))
        .await
        .unwrap();
    app.seed().await;
    let ana = app.user("ana", &[Role::Enumerator]).await;
    let reply = app
        .post(
            "/api/v1/change-requests",
            &ana,
            update("IND-T1", json!({"occupation": "Smith"})),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.body["status"], "approved");
    assert_eq!(reply.body["decided_by"], "auto-approve");
    let record = app.get("/api/v1/records/IND-T1", &ana).await;
    assert_eq!(record.body["record"]["fields"]["occupation"], "Smith");
    app.finish().await;
}
