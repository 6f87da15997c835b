//! Partner tokens: issued for client credentials (form or HTTP Basic), signed with our key and
//! verifiable with our JWKS, carrying the granted scopes; required by every DCI endpoint
//! (401), scoped (403), bound to the envelope's sender (403), dead once expired or once the
//! partner is disabled (401).

use super::schema::{self, assert_valid};
use super::{CLIENT_ID, Dci, OUR_ID, SECRET, SENDER};
use crate::support::TestRegistry;
use axum::body::Body;
use base64::Engine;
use chrono::Duration;
use nsr::crypto::verify_jws_compact;
use nsr::partners::{Partners, RemoteJwks};
use serde_json::{Value, json};

async fn token_request(dci: &Dci<'_>, body: &str, basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = axum::http::Request::post("/oauth2/client/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    dci.send(request.body(Body::from(body.to_owned())).unwrap())
        .await
}

fn form(client_id: &str, secret: &str, extra: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={client_id}&client_secret={}{extra}",
        secret.replace(' ', "+")
    )
}

async fn a_token_is_issued_for_client_credentials_and_verifies_with_our_jwks(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let (status, body) = token_request(&dci, &form(CLIENT_ID, SECRET, ""), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "registry.search registry.txn-status");
    let token = body["access_token"].as_str().unwrap();

    // A JWT signed with our active key: anyone with our JWKS can check it.
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = dci
        .keys
        .jwks()
        .keys
        .into_iter()
        .find(|k| k.kid.as_deref() == header["kid"].as_str())
        .unwrap();
    let (_, payload) = verify_jws_compact(token, None, &key, &[nsr::crypto::Alg::EdDsa]).unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["iss"], OUR_ID);
    assert_eq!(claims["sub"], SENDER);
    assert_eq!(claims["client_id"], CLIENT_ID);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert!(claims["jti"].is_string());

    // HTTP Basic, and a narrower scope asked for.
    let (status, body) = token_request(
        &dci,
        "grant_type=client_credentials&scope=registry.search",
        Some((CLIENT_ID, SECRET)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "registry.search");
}

async fn bad_token_requests_get_rfc6749_errors(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    type Case<'a> = (String, Option<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            form(CLIENT_ID, "wrong secret, long enough", ""),
            None,
            401,
            "invalid_client",
        ),
        (form("nobody", SECRET, ""), None, 401, "invalid_client"),
        (
            format!("client_id={CLIENT_ID}&client_secret=x"),
            None,
            400,
            "invalid_request",
        ),
        (
            form(CLIENT_ID, SECRET, "").replace("client_credentials", "password"),
            None,
            400,
            "unsupported_grant_type",
        ),
        (
            form(CLIENT_ID, SECRET, "&scope=registry.everything"),
            None,
            400,
            "invalid_scope",
        ),
        // Registered scopes only: this partner has no subscribe scope.
        (
            form(CLIENT_ID, SECRET, "&scope=registry.subscribe"),
            None,
            400,
            "invalid_scope",
        ),
        (
            form(CLIENT_ID, SECRET, "&scope=a&scope=b"),
            None,
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials".into(),
            Some((CLIENT_ID, "wrong secret, long enough")),
            401,
            "invalid_client",
        ),
    ];
    for (body, basic, status, error) in cases {
        let (got, reply) = token_request(&dci, &body, basic).await;
        assert_eq!(
            (got, reply["error"].as_str()),
            (status, Some(error)),
            "{body}: {reply}"
        );
    }
    // Not a form at all.
    let (status, reply) = dci
        .send(
            axum::http::Request::post("/oauth2/client/token")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

async fn dci_endpoints_require_a_valid_token(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let message = dci.search_message(vec![dci.search_item(
        "r-1",
        json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}}),
    )]);
    let envelope = dci.envelope(&dci.header("search", 1), &message);
    for path in [
        "/registry/sync/search",
        "/registry/search",
        "/registry/txn/status",
        "/registry/sync/txn/status",
    ] {
        // No Authorization header at all.
        let (status, body) = dci
            .send(
                axum::http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(envelope.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["errors"][0]["code"], "err.request.unauthorized");
        assert_valid(&body, schema::HTTP_ERROR);
        // Not a token of ours.
        let (status, _) = dci.post(path, "not.a.token", &envelope).await;
        assert_eq!(status, 401, "{path}");
    }
    // A well-formed token signed by someone else (the partner's own key, our kid).
    let real = dci.token().await;
    let mut parts = real.split('.');
    let (header, claims) = (parts.next().unwrap(), parts.next().unwrap());
    let forged_input = format!("{header}.{claims}");
    let forged_sig = dci
        .partner
        .keys
        .signing_key()
        .unwrap()
        .sign(forged_input.as_bytes())
        .unwrap();
    let forged = format!(
        "{forged_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_sig)
    );
    let (status, _) = dci.post("/registry/sync/search", &forged, &envelope).await;
    assert_eq!(status, 401);

    // The real token works, until it expires.
    let (status, reply) = dci.post("/registry/sync/search", &real, &envelope).await;
    assert_eq!(status, 200, "{reply}");
    t.clock.advance(Duration::seconds(601));
    let envelope = dci.envelope(&dci.header("search", 1), &message);
    let (status, body) = dci.post("/registry/sync/search", &real, &envelope).await;
    assert_eq!(status, 401);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

async fn a_disabled_partners_tokens_stop_working(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let criteria =
        json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}});
    // Disabled in this process: at once.
    let partners = dci.gateway.partners();
    partners.set_enabled(SENDER, false, "admin").await.unwrap();
    let (status, _) = dci.sync_search(&token, criteria.clone()).await;
    assert_eq!(status, 401);
    let (status, body) = token_request(&dci, &form(CLIENT_ID, SECRET, ""), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    partners.set_enabled(SENDER, true, "admin").await.unwrap();
    let (status, _) = dci.sync_search(&token, criteria.clone()).await;
    assert_eq!(status, 200);

    // Disabled by another process (`nsr partner disable`): within the partner cache's time.
    let elsewhere = Partners::new(
        t.store().clone(),
        t.clock.clone(),
        RemoteJwks::new(Duration::minutes(5), std::time::Duration::from_secs(5)).unwrap(),
    );
    elsewhere.set_enabled(SENDER, false, "admin").await.unwrap();
    t.clock.advance(nsr::partners::PARTNER_CACHE_TTL);
    let (status, _) = dci.sync_search(&token, criteria).await;
    assert_eq!(status, 401);
}

async fn scopes_and_the_envelope_sender_are_enforced(t: &TestRegistry) {
    let dci = Dci::with(t, &["registry.search"]).await;
    let token = dci.token().await;
    let status_message = json!({
        "transaction_id": "t-1",
        "txnstatus_request": {"reference_id": "r-1", "txn_type": "search", "attribute_type": "transaction_id", "attribute_value": "t-0"},
    });
    let envelope = dci.envelope(&dci.header("txn-status", 1), &status_message);
    for path in ["/registry/sync/txn/status", "/registry/txn/status"] {
        let (status, body) = dci.post(path, &token, &envelope).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], "err.request.forbidden");
        assert_valid(&body, schema::HTTP_ERROR);
    }
    // The token is the partner's; the envelope claims to come from another sender.
    let mut header = dci.header("search", 1);
    header["sender_id"] = json!("other.example.org");
    let message = dci.search_message(vec![dci.search_item(
        "r-1",
        json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}}),
    )]);
    let (status, body) = dci
        .post(
            "/registry/sync/search",
            &token,
            &dci.envelope(&header, &message),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Wrong content type.
    let (status, _) = dci
        .send(
            axum::http::Request::post("/registry/sync/search")
                .header("content-type", "text/plain")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 415);
}

crate::on_both_backends!(
    a_token_is_issued_for_client_credentials_and_verifies_with_our_jwks,
    bad_token_requests_get_rfc6749_errors,
    dci_endpoints_require_a_valid_token,
    a_disabled_partners_tokens_stop_working,
    scopes_and_the_envelope_sender_are_enforced,
);
