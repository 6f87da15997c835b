//! The router in-process: operational endpoints.

use crate::support::{Db, TestRegistry};
use axum::body::Body;
use http_body_util::BodyExt;
use nsr::http::{AppState, Metrics, router};
use std::sync::Arc;
use tower::ServiceExt;

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
    let app = router(AppState {
        registry: t.registry.clone(),
        metrics: Arc::new(Metrics::default()),
        auth: Arc::new(nsr::auth::Auth::new(
            t.store().clone(),
            t.clock.clone(),
            nsr::auth::TokenKey::generate(),
            crate::api::settings(),
        )),
    });
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
