//! Partner administration over the staff API: admin only (the route × role walk covers the
//! refusals), every problem listed, clashes named, secrets shown once and never again, and
//! every change in the audit chain.

use super::{TestApp, api_contract};
use nsr::auth::Role;
use serde_json::json;

fn definition() -> serde_json::Value {
    json!({
        "sender_id": "spmis.example.org",
        "client_id": "spmis",
        "scopes": ["registry.search", "registry.txn-status"],
        "signature_profile": "dci-signature",
        "algorithms": ["EdDSA"],
        "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]},
        "callback_prefixes": ["https://spmis.example.org/dci/"],
    })
}

async fn an_admin_registers_lists_and_disables_partners(app: &TestApp) {
    let admin = app.user("root", &[Role::Admin]).await;
    let head = app.t.store().audit_head().await.unwrap();

    let created = app.post("/api/v1/partners", &admin, definition()).await;
    assert_eq!(created.status, 201, "{created:?}");
    let secret = created.body["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43);
    assert_eq!(
        created.body["partner"]["signature_profile"],
        "dci-signature"
    );
    assert_eq!(
        created.body["partner"]["jwks"]["keys"][0]["kid"],
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
        "a key registered without a kid gets its RFC 7638 thumbprint"
    );

    let listed = app.get("/api/v1/partners", &admin).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["partners"][0]["sender_id"], "spmis.example.org");
    let text = listed.body.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("argon2"),
        "{text}"
    );

    let again = app.post("/api/v1/partners", &admin, definition()).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.body["error"]["code"], "partner.exists");
    assert_eq!(again.body["error"]["problems"][0]["field"], "sender_id");

    let mut bad = definition();
    bad["sender_id"] = json!("other|id");
    bad["scopes"] = json!(["registry.everything"]);
    bad["algorithms"] = json!(["HS256"]);
    bad["jwks_url"] = json!("http://partner.example.org/jwks.json");
    let refused = app.post("/api/v1/partners", &admin, bad).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "partner.invalid");
    let fields: Vec<&str> = refused.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["algorithms[0]"],
        "the body's own types are checked first"
    );

    let mut bad = definition();
    bad["sender_id"] = json!("other|id");
    bad["client_id"] = json!("other");
    bad["scopes"] = json!(["registry.everything"]);
    bad["jwks_url"] = json!("http://partner.example.org/jwks.json");
    let refused = app.post("/api/v1/partners", &admin, bad).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    let fields: Vec<&str> = refused.body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    for field in ["sender_id", "scopes", "keys"] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }

    let disabled = app
        .post(
            "/api/v1/partners/spmis.example.org/disable",
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{disabled:?}");
    assert_eq!(disabled.body["enabled"], false);
    let missing = app
        .post(
            "/api/v1/partners/nobody.example.org/enable",
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "partner.not_found");

    // The add and the disable, each an audit entry by the admin.
    let entries = app.t.store().audit_entries(head, 10).await.unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("partner.add", "root"), ("partner.disable", "root")]
    );
}

api_contract!(an_admin_registers_lists_and_disables_partners);
