//! Sync search over the NSR sample: each query type, both response entities, the G2P Connect
//! dialect, sorting and pagination with totals, batches with per-item rejections, and the
//! mapping's JSON-LD (checked against the vendored classes by `Dci::sync_search`).

use super::{Dci, schema};
use crate::support::TestRegistry;
use serde_json::{Value, json};

/// The functional ids of the records of a reply's first item, in order.
fn ids(reply: &Value) -> Vec<String> {
    reply["message"]["search_response"][0]["data"]["reg_records"]
        .as_array()
        .unwrap()
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

fn item(reply: &Value) -> &Value {
    &reply["message"]["search_response"][0]
}

fn expression(entity: &str, query: Value) -> Value {
    json!({
        "query_type": "expression",
        "response_entity": entity,
        "query": {"type": "ns:org:QueryType:expression", "value": {"expression": {"collection": entity, "query": query}}},
    })
}

async fn a_member_is_found_by_national_id_and_mapped_to_dci(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (status, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let header = &reply["header"];
    assert_eq!(header["action"], "on-search");
    assert_eq!(header["status"], "succ");
    assert_eq!(header["receiver_id"], super::SENDER);
    assert_eq!(
        (
            header["total_count"].as_u64(),
            header["completed_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let message = &reply["message"];
    assert!(
        message["transaction_id"]
            .as_str()
            .unwrap()
            .starts_with("txn-")
    );
    assert!(!message["correlation_id"].as_str().unwrap().is_empty());
    assert_eq!(item(&reply)["reference_id"], "r-1");
    assert_eq!(item(&reply)["status"], "succ");
    assert_eq!(item(&reply)["locale"], "eng");
    let data = &item(&reply)["data"];
    assert_eq!(data["reg_type"], "ns:org:RegistryType:Social");
    assert_eq!(data["reg_record_type"], "Member");
    assert_eq!(ids(&reply), ["IND-NSR-0001"]);
    let member = &data["reg_records"][0];
    assert_eq!(member["@type"], "spdci:Member");
    assert_eq!(
        member["member_identifier"][0],
        json!({"@type": "Identifier", "identifier_type": "UIN", "identifier_value": "FID-00000001"})
    );
    let person = &member["demographic_info"];
    assert_eq!(person["@type"], "SRPerson");
    assert_eq!(person["name"]["surname"], "Rivera");
    assert_eq!(person["name"]["given_name"], "Alex");
    assert!(
        person["name"].get("second_name").is_none(),
        "absent fields are left out"
    );
    assert_eq!(person["sex"], "male");
    assert_eq!(person["birth_date"], "1984-04-10");
    assert_eq!(person["phone_number"], json!(["+1000000001"]));
    assert_eq!(person["address"][0]["locality"], "D01");
    assert_eq!(member["marital_status"], "M");
    assert_eq!(member["employment_status"], "4");
    assert_eq!(member["is_disabled"], false);
    assert!(member.get("disability_info").is_none());
    assert_eq!(member["nsr:household_id"], "HH-NSR-0001");
    assert_eq!(member["nsr:relationship_to_head"], "SELF");
    assert_eq!(
        member["@context"]["nsr"],
        "https://nsr.example.org/dci/profile/v1/"
    );

    // Disability rows become DisabilityInfo with DCI codes.
    let (_, reply) = dci
        .sync_search(&token, json!({"query_type": "idtype-value", "query": {"type": "NATIONAL_ID", "value": "FID-00000009"}}))
        .await;
    let member = &item(&reply)["data"]["reg_records"][0];
    assert_eq!(member["is_disabled"], true);
    assert_eq!(
        member["disability_info"],
        json!([
            {"@type": "DisabilityInfo", "disability_limitation_type": "VIS_SS", "functional_severity": 3},
            {"@type": "DisabilityInfo", "disability_limitation_type": "HEAR_SS", "functional_severity": 3},
        ])
    );

    // By phone (first listed number), by member id, by household id.
    for (id_type, value, expected) in [
        ("MOBILE", "+1000000001", vec!["IND-NSR-0001"]),
        ("NSR_ID", "IND-NSR-0005", vec!["IND-NSR-0005"]),
        (
            "household_id",
            "HH-NSR-0002",
            vec!["IND-NSR-0004", "IND-NSR-0005", "IND-NSR-0006"],
        ),
        ("UIN", "FID-99999999", vec![]),
    ] {
        let (status, reply) = dci
            .sync_search(
                &token,
                json!({"query_type": "idtype-value", "query": {"type": id_type, "value": value}}),
            )
            .await;
        assert_eq!(status, 200);
        let mut found = ids(&reply);
        found.sort();
        assert_eq!(found, expected, "{id_type} {value}");
    }

    // The G2P Connect dialect: query_type idtype, reg_sub_type, reg_type.
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"reg_type": "ns:org:RegistryType:Social", "reg_sub_type": "individual", "query_type": "idtype", "query": {"type": "UIN", "value": "FID-00000002"}}),
        )
        .await;
    assert_eq!(ids(&reply), ["IND-NSR-0002"]);
}

async fn expressions_and_predicates_filter_sort_and_page(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"$and": [{"sex": {"$eq": "female"}}, {"birth_date": {"$lt": "1990-01-01"}}]}),
            vec![
                "IND-NSR-0002",
                "IND-NSR-0004",
                "IND-NSR-0008",
                "IND-NSR-0009",
                "IND-NSR-0011",
                "IND-NSR-0013",
            ],
        ),
        (
            json!({"admin_area_code": {"$in": ["D01", "D02"]}, "sex": {"$ne": "male"}}),
            vec![
                "IND-NSR-0002",
                "IND-NSR-0004",
                "IND-NSR-0005",
                "IND-NSR-0006",
            ],
        ),
        (
            json!({"admin_area_code": {"$nin": ["D01", "D02", "D03", "D04"]}}),
            vec!["IND-NSR-0013", "IND-NSR-0014", "IND-NSR-0015"],
        ),
        (
            json!({"$not": {"sex": "female"}}),
            vec![
                "IND-NSR-0001",
                "IND-NSR-0003",
                "IND-NSR-0007",
                "IND-NSR-0010",
                "IND-NSR-0012",
                "IND-NSR-0014",
            ],
        ),
        (
            json!({"$or": [{"national_id": "FID-00000001"}, {"birth_date": {"$gte": "2017-01-01", "$lte": "2019-12-31"}}]}),
            vec!["IND-NSR-0001", "IND-NSR-0003", "IND-NSR-0006"],
        ),
        (
            json!({"disability_status": "YES", "household_id": "HH-NSR-0003"}),
            vec!["IND-NSR-0009"],
        ),
    ];
    for (query, expected) in cases {
        let (status, reply) = dci
            .sync_search(&token, expression("Member", query.clone()))
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(item(&reply)["status"], "succ", "{query}: {reply}");
        let mut found = ids(&reply);
        found.sort();
        assert_eq!(found, expected, "{query}");
    }

    // Sorted, second page of four, with the total.
    let mut criteria = expression(
        "Member",
        json!({"$and": [{"sex": {"$eq": "female"}}, {"birth_date": {"$lt": "1990-01-01"}}]}),
    );
    criteria["sort"] = json!([{"attribute_name": "birth_date", "sort_order": "asc"}]);
    criteria["pagination"] = json!({"page_size": 4, "page_number": 2});
    let (_, reply) = dci.sync_search(&token, criteria.clone()).await;
    assert_eq!(ids(&reply), ["IND-NSR-0002", "IND-NSR-0013"]);
    assert_eq!(
        item(&reply)["pagination"],
        json!({"page_size": 4, "page_number": 2, "total_count": 6})
    );
    // A page past the end is empty and still carries the total.
    criteria["pagination"] = json!({"page_size": 4, "page_number": 3});
    let (_, reply) = dci.sync_search(&token, criteria).await;
    assert_eq!(ids(&reply), Vec::<String>::new());
    assert_eq!(
        item(&reply)["pagination"],
        json!({"page_size": 4, "page_number": 3, "total_count": 6})
    );

    // Predicates: seq_num order, and/or/not.
    let predicate = json!({
        "query_type": "predicate",
        "query": [
            {"seq_num": 2, "expression1": {"attribute_name": "admin_area_code", "operator": "eq", "attribute_value": "D03"}},
            {"seq_num": 1, "expression1": {"attribute_name": "sex", "operator": "eq", "attribute_value": "female"},
             "condition": "or", "expression2": {"attribute_name": "birth_date", "operator": "le", "attribute_value": "1960-01-01"}},
            {"seq_num": 3, "expression1": {"attribute_name": "member_id", "operator": "in", "attribute_value": ["IND-NSR-0007"]}, "condition": "not"},
        ],
    });
    let (_, reply) = dci.sync_search(&token, predicate).await;
    let mut found = ids(&reply);
    found.sort();
    assert_eq!(found, ["IND-NSR-0008", "IND-NSR-0009"]);
}

async fn households_come_as_groups_with_their_members(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let mut criteria = expression("Group", json!({"poverty_score": {"$lt": 2.5}}));
    criteria["sort"] = json!([{"attribute_name": "household_id", "sort_order": "desc"}]);
    let (status, reply) = dci.sync_search(&token, criteria).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(ids(&reply), ["HH-NSR-0004", "HH-NSR-0002", "HH-NSR-0001"]);
    let data = &item(&reply)["data"];
    assert_eq!(data["reg_record_type"], "Group");
    let group = &data["reg_records"][2];
    assert_eq!(group["@type"], "spdci:Group");
    assert_eq!(group["poverty_score"], 2.35);
    assert_eq!(group["group_size"], 3);
    assert_eq!(group["group_type"], 2);
    assert_eq!(group["group_head_info"]["@id"], "urn:nsr:IND-NSR-0001");
    let members: Vec<&str> = group["member_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@id"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [
            "urn:nsr:IND-NSR-0001",
            "urn:nsr:IND-NSR-0002",
            "urn:nsr:IND-NSR-0003"
        ]
    );
    assert_eq!(group["nsr:headship_type"], "MALE_HEADED");

    // A household by one member's national id.
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "response_entity": "Group", "query": {"type": "UIN", "value": "FID-00000004"}}),
        )
        .await;
    assert_eq!(ids(&reply), ["HH-NSR-0002"]);
    assert_eq!(
        item(&reply)["data"]["reg_records"][0]["member_list"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A member's own rows (disability) come with it inside the household.
    let (_, reply) = dci
        .sync_search(
            &token,
            json!({"query_type": "idtype-value", "response_entity": "Group", "query": {"type": "UIN", "value": "FID-00000009"}}),
        )
        .await;
    let members = item(&reply)["data"]["reg_records"][0]["member_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let disabled: Vec<&Value> = members
        .iter()
        .filter(|m| m["disability_info"].is_array())
        .collect();
    assert_eq!(disabled.len(), 1, "{reply}");
    assert_eq!(
        disabled[0]["disability_info"][0]["disability_limitation_type"],
        "VIS_SS"
    );
}

async fn bad_items_are_rejected_one_by_one_naming_the_problem(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let good =
        json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}});
    let mut bad_timestamp = dci.search_item("r-3", good.clone());
    bad_timestamp["timestamp"] = json!("2026-11-01T09:00:00");
    let mut bad_locale = dci.search_item("r-4", good.clone());
    bad_locale["locale"] = json!("EN");
    let items = vec![
        dci.search_item("r-1", good.clone()),
        dci.search_item("r-1", good.clone()),
        bad_timestamp,
        bad_locale,
        dci.search_item(&"x".repeat(100), good.clone()),
    ];
    let message = dci.search_message(items);
    let (status, reply) = dci
        .post(
            "/registry/sync/search",
            &token,
            &dci.envelope(&dci.header("search", 5), &message),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    schema::assert_search_envelope(&reply, schema::SYNC_SEARCH_REPLY);
    let got: Vec<(String, String)> = reply["message"]["search_response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["status"].as_str().unwrap().to_owned(),
                i["status_reason_code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("succ", ""),
        ("rjct", "rjct.reference_id.duplicate"),
        ("rjct", "rjct.timestamp.invalid"),
        ("rjct", "rjct.search_criteria.invalid"),
        ("rjct", "rjct.reference_id.invalid"),
    ];
    assert_eq!(
        got,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{reply}"
    );
    assert_eq!(reply["header"]["completed_count"], 5);

    let rejected =
        |criteria: Value, code: &'static str, naming: &'static str| (criteria, code, naming);
    for (criteria, code, naming) in [
        rejected(
            expression("Member", json!({"shoe_size": 44})),
            "rjct.filter.invalid",
            "shoe_size",
        ),
        rejected(
            expression("Member", json!({"sex": {"$regex": "f.*"}})),
            "rjct.filter.invalid",
            "$regex",
        ),
        rejected(
            expression("Member", json!({"sex": {"$gt": "female"}})),
            "rjct.filter.invalid",
            "sex",
        ),
        rejected(
            expression("Member", json!({"birth_date": "last tuesday"})),
            "rjct.filter.invalid",
            "birth_date",
        ),
        rejected(
            expression("Member", json!({"sex": "f"})),
            "rjct.filter.invalid",
            "sex",
        ),
        // occupation exists in the register but has no index: not searchable.
        rejected(
            expression("Member", json!({"occupation": "Tailor"})),
            "rjct.filter.invalid",
            "occupation",
        ),
        rejected(
            json!({"query_type": "idtype-value", "query": {"type": "PASSPORT", "value": "X"}}),
            "rjct.search_criteria.invalid",
            "PASSPORT",
        ),
        rejected(
            json!({"query_type": "sql", "query": "select 1"}),
            "rjct.search_criteria.invalid",
            "sql",
        ),
        rejected(
            json!({"query_type": "namedQuery", "query": {"query_name": "q", "query_params": {}}}),
            "rjct.search_criteria.invalid",
            "named",
        ),
        rejected(
            json!({"query_type": "expression", "response_entity": "Farm", "query": {}}),
            "rjct.search_criteria.invalid",
            "Group or Member",
        ),
        rejected(
            json!({"query_type": "predicate", "query": [{"expression1": {"attribute_name": "sex", "operator": "like", "attribute_value": "f"}}]}),
            "rjct.filter.invalid",
            "like",
        ),
        rejected(
            json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}, "sort": [{"attribute_name": "household_id"}]}),
            "rjct.sort.invalid",
            "household_id",
        ),
        rejected(
            json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}, "pagination": {"page_size": 0}}),
            "rjct.pagination.invalid",
            "page_size",
        ),
        rejected(
            json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}, "pagination": {"page_size": 5, "page_number": 0}}),
            "rjct.pagination.invalid",
            "page_number",
        ),
        rejected(
            expression("Member", json!({"birth_date": {"$gt": "1900-01-01"}})),
            "rjct.search.too_many_records_found",
            "pagination",
        ),
    ] {
        let (status, reply) = dci.sync_search(&token, criteria.clone()).await;
        assert_eq!(status, 200);
        let answer = item(&reply);
        assert_eq!(
            (
                answer["status"].as_str(),
                answer["status_reason_code"].as_str()
            ),
            (Some("rjct"), Some(code)),
            "{criteria}: {reply}"
        );
        let message = answer["status_reason_message"].as_str().unwrap();
        assert!(
            message.contains(naming),
            "`{message}` should name `{naming}`"
        );
    }
}

async fn a_value_that_looks_like_sql_is_only_ever_a_value(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    for value in [
        "' or 1=1 --",
        "FID-00000001' --",
        "\"; drop table record_version; --",
    ] {
        let (status, reply) = dci
            .sync_search(
                &token,
                json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": value}}),
            )
            .await;
        assert_eq!(status, 200);
        assert!(ids(&reply).is_empty(), "{value}");
    }
    // The registry is intact.
    let (_, reply) = dci
        .sync_search(&token, json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}}))
        .await;
    assert_eq!(ids(&reply), ["IND-NSR-0001"]);
}

crate::on_both_backends!(
    a_member_is_found_by_national_id_and_mapped_to_dci,
    expressions_and_predicates_filter_sort_and_page,
    households_come_as_groups_with_their_members,
    bad_items_are_rejected_one_by_one_naming_the_problem,
    a_value_that_looks_like_sql_is_only_ever_a_value,
);
