//! The store contract: one story per use case, run on SQLite and on PostgreSQL with the same
//! assertions (`contract::sqlite::*` and `contract::postgres::*` in the test output).

use crate::support::TestRegistry;
use chrono::Duration;
use nsr::ingest::csv_export::export_csv;
use nsr::ingest::csv_import::{ImportOptions, import_csv};
use nsr::ingest::sample::seed_sample;
use nsr::registry::change_request::{Change, RequestError, RequestStatus};
use nsr::registry::change_set::{ChangeSet, PARENT_FIELD, RecordWrite};
use nsr::registry::query::{Filter, RecordQuery, Scalar, Target};
use nsr::registry::record::{Fields, ProblemCode, Record, RecordStatus};
use nsr::registry::{Author, Draft, DraftMode, WriteError};
use nsr::store::{At, StoreError};
use serde_json::{Value, json};

fn author() -> Author {
    Author {
        actor: "tester".into(),
        source: "test".into(),
        reason: None,
    }
}

/// Bulk imports run as auto-approved change requests: their source must be auto-approved.
fn importer() -> Author {
    Author {
        actor: "tester".into(),
        source: "csv-import".into(),
        reason: None,
    }
}

fn fields(value: Value) -> Fields {
    value.as_object().cloned().unwrap()
}

fn draft(register: &str, id: Option<&str>, parent: Option<&str>, values: Value) -> Draft {
    Draft {
        register: register.into(),
        functional_id: id.map(str::to_owned),
        parent: parent.map(str::to_owned),
        status: None,
        fields: fields(values),
        mode: DraftMode::Replace,
    }
}

fn patch(register: &str, id: &str, values: Value) -> Draft {
    Draft {
        mode: DraftMode::Patch,
        ..draft(register, Some(id), None, values)
    }
}

fn person(id: &str, national_id: &str) -> Draft {
    draft(
        "individual",
        Some(id),
        Some("HH-T1"),
        json!({"foundational_id": national_id, "first_name": "Ada", "last_name": "Okafor", "gender": "FEMALE", "birth_date": "1990-05-01"}),
    )
}

/// A household HH-T1 with two members, IND-T1 and IND-T2.
async fn seed_household(t: &TestRegistry) {
    t.registry
        .write(
            &author(),
            &[
                draft(
                    "household",
                    Some("HH-T1"),
                    None,
                    json!({"headship_type": "FEMALE_HEADED", "size_total": 2}),
                ),
                person("IND-T1", "NID-1"),
                person("IND-T2", "NID-2"),
            ],
        )
        .await
        .unwrap();
}

async fn current(t: &TestRegistry, id: &str) -> Record {
    t.store()
        .record_by_functional_id(id, At::Current)
        .await
        .unwrap()
        .unwrap()
}

async fn records_a_household_with_members_and_reads_it_back(t: &TestRegistry) {
    let outcome = t
        .registry
        .write(
            &author(),
            &[
                draft(
                    "household",
                    None,
                    None,
                    json!({"headship_type": "MALE_HEADED"}),
                ),
                draft("individual", None, None, json!({"gender": "MALE"})),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.created, 2);
    let [household_id, individual_id] = outcome.functional_ids.as_slice() else {
        panic!("two ids")
    };
    assert!(
        household_id.starts_with("HH-") && household_id.len() == 3 + 12,
        "{household_id}"
    );
    assert!(
        individual_id.starts_with("IND-") && individual_id.len() == 4 + 12,
        "{individual_id}"
    );

    seed_household(t).await;
    let member = current(t, "IND-T1").await;
    assert_eq!(member.version, 1);
    assert_eq!(member.parent_functional_id.as_deref(), Some("HH-T1"));
    let by_uuid = t
        .registry
        .find(&member.id.to_string(), At::Current)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_uuid, member);

    t.registry
        .write(
            &author(),
            &[draft(
                "disability",
                Some("DIS-T1"),
                Some("IND-T1"),
                json!({"disability_domain": "VISION", "disability_severity": "SOME_DIFFICULTY"}),
            )],
        )
        .await
        .unwrap();
    let view = t
        .registry
        .show("IND-T1", At::Current)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.household.unwrap().functional_id, "HH-T1");
    let members: Vec<&str> = view
        .members
        .iter()
        .map(|m| m.functional_id.as_str())
        .collect();
    assert_eq!(members, ["IND-T1", "IND-T2"]);
    let supporting: Vec<&str> = view
        .supporting
        .iter()
        .map(|m| m.functional_id.as_str())
        .collect();
    assert_eq!(supporting, ["DIS-T1"]);
}

async fn a_rejected_write_reports_every_problem_and_writes_nothing(t: &TestRegistry) {
    seed_household(t).await;
    let head = t.store().audit_head().await.unwrap();
    let bad = [
        draft(
            "household",
            Some("HH-OK"),
            None,
            json!({"headship_type": "MALE_HEADED"}),
        ),
        draft(
            "individual",
            Some("IND-BAD"),
            Some("HH-NOPE"),
            json!({"gender": "MAN", "estimated_age": "forty", "shoe_size": 42, "foundational_id": "NID-1"}),
        ),
        draft(
            "disability",
            None,
            Some("IND-T1"),
            json!({"disability_domain": "VISION"}),
        ),
    ];
    let Err(WriteError::Rejected(rejections)) = t.registry.write(&author(), &bad).await else {
        panic!("the write must be rejected")
    };
    let problems: Vec<(usize, &str, ProblemCode)> = rejections
        .iter()
        .flat_map(|r| {
            r.problems
                .iter()
                .map(move |p| (r.index, p.field.as_str(), p.code))
        })
        .collect();
    for expected in [
        (1, "gender", ProblemCode::NotInEnum),
        (1, "estimated_age", ProblemCode::WrongType),
        (1, "shoe_size", ProblemCode::UnknownField),
        (1, "parent_id", ProblemCode::MissingParent),
        (1, "foundational_id", ProblemCode::Unique),
        (2, "id", ProblemCode::InvalidId),
        (2, "disability_severity", ProblemCode::Required),
    ] {
        assert!(
            problems.contains(&expected),
            "missing {expected:?} in {problems:?}"
        );
    }
    // The good draft in the same write was not applied either.
    assert!(
        t.store()
            .record_by_functional_id("HH-OK", At::Current)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(t.store().audit_head().await.unwrap(), head);
}

async fn the_database_index_refuses_a_duplicate_foundational_id(t: &TestRegistry) {
    seed_household(t).await;
    // Straight to the store, past the service's own check: the unique index must refuse it,
    // and the whole change set (including the valid first write) must be rolled back.
    let template = current(t, "IND-T1").await;
    let new_record = |functional_id: &str, national_id: &str| {
        let record = Record {
            id: uuid::Uuid::new_v4(),
            functional_id: functional_id.into(),
            fields: fields(json!({"gender": "MALE", "foundational_id": national_id})),
            ..template.clone()
        };
        RecordWrite::new(record, None, vec![])
    };
    let change_set = ChangeSet::new(
        uuid::Uuid::new_v4(),
        "tester".into(),
        "test".into(),
        None,
        t.clock_now(),
        vec![
            new_record("IND-FRESH", "NID-FRESH"),
            new_record("IND-DUP", "NID-1"),
        ],
    );
    let head = t.store().audit_head().await.unwrap();
    match t.store().apply_change_set(&change_set).await {
        Err(StoreError::Unique { register, field }) => {
            assert_eq!(
                (register.as_str(), field.as_str()),
                ("individual", "foundational_id")
            );
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert!(
        t.store()
            .record_by_functional_id("IND-FRESH", At::Current)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(t.store().audit_head().await.unwrap(), head);

    // Through the service, the same clash is reported on the field.
    let Err(WriteError::Rejected(rejections)) = t
        .registry
        .write(&author(), &[person("IND-T3", "NID-2")])
        .await
    else {
        panic!("duplicate accepted")
    };
    assert_eq!(rejections[0].problems[0].field, "foundational_id");
    assert_eq!(rejections[0].problems[0].code, ProblemCode::Unique);
}

async fn an_update_keeps_the_old_version_readable_as_of_before(t: &TestRegistry) {
    seed_household(t).await;
    let before = t.clock_now();
    t.clock.advance(Duration::minutes(5));
    let outcome = t
        .registry
        .write(
            &author(),
            &[patch(
                "individual",
                "IND-T1",
                json!({"first_name": "Adaeze", "birth_date": null}),
            )],
        )
        .await
        .unwrap();
    assert_eq!(outcome.updated, 1);

    let now = current(t, "IND-T1").await;
    assert_eq!(
        (now.version, now.fields.get("first_name")),
        (2, Some(&json!("Adaeze")))
    );
    assert!(!now.fields.contains_key("birth_date"));
    let then = t
        .registry
        .show("IND-T1", At::Instant(before))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(
        (then.version, then.fields.get("first_name")),
        (1, Some(&json!("Ada")))
    );
    assert_eq!(then.fields.get("birth_date"), Some(&json!("1990-05-01")));

    let history = t.registry.history("IND-T1").await.unwrap().unwrap();
    assert_eq!(
        history
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(history.versions[0].valid_to.is_some() && history.versions[1].valid_to.is_none());
    let changed: Vec<(&str, Value, Value)> = history
        .changes
        .iter()
        .map(|c| (c.field.as_str(), c.old.clone(), c.new.clone()))
        .collect();
    assert_eq!(
        changed,
        [
            ("birth_date", json!("1990-05-01"), Value::Null),
            ("first_name", json!("Ada"), json!("Adaeze"))
        ]
    );
    assert!(
        history
            .changes
            .iter()
            .all(|c| c.actor == "tester" && c.version == 2)
    );

    // Writing the same values again is not a change.
    let again = t
        .registry
        .write(
            &author(),
            &[patch(
                "individual",
                "IND-T1",
                json!({"first_name": "Adaeze"}),
            )],
        )
        .await
        .unwrap();
    assert_eq!(
        (again.updated, again.unchanged, again.change_set_id),
        (0, 1, None)
    );
}

async fn a_stale_version_is_refused_as_a_conflict(t: &TestRegistry) {
    seed_household(t).await;
    let prepared = t
        .registry
        .prepare(
            &author(),
            &[patch("individual", "IND-T1", json!({"first_name": "A"}))],
        )
        .await
        .unwrap();
    t.registry
        .write(
            &author(),
            &[patch("individual", "IND-T1", json!({"first_name": "B"}))],
        )
        .await
        .unwrap();
    match t.store().apply_change_set(&prepared.change_set).await {
        Err(StoreError::Conflict {
            functional_id,
            expected,
        }) => assert_eq!((functional_id.as_str(), expected), ("IND-T1", 1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        current(t, "IND-T1").await.fields.get("first_name"),
        Some(&json!("B"))
    );
}

async fn moving_a_member_is_logged_and_the_old_household_is_kept_as_of(t: &TestRegistry) {
    seed_household(t).await;
    t.registry
        .write(
            &author(),
            &[draft(
                "household",
                Some("HH-T2"),
                None,
                json!({"headship_type": "MALE_HEADED"}),
            )],
        )
        .await
        .unwrap();
    let before = t.clock_now();
    t.clock.advance(Duration::seconds(1));
    let mut moved = patch("individual", "IND-T2", json!({}));
    moved.parent = Some("HH-T2".into());
    t.registry.write(&author(), &[moved]).await.unwrap();

    assert_eq!(
        current(t, "IND-T2").await.parent_functional_id.as_deref(),
        Some("HH-T2")
    );
    let now = t
        .registry
        .show("HH-T1", At::Current)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.members.len(), 1);
    let then = t
        .registry
        .show("HH-T1", At::Instant(before))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(then.members.len(), 2);
    let history = t.registry.history("IND-T2").await.unwrap().unwrap();
    let parent_change = history
        .changes
        .iter()
        .find(|c| c.field == PARENT_FIELD)
        .unwrap();
    assert_eq!(
        (parent_change.old.clone(), parent_change.new.clone()),
        (json!("HH-T1"), json!("HH-T2"))
    );

    // A household cannot be given an individual as parent.
    let mut wrong = patch("household", "HH-T2", json!({}));
    wrong.parent = Some("IND-T1".into());
    let Err(WriteError::Rejected(r)) = t.registry.write(&author(), &[wrong]).await else {
        panic!("accepted")
    };
    assert_eq!(r[0].problems[0].code, ProblemCode::InvalidParent);
}

async fn a_label_reads_back_the_labelled_versions(t: &TestRegistry) {
    seed_household(t).await;
    let (labelled, missing) = t
        .registry
        .label(
            "survey-2026-r1",
            &[
                "HH-T1".into(),
                "IND-T1".into(),
                "IND-T2".into(),
                "IND-NONE".into(),
            ],
            "tester",
        )
        .await
        .unwrap();
    assert_eq!((labelled, missing), (3, vec!["IND-NONE".to_owned()]));
    t.clock.advance(Duration::seconds(1));
    t.registry
        .write(
            &author(),
            &[patch(
                "individual",
                "IND-T1",
                json!({"first_name": "Later"}),
            )],
        )
        .await
        .unwrap();
    // Labels never move: labelling again leaves the round as it was.
    let (again, _) = t
        .registry
        .label("survey-2026-r1", &["IND-T1".into()], "tester")
        .await
        .unwrap();
    assert_eq!(again, 0);

    let view = t
        .registry
        .show("HH-T1", At::Label("survey-2026-r1"))
        .await
        .unwrap()
        .unwrap();
    let member = view
        .members
        .iter()
        .find(|m| m.functional_id == "IND-T1")
        .unwrap();
    assert_eq!(
        (member.version, member.fields.get("first_name")),
        (1, Some(&json!("Ada")))
    );
    let record = t
        .registry
        .show("IND-T1", At::Label("survey-2026-r1"))
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(record.version, 1);
    assert!(
        t.registry
            .show("IND-T1", At::Label("no-such-round"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        t.registry
            .label_register("all-households", "household", "tester")
            .await
            .unwrap(),
        1
    );
}

async fn the_audit_chain_verifies_and_names_a_tampered_entry(t: &TestRegistry) {
    seed_household(t).await;
    t.registry
        .write(
            &author(),
            &[patch("individual", "IND-T1", json!({"first_name": "X"}))],
        )
        .await
        .unwrap();
    t.registry
        .write(
            &author(),
            &[patch("individual", "IND-T1", json!({"first_name": "Y"}))],
        )
        .await
        .unwrap();
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(3));
    let entries = t.store().audit_entries(0, 10).await.unwrap();
    let detail: Value = serde_json::from_str(&entries[0].detail).unwrap();
    assert_eq!(detail["created"], json!(3));
    assert_eq!(entries[0].actor, "tester");

    assert_eq!(
        t.execute_raw("update audit_log set actor = 'mallory' where seq = 2")
            .await,
        1
    );
    let broken = t.registry.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(
        broken.to_string(),
        "audit entry 2 was edited: its hash does not match its content"
    );

    assert_eq!(
        t.execute_raw("update audit_log set actor = 'tester' where seq = 2")
            .await,
        1
    );
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(3));
    t.execute_raw("delete from audit_log where seq = 3").await;
    assert!(
        t.registry
            .verify_audit()
            .await
            .unwrap()
            .unwrap_err()
            .to_string()
            .contains("ends at entry 2")
    );
}

async fn csv_import_rejects_bad_rows_commits_good_ones_and_is_idempotent(t: &TestRegistry) {
    seed_household(t).await;
    let csv = "id,parent_id,status,foundational_id,first_name,gender,estimated_age\n\
               IND-C1,HH-T1,ACTIVE,NID-C1,Ama,FEMALE,30\n\
               IND-C2,HH-T1,,NID-1,Kofi,MALE,31\n\
               IND-C3,HH-T1,,NID-C3,Esi,WOMAN,abc\n\
               ,HH-T1,ACTIVE,NID-C4,Yaw,MALE,\n\
               IND-C5,HH-NONE,ACTIVE,NID-C5,Efua,FEMALE,40\n";
    let errors_path = t.dir.path().join("individual.errors.csv");
    let options = ImportOptions {
        register: "individual".into(),
        batch_size: 2,
        errors_path: errors_path.clone(),
        author: importer(),
    };
    let mut progress = Vec::new();
    let report = import_csv(&t.registry, csv.as_bytes(), &options, &mut |rows, _| {
        progress.push(rows)
    })
    .await
    .unwrap();
    assert_eq!((report.rows, report.created, report.rejected), (5, 2, 3));
    assert!(
        progress.len() >= 3 && progress.last() == Some(&5),
        "{progress:?}"
    );
    let errors = std::fs::read_to_string(report.errors_path.unwrap()).unwrap();
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines[0], "row,id,field,code,reason");
    for expected in [
        "3,IND-C2,foundational_id,unique,",
        "4,IND-C3,estimated_age,wrong_type,",
        "4,IND-C3,gender,not_in_enum,",
        "6,IND-C5,parent_id,missing_parent,",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "no `{expected}` in\n{errors}"
        );
    }
    assert!(
        t.store()
            .record_by_functional_id("IND-C1", At::Current)
            .await
            .unwrap()
            .is_some()
    );

    // Export, then re-import the export and the original: nothing changes.
    let mut exported = Vec::new();
    let rows = export_csv(&t.registry, "individual", None, &mut exported)
        .await
        .unwrap();
    assert_eq!(rows, 4);
    let head = t.store().audit_head().await.unwrap();
    let options = ImportOptions {
        errors_path: t.dir.path().join("again.errors.csv"),
        ..options
    };
    let again = import_csv(&t.registry, exported.as_slice(), &options, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (
            again.created,
            again.updated,
            again.unchanged,
            again.rejected
        ),
        (0, 0, 4, 0)
    );
    assert_eq!(
        t.store().audit_head().await.unwrap(),
        head,
        "an unchanged re-import must not write"
    );
    assert_eq!(current(t, "IND-C1").await.version, 1);

    let mut some = Vec::new();
    export_csv(
        &t.registry,
        "individual",
        Some(&["gender".to_owned()]),
        &mut some,
    )
    .await
    .unwrap();
    let some = String::from_utf8(some).unwrap();
    assert!(
        some.starts_with("id,parent_id,status,gender\n")
            && some.lines().any(|l| l == "IND-C1,HH-T1,ACTIVE,FEMALE"),
        "{some}"
    );
    assert!(
        export_csv(
            &t.registry,
            "individual",
            Some(&["nope".to_owned()]),
            Vec::new()
        )
        .await
        .is_err()
    );

    let bad_header = "id,shoe_size\nIND-X,42\n";
    let err = import_csv(&t.registry, bad_header.as_bytes(), &options, &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("shoe_size"), "{err}");
}

async fn pipelined_import_batches_see_the_batch_being_written(t: &TestRegistry) {
    seed_household(t).await;
    // One row per batch, so each row is prepared while the previous one is being written.
    let csv = "id,parent_id,foundational_id,gender\n\
               IND-P1,HH-T1,NID-P1,MALE\n\
               IND-P2,HH-T1,NID-P1,FEMALE\n\
               IND-P1,HH-T1,NID-P9,MALE\n\
               IND-P3,HH-T1,NID-P3,FEMALE\n";
    let options = ImportOptions {
        register: "individual".into(),
        batch_size: 1,
        errors_path: t.dir.path().join("pipelined.errors.csv"),
        author: importer(),
    };
    let report = import_csv(&t.registry, csv.as_bytes(), &options, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.created, report.rejected, report.batches), (2, 2, 2));
    let errors = std::fs::read_to_string(report.errors_path.unwrap()).unwrap();
    assert!(
        errors.contains("3,IND-P2,foundational_id,unique,the value is already held by `IND-P1`"),
        "{errors}"
    );
    assert!(
        errors.contains("4,IND-P1,id,invalid_id,`IND-P1` already appears on row 2"),
        "{errors}"
    );
    assert_eq!(
        current(t, "IND-P1").await.fields.get("foundational_id"),
        Some(&json!("NID-P1"))
    );
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(3));
}

async fn the_sample_loads_once_with_rows_in_every_table(t: &TestRegistry) {
    let outcome = seed_sample(&t.registry).await.unwrap();
    assert!(outcome.created >= 20 + 11, "{outcome:?}");
    let counts: std::collections::BTreeMap<String, i64> = t
        .store()
        .count_records()
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts.get("household"), Some(&5));
    assert_eq!(counts.get("individual"), Some(&15));
    for register in t.registry.registers().names() {
        assert!(
            counts.get(register).copied().unwrap_or(0) >= 2,
            "{register}: {counts:?}"
        );
    }
    // Household sizes agree with the members actually recorded (a mended fault).
    for household in t
        .store()
        .records_page("household", None, 100)
        .await
        .unwrap()
    {
        let members = t.store().children(household.id, At::Current).await.unwrap();
        let individuals = members
            .iter()
            .filter(|m| m.register == "individual")
            .count();
        assert_eq!(
            household.fields.get("size_total"),
            Some(&json!(individuals)),
            "{}",
            household.functional_id
        );
    }
    let again = seed_sample(&t.registry).await.unwrap();
    assert_eq!(
        (again.created, again.updated, again.change_set_id),
        (0, 0, None)
    );
    assert_eq!(t.registry.verify_audit().await.unwrap(), Ok(1));
}

async fn a_page_reads_the_children_of_the_registers_asked_for(t: &TestRegistry) {
    seed_sample(&t.registry).await.unwrap();
    let page_with = |child_registers: &[&str]| RecordQuery {
        register: "individual".into(),
        // Every individual, whatever its status.
        filter: Filter::In {
            target: Target::Status,
            values: ["ACTIVE", "INACTIVE", "ARCHIVED"]
                .map(|s| Scalar::Text(s.into()))
                .into(),
        },
        sort: Vec::new(),
        limit: 100,
        offset: 0,
        count: false,
        child_registers: child_registers.iter().map(|r| r.to_string()).collect(),
        by_identifier: false,
    };
    // What each register holds under the sample's individuals, read one by one.
    let mut expected: Vec<(String, String)> = Vec::new();
    let individuals = t
        .store()
        .records_page("individual", None, 100)
        .await
        .unwrap();
    for individual in &individuals {
        for child in t
            .store()
            .children(individual.id, At::Current)
            .await
            .unwrap()
        {
            expected.push((child.register, child.functional_id));
        }
    }
    expected.sort();
    for asked in [vec!["disability"], vec!["consent", "disability"], vec![]] {
        let page = t.store().query_records(&page_with(&asked)).await.unwrap();
        assert_eq!(page.records.len(), individuals.len());
        let mut read: Vec<(String, String)> = page
            .children
            .into_iter()
            .map(|c| (c.register, c.functional_id))
            .collect();
        read.sort();
        let wanted: Vec<(String, String)> = expected
            .iter()
            .filter(|(register, _)| asked.contains(&register.as_str()))
            .cloned()
            .collect();
        assert_eq!(read, wanted, "{asked:?}");
        // The same from the ids, as a Group's members' rows are read.
        let ids: Vec<uuid::Uuid> = individuals.iter().map(|i| i.id).collect();
        let asked_owned: Vec<String> = asked.iter().map(|r| r.to_string()).collect();
        let mut read: Vec<(String, String)> = t
            .store()
            .children_of(&ids, &asked_owned)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.register, c.functional_id))
            .collect();
        read.sort();
        assert_eq!(read, wanted, "children_of {asked:?}");
        for register in &asked {
            assert!(
                wanted.iter().any(|(r, _)| r == register),
                "the sample has {register} rows under individuals"
            );
        }
    }
    // A register name that is not one is refused before any SQL is built.
    let error = t
        .store()
        .query_records(&page_with(&["disability') or ('1'='1"]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Other(_)), "{error:?}");
}

async fn field_indexes_follow_the_definitions(t: &TestRegistry) {
    let names = t.field_indexes().await;
    for expected in [
        "rv_uq__individual__foundational_id",
        "rv_uq__grievance__grievance_case_id",
        "rv_ix__poverty_score__pmt_score",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    // On SQLite a field's index carries the register's other non-unique indexed fields and
    // the record id (a search on a district and a birth date reads no record that fails
    // either); a unique index carries nothing.
    let sqlite = t.url.starts_with("sqlite:");
    let definitions = t.field_index_definitions().await;
    let area = &definitions["rv_ix__individual__admin_area_code"];
    if sqlite {
        for carried in [
            "'$.birth_date'",
            "'$.gender'",
            "'$.disability_status'",
            "record_id",
        ] {
            assert!(area.contains(carried), "{carried} not in {area}");
        }
        assert!(
            !definitions["rv_uq__individual__foundational_id"].contains("birth_date"),
            "{definitions:?}"
        );
    } else {
        // On PostgreSQL over the register's search columns (stored generated columns), so
        // that such a search counts its matches from the index alone.
        assert!(
            area.contains("(sv__individual__admin_area_code, record_id) INCLUDE ("),
            "{area}"
        );
        for carried in [
            "sv__individual__birth_date",
            "sv__individual__gender",
            "sv__individual__disability_status",
        ] {
            assert!(area.contains(carried), "{carried} not in {area}");
        }
        assert!(
            definitions["rv_uq__individual__foundational_id"]
                .contains("(fields ->> 'foundational_id'::text)"),
            "{definitions:?}"
        );
    }
    // Dropping `indexed` from a definition drops its index at the next start, and the
    // register's other indexes are built again without it.
    let mut registers = crate::support::registers();
    let mut defs: Vec<_> = registers.iter().cloned().collect();
    for def in &mut defs {
        for field in &mut def.fields {
            if (def.name == "poverty_score" && field.name == "pmt_score")
                || (def.name == "individual" && field.name == "gender")
            {
                field.indexed = false;
            }
        }
    }
    registers =
        nsr::registry::register::Registers::from_defs(defs, std::path::Path::new("x")).unwrap();
    t.store().sync_field_indexes(&registers).await.unwrap();
    let definitions = t.field_index_definitions().await;
    assert!(!definitions.contains_key("rv_ix__poverty_score__pmt_score"));
    assert!(!definitions.contains_key("rv_ix__individual__gender"));
    let area = &definitions["rv_ix__individual__admin_area_code"];
    assert!(!area.contains("gender"), "{area}");
    if sqlite {
        assert!(area.contains("'$.birth_date'"), "{area}");
    }
    // Starting again with the same definitions builds no index again.
    t.store().sync_field_indexes(&registers).await.unwrap();
    assert_eq!(t.field_index_definitions().await, definitions);
    if !sqlite {
        // An earlier nsr's expression index under the same name is made again over the
        // search column, and a column the definitions no longer index is dropped.
        t.sql("drop index rv_ix__individual__birth_date").await;
        t.sql(
            "create index rv_ix__individual__birth_date on record_version ((fields->>'birth_date')) \
             where register = 'individual' and valid_to is null",
        )
        .await;
        t.store().sync_field_indexes(&registers).await.unwrap();
        let again = t.field_index_definitions().await;
        assert!(
            again["rv_ix__individual__birth_date"]
                .contains("(sv__individual__birth_date, record_id) INCLUDE ("),
            "{again:?}"
        );
        let columns: Vec<String> = t
            .sql_strings(
                "select attname::text from pg_attribute where attrelid = 'record_version'::regclass \
                 and attname like 'sv\\_\\_%' and not attisdropped order by 1",
            )
            .await;
        assert!(
            !columns.iter().any(|c| c == "sv__individual__gender"),
            "{columns:?}"
        );
        assert!(
            columns.iter().any(|c| c == "sv__individual__birth_date"),
            "{columns:?}"
        );

        // Two nsr processes starting together on one database: one makes the missing index
        // and column, the other then finds nothing to do; neither fails.
        let other = nsr::store::open(&t.url, 2).await.unwrap();
        t.sql("drop index rv_ix__household__size_total").await;
        let full = crate::support::registers();
        let (first, second) = tokio::join!(
            t.store().sync_field_indexes(&full),
            other.sync_field_indexes(&full)
        );
        first.unwrap();
        second.unwrap();
        let together = t.field_index_definitions().await;
        assert!(
            together.contains_key("rv_ix__household__size_total"),
            "{together:?}"
        );
        assert!(together["rv_ix__individual__admin_area_code"].contains("sv__individual__gender"));
    }

    // Lookups by an indexed field.
    seed_household(t).await;
    let registers = crate::support::registers();
    let field = registers
        .get("individual")
        .unwrap()
        .field("foundational_id")
        .unwrap();
    let found = t
        .store()
        .records_by_field("individual", field, &["NID-2".into(), "NID-9".into()])
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| r.functional_id.as_str())
            .collect::<Vec<_>>(),
        ["IND-T2"]
    );
    let size = registers
        .get("household")
        .unwrap()
        .field("size_total")
        .unwrap();
    let found = t
        .store()
        .records_by_field("household", size, &["2".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

async fn status_changes_are_versions_too(t: &TestRegistry) {
    seed_household(t).await;
    let mut archive = patch("individual", "IND-T2", json!({}));
    archive.status = Some(RecordStatus::Archived);
    t.registry.write(&author(), &[archive]).await.unwrap();
    let record = current(t, "IND-T2").await;
    assert_eq!((record.status, record.version), (RecordStatus::Archived, 2));
    let history = t.registry.history("IND-T2").await.unwrap().unwrap();
    assert_eq!(history.changes[0].field, "_status");
}

async fn a_change_request_needs_another_approver_and_refuses_conflicting_fields(t: &TestRegistry) {
    seed_household(t).await;
    let ana = Author {
        actor: "ana".into(),
        source: "api".into(),
        reason: Some("home visit".into()),
    };
    let update = |values: Value| Change::Update {
        id: "IND-T1".into(),
        version: None,
        fields: fields(values),
        status: None,
        parent: None,
    };
    let submit = |values: Value| {
        let ana = ana.clone();
        let change = update(values);
        async move { t.registry.submit(&ana, vec![change]).await.unwrap() }
    };
    let first = submit(json!({"first_name": "Adaeze"})).await;
    let same_field = submit(json!({"first_name": "Ada-Mae", "occupation": "Nurse"})).await;
    let disjoint = submit(json!({"marital_status": "MARRIED"})).await;
    assert_eq!(first.status, RequestStatus::Pending);
    assert_eq!(first.bases[0].version, 1);
    assert_eq!(
        current(t, "IND-T1").await.version,
        1,
        "pending writes nothing"
    );

    assert!(matches!(
        t.registry.approve(first.id, "ana").await,
        Err(RequestError::OwnRequest)
    ));
    let approved = t.registry.approve(first.id, "ben").await.unwrap();
    assert_eq!(approved.status, RequestStatus::Approved);
    let record = current(t, "IND-T1").await;
    assert_eq!(
        (record.version, &record.fields["first_name"]),
        (2, &json!("Adaeze"))
    );
    assert_eq!(Some(record.change_set_id), approved.change_set_id);

    let Err(RequestError::Conflict(problems)) = t.registry.approve(same_field.id, "ben").await
    else {
        panic!("a second change to first_name must conflict")
    };
    let named: Vec<(&str, ProblemCode)> = problems
        .iter()
        .map(|p| (p.field.as_str(), p.code))
        .collect();
    assert_eq!(named, [("changes[0].first_name", ProblemCode::Conflict)]);

    t.registry.approve(disjoint.id, "ben").await.unwrap();
    let record = current(t, "IND-T1").await;
    assert_eq!(record.version, 3);
    assert_eq!(record.fields["first_name"], "Adaeze");
    assert_eq!(record.fields["marital_status"], "MARRIED");
    assert!(matches!(
        t.registry.approve(disjoint.id, "ben").await,
        Err(RequestError::NotPending(RequestStatus::Approved))
    ));

    let actions: Vec<(String, String)> = t
        .store()
        .audit_entries(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.actor))
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|(a, _)| a == "change_request.submit")
            .count(),
        3
    );
    assert!(actions.contains(&("change_request.approve".into(), "ben".into())));
    assert!(t.registry.verify_audit().await.unwrap().is_ok());
}

impl TestRegistry {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use nsr::clock::Clock;
        self.clock.now()
    }
}

crate::on_both_backends!(
    records_a_household_with_members_and_reads_it_back,
    a_rejected_write_reports_every_problem_and_writes_nothing,
    the_database_index_refuses_a_duplicate_foundational_id,
    an_update_keeps_the_old_version_readable_as_of_before,
    a_stale_version_is_refused_as_a_conflict,
    moving_a_member_is_logged_and_the_old_household_is_kept_as_of,
    a_label_reads_back_the_labelled_versions,
    the_audit_chain_verifies_and_names_a_tampered_entry,
    csv_import_rejects_bad_rows_commits_good_ones_and_is_idempotent,
    pipelined_import_batches_see_the_batch_being_written,
    the_sample_loads_once_with_rows_in_every_table,
    a_page_reads_the_children_of_the_registers_asked_for,
    field_indexes_follow_the_definitions,
    status_changes_are_versions_too,
    a_change_request_needs_another_approver_and_refuses_conflicting_fields,
);
