//! The router in-process: operational endpoints.

use crate::support::{Db, TestRegistry};
use axum::body::Body;
use http_body_util::BodyExt;
use nsr::clock::Clock;
use nsr::crypto::{Alg, KeyStore, KeyUse};
use nsr::http::router;
use std::sync::Arc;
use tower::ServiceExt;

/// The application state over `t` with `keys`.
async fn get(app: axum::Router, path: &str) -> (u16, String) {
    let response = app
        .oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let t = TestRegistry::new(Db::Sqlite).await.unwrap();
    let app = router(
        t.app_state(
            Arc::new(KeyStore::open_or_create_dir(&t.dir.path().join("keys")).unwrap()),
            t.staff_auth(),
        )
        .await,
    );
    assert_eq!(get(app.clone(), "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(app.clone(), "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(app.clone(), "/nope").await.0, 404);
    let (status, body) = get(app, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("nsr_database_up 1"), "{body}");
    assert!(
        body.contains("route=\"unmatched\",status=\"404\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn the_jwks_lists_every_public_key_active_and_retired_newest_first() {
    let t = TestRegistry::new(Db::Sqlite).await.unwrap();
    let dir = t.dir.path().join("keys");
    let mut keys = KeyStore::open_or_create_dir(&dir).unwrap();
    let now = t.clock.now();
    keys.generate(Alg::EdDsa, now).unwrap();
    keys.generate(Alg::RsaOaep256, now).unwrap();
    let first = keys.signing_key().unwrap().kid().to_owned();
    let rotated = keys.rotate(KeyUse::Sig, now).unwrap();
    let app = router(t.app_state(Arc::new(keys), t.staff_auth()).await);
    let response = app
        .oneshot(
            axum::http::Request::get("/.well-known/jwks.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{jwks}");
    assert_eq!(keys[0]["kid"], rotated.kid.as_str());
    assert!(keys.iter().any(|k| k["kid"] == first.as_str()));
    for key in keys {
        for member in ["kty", "kid", "use", "alg"] {
            assert!(key[member].is_string(), "{member} missing in {key}");
        }
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "{private} published in {key}");
        }
    }
    let rsa = keys.iter().find(|k| k["alg"] == "RSA-OAEP-256").unwrap();
    assert_eq!(
        (rsa["kty"].as_str(), rsa["use"].as_str()),
        (Some("RSA"), Some("enc"))
    );
    assert!(rsa["n"].is_string() && rsa["e"] == "AQAB");
    t.finish().await;
}
