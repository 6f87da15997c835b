//! Tokens from an external OpenID Connect provider, against a stand-in provider: a real HTTP
//! server on 127.0.0.1:0 publishing a JSON Web Key Set, whose key signs the test's tokens
//! (ES256, one of the algorithms Keycloak realms offer).

use super::{TestApp, oidc_settings};
use crate::support::Db;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nsr::auth::Role;
use nsr::clock::Clock;
use serde_json::{Value, json};

/// A signing key and its public JWK.
struct ProviderKey {
    encoding: EncodingKey,
    jwk: Value,
}

fn provider_key(kid: &str) -> ProviderKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    // Uncompressed point: 0x04 ‖ x ‖ y (SEC 1 §2.3.3).
    let point = pair.public_key().as_ref();
    assert_eq!((point.len(), point[0]), (65, 4));
    ProviderKey {
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

/// Serves `keys` as the realm's JWK Set; returns the provider's base URL.
async fn stand_in_provider(keys: Vec<Value>) -> String {
    let set = json!({"keys": keys});
    let app = axum::Router::new().route(
        "/realms/nsr/protocol/openid-connect/certs",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn a_provider_token_with_role_approver_can_approve_and_bad_ones_get_401() {
    let key = provider_key("realm-key-1");
    let base = stand_in_provider(vec![key.jwk.clone()]).await;
    let app = TestApp::with(Db::Sqlite, oidc_settings(&base), None)
        .await
        .unwrap();
    app.seed().await;
    let now = app.t.clock.now().timestamp();
    let claims = |overrides: Value| {
        let mut claims = json!({
            "iss": format!("{base}/realms/nsr"),
            "aud": ["nsr-api", "account"],
            "sub": "f3a1c2d4-0000-4000-8000-000000000001",
            "preferred_username": "olga",
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": ["approver", "offline_access"]},
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let sign = |claims: &Value, with: &EncodingKey, kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, with).unwrap()
    };
    let good = sign(&claims(json!({})), &key.encoding, "realm-key-1");

    let me = app.get("/api/v1/auth/me", &good).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.body["name"], "oidc:olga");
    assert_eq!(me.body["origin"], "oidc");
    assert_eq!(me.body["roles"], json!(["approver"]));

    let enumerator = app.user("ana", &[Role::Enumerator]).await;
    let submit = || async {
        let reply = app
            .post(
                "/api/v1/change-requests",
                &enumerator,
                json!({"changes": [{"op": "update", "id": "IND-T1", "fields": {"occupation": "Tailor"}}]}),
            )
            .await;
        reply.body["id"].as_str().unwrap().to_owned()
    };
    let id = submit().await;
    let approve = format!("/api/v1/change-requests/{id}/approve");

    // Every bad token is a 401, and approves nothing.
    let other_key = provider_key("realm-key-1");
    let bad = [
        (
            "wrong issuer",
            sign(
                &claims(json!({"iss": "https://evil.example/realms/nsr"})),
                &key.encoding,
                "realm-key-1",
            ),
        ),
        (
            "wrong audience",
            sign(
                &claims(json!({"aud": "another-client"})),
                &key.encoding,
                "realm-key-1",
            ),
        ),
        (
            "expired",
            sign(
                &claims(json!({"iat": now - 3600, "exp": now - 600})),
                &key.encoding,
                "realm-key-1",
            ),
        ),
        (
            "signed by another key",
            sign(&claims(json!({})), &other_key.encoding, "realm-key-1"),
        ),
        (
            "unknown key id",
            sign(&claims(json!({})), &other_key.encoding, "realm-key-2"),
        ),
    ];
    for (why, token) in &bad {
        let reply = app.post(&approve, token, json!({})).await;
        assert_eq!(reply.status, 401, "{why}: {reply:?}");
        assert_eq!(reply.code(), "auth.invalid_token", "{why}");
    }
    // A tampered payload breaks the signature too.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims(json!({"preferred_username": "mallory"})).to_string());
    let tampered = parts.join(".");
    assert_eq!(app.post(&approve, &tampered, json!({})).await.status, 401);

    // The provider's viewer cannot approve.
    let viewer = sign(
        &claims(json!({"realm_access": {"roles": ["viewer"]}})),
        &key.encoding,
        "realm-key-1",
    );
    let refused = app.post(&approve, &viewer, json!({})).await;
    assert_eq!((refused.status, refused.code()), (403, "auth.forbidden"));

    let approved = app.post(&approve, &good, json!({})).await;
    assert_eq!(approved.status, 200, "{approved:?}");
    assert_eq!(approved.body["decided_by"], "oidc:olga");
    let record = app.get("/api/v1/records/IND-T1", &enumerator).await;
    assert_eq!(record.body["record"]["fields"]["occupation"], "Tailor");

    // Expiry follows the (injected) clock.
    app.t.clock.advance(chrono::Duration::minutes(10));
    let later = app.get("/api/v1/auth/me", &good).await;
    assert_eq!(later.status, 401);
    app.finish().await;
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_not_a_pass() {
    // A port nothing listens on: bind, note it, close.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let app = TestApp::with(Db::Sqlite, oidc_settings(&base), None)
        .await
        .unwrap();
    let key = provider_key("k");
    let now = app.t.clock.now().timestamp();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k".into());
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": format!("{base}/realms/nsr"), "aud": "nsr-api", "sub": "x", "exp": now + 60}),
        &key.encoding,
    )
    .unwrap();
    let reply = app.get("/api/v1/auth/me", &token).await;
    assert_eq!((reply.status, reply.code()), (503, "service.unavailable"));
    app.finish().await;
}
