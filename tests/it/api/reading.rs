//! Reading through the API: registers, a record with what surrounds it (now, as of, by label),
//! versions and change log, listings with filters, sorting and paging; personal data masked
//! for viewers and auditors.

use super::{TestApp, api_contract};
use nsr::auth::Role;
use serde_json::json;

async fn registers_come_straight_from_the_definitions(app: &TestApp) {
    let token = app.user("vic", &[Role::Viewer]).await;
    let reply = app.get("/api/v1/registers", &token).await;
    assert_eq!(reply.status, 200);
    let registers = reply.body["registers"].as_array().unwrap();
    assert_eq!(registers.len(), app.t.registry.registers().iter().count());
    let individual = registers
        .iter()
        .find(|r| r["name"] == "individual")
        .unwrap();
    assert_eq!(individual["prefix"], "IND-");
    let national = individual["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "foundational_id")
        .unwrap();
    assert_eq!(
        (&national["unique"], &national["indexed"], &national["pii"]),
        (&json!(true), &json!(true), &json!(true))
    );
}

async fn a_record_reads_with_household_members_rows_and_history(app: &TestApp) {
    app.seed().await;
    let ena = app.user("ena", &[Role::Enumerator]).await;
    let by_id = app.get("/api/v1/records/IND-T1", &ena).await;
    assert_eq!(by_id.status, 200, "{by_id:?}");
    assert_eq!(by_id.body["household"]["functional_id"], "HH-T1");
    assert_eq!(by_id.body["members"].as_array().unwrap().len(), 2);
    assert_eq!(by_id.body["supporting"][0]["functional_id"], "DIS-T1");
    assert_eq!(by_id.body["record"]["fields"]["foundational_id"], "NID-1");
    assert_eq!(by_id.body["record"]["masked"], json!([]));
    let uuid = by_id.body["record"]["id"].as_str().unwrap();
    let by_uuid = app.get(&format!("/api/v1/records/{uuid}"), &ena).await;
    assert_eq!(by_uuid.body["record"], by_id.body["record"]);

    // A later version; the earlier one stays readable as of before it, and by label.
    let labeller = app.user("lab", &[Role::Approver]).await;
    let labelled = app
        .post(
            "/api/v1/labels",
            &labeller,
            json!({"label": "survey-2026-r1", "ids": ["IND-T1", "HH-T1"]}),
        )
        .await;
    assert_eq!(labelled.status, 200, "{labelled:?}");
    assert_eq!(labelled.body["labelled"], 2);
    let before = app.t.clock_now_text();
    app.t.clock.advance(chrono::Duration::minutes(1));
    let mut patch = nsr::registry::Draft {
        register: "individual".into(),
        functional_id: Some("IND-T1".into()),
        parent: None,
        status: None,
        fields: json!({"first_name": "Adaeze"})
            .as_object()
            .cloned()
            .unwrap(),
        mode: nsr::registry::DraftMode::Patch,
    };
    patch.fields.insert("occupation".into(), json!("Teacher"));
    app.t
        .registry
        .write(
            &nsr::registry::Author {
                actor: "tester".into(),
                source: "test".into(),
                reason: None,
            },
            &[patch],
        )
        .await
        .unwrap();
    let now = app.get("/api/v1/records/IND-T1", &ena).await;
    assert_eq!(
        now.body["record"]["fields"]["first_name"], "Adaeze",
        "{now:?}"
    );
    let then = app
        .get(&format!("/api/v1/records/IND-T1?as_of={before}"), &ena)
        .await;
    assert_eq!(
        then.body["record"]["fields"]["first_name"], "Ada",
        "{then:?}"
    );
    let named = app
        .get("/api/v1/records/IND-T1?label=survey-2026-r1", &ena)
        .await;
    assert_eq!(named.body["record"]["version"], 1);
    assert_eq!(named.body["household"]["functional_id"], "HH-T1");
    let unlabelled = app
        .get("/api/v1/records/IND-T2?label=survey-2026-r1", &ena)
        .await;
    assert_eq!(
        (unlabelled.status, unlabelled.code()),
        (404, "record.not_found")
    );
    let both = app
        .get(
            &format!("/api/v1/records/IND-T1?label=x&as_of={before}"),
            &ena,
        )
        .await;
    assert_eq!(both.status, 400);
    let bad_label = app
        .post(
            "/api/v1/labels",
            &labeller,
            json!({"label": "no spaces", "ids": ["IND-T1", "IND-NOPE"]}),
        )
        .await;
    assert_eq!(bad_label.status, 400);
    assert_eq!(
        bad_label.body["error"]["problems"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{bad_label:?}"
    );

    let versions = app.get("/api/v1/records/IND-T1/versions", &ena).await;
    assert_eq!(versions.body["versions"].as_array().unwrap().len(), 2);
    let changes = app.get("/api/v1/records/IND-T1/changes", &ena).await;
    assert_eq!(changes.body["changes"][0]["field"], "first_name");
    assert_eq!(changes.body["changes"][0]["old"], "Ada");
    let missing = app.get("/api/v1/records/IND-NOPE", &ena).await;
    assert_eq!((missing.status, missing.code()), (404, "record.not_found"));
}

async fn personal_fields_are_masked_for_viewers_and_auditors(app: &TestApp) {
    app.seed().await;
    app.t
        .registry
        .write(
            &nsr::registry::Author {
                actor: "tester".into(),
                source: "test".into(),
                reason: None,
            },
            &[nsr::registry::Draft {
                register: "individual".into(),
                functional_id: Some("IND-T1".into()),
                parent: None,
                status: None,
                fields: json!({"first_name": "Adaeze", "gender": "OTHERS"})
                    .as_object()
                    .cloned()
                    .unwrap(),
                mode: nsr::registry::DraftMode::Patch,
            }],
        )
        .await
        .unwrap();
    for role in [Role::Viewer, Role::Auditor] {
        let token = app.user(&format!("masked-{role}"), &[role]).await;
        let record = app.get("/api/v1/records/IND-T1", &token).await;
        let fields = &record.body["record"]["fields"];
        assert_eq!(fields["foundational_id"], "***", "{role}");
        assert_eq!(fields["first_name"], "***");
        assert_eq!(fields["gender"], "OTHERS", "not personal");
        let masked = record.body["record"]["masked"].as_array().unwrap();
        assert!(masked.contains(&json!("birth_date")), "{masked:?}");
        assert_eq!(record.body["members"][1]["fields"]["first_name"], "***");
        let changes = app.get("/api/v1/records/IND-T1/changes", &token).await;
        let first_name = changes.body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == "first_name")
            .unwrap();
        assert_eq!(
            (&first_name["old"], &first_name["new"]),
            (&json!("***"), &json!("***"))
        );
        let gender = changes.body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["field"] == "gender")
            .unwrap();
        assert_eq!(gender["new"], "OTHERS");
        let versions = app.get("/api/v1/records/IND-T1/versions", &token).await;
        assert_eq!(versions.body["versions"][0]["fields"]["last_name"], "***");
        // Filtering on a personal field would reveal it.
        let probe = app
            .get(
                "/api/v1/registers/individual/records?foundational_id=NID-1",
                &token,
            )
            .await;
        assert_eq!(
            (probe.status, probe.code()),
            (403, "records.personal_field")
        );
        let sort = app
            .get(
                "/api/v1/registers/individual/records?sort=-birth_date",
                &token,
            )
            .await;
        assert_eq!(sort.status, 403);
    }
    let approver = app.user("seer", &[Role::Approver]).await;
    let record = app.get("/api/v1/records/IND-T1", &approver).await;
    assert_eq!(record.body["record"]["fields"]["foundational_id"], "NID-1");
}

async fn a_register_lists_with_filters_sorting_and_pages(app: &TestApp) {
    app.seed().await;
    let vic = app.user("vic", &[Role::Viewer]).await;
    let ena = app.user("ena", &[Role::Enumerator]).await;
    let list = |query: &str| format!("/api/v1/registers/individual/records{query}");

    let all = app.get(&list(""), &vic).await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(all.body["has_more"], false);
    let ids = |reply: &super::Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["functional_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_id = app.get(&list("?sort=-functional_id"), &vic).await;
    assert_eq!(ids(&by_id), ["IND-T2", "IND-T1"]);

    let women = app.get(&list("?gender=FEMALE"), &vic).await;
    assert_eq!(women.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(women.body["items"][0]["functional_id"], "IND-T1");

    let by_birth = app.get(&list("?sort=-birth_date&page_size=1"), &ena).await;
    assert_eq!(by_birth.body["items"][0]["functional_id"], "IND-T1");
    assert_eq!(by_birth.body["has_more"], true);
    let second = app
        .get(&list("?sort=-birth_date&page_size=1&page=2"), &ena)
        .await;
    assert_eq!(second.body["items"][0]["functional_id"], "IND-T2");
    assert_eq!(second.body["has_more"], false);
    let national = app.get(&list("?foundational_id=NID-2"), &ena).await;
    assert_eq!(national.body["items"][0]["functional_id"], "IND-T2");

    let households = app
        .get(
            "/api/v1/registers/household/records?size_total=2&status=ACTIVE",
            &vic,
        )
        .await;
    assert_eq!(
        households.body["items"][0]["functional_id"], "HH-T1",
        "{households:?}"
    );

    let bad = app
        .get(
            &list("?occupation=x&gender=MAN&sort=shoe_size&page_size=0"),
            &ena,
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (400, "request.invalid"),
        "{bad:?}"
    );
    let fields: Vec<&str> = bad.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields.len(), 4, "{fields:?}");
    for field in ["occupation", "gender", "sort", "page_size"] {
        assert!(fields.contains(&field), "{fields:?}");
    }
    let unknown = app.get("/api/v1/registers/nothing/records", &vic).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "register.not_found")
    );
}

api_contract!(
    registers_come_straight_from_the_definitions,
    a_record_reads_with_household_members_rows_and_history,
    personal_fields_are_masked_for_viewers_and_auditors,
    a_register_lists_with_filters_sorting_and_pages,
);

impl crate::support::TestRegistry {
    fn clock_now_text(&self) -> String {
        use nsr::clock::Clock;
        nsr::clock::to_text(self.clock.now())
    }
}
