//! HTTP: the staff API under `/api/v1` (authenticated; who may call what is the one table in
//! `access.rs`), its OpenAPI document and docs page, the DCI routes (`dci`, behind partner
//! tokens), and the operational endpoints.
//!
//! - `GET /healthz`: the process is up (liveness).
//! - `GET /readyz`: the database answers (readiness); 503 otherwise.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /.well-known/jwks.json`: our public keys (RFC 7517 JWK Set), signing and encryption,
//!   active and retired, newest first (DCI jwks_core_api).
//! - `/api/v1/…`: the staff API (records, change requests, audit, staff users, DCI partners);
//!   `GET /api/v1/openapi.json`, `GET /api/docs/`.

pub mod access;
mod admin;
pub mod dci;
mod disclosures;
pub mod error;
mod metrics;
pub mod openapi;
mod partners;
mod records;
mod requests;
mod session;
mod wire;

use crate::auth::Auth;
use crate::crypto::KeyStore;
use crate::partners::Partners;
use crate::registry::Registry;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

pub use metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Our keys: the active signing key, decryption keys, and the JWKS.
    pub keys: Arc<KeyStore>,
    pub auth: Arc<Auth>,
    /// The DCI partner registry (admin API).
    pub partners: Partners,
    /// The DCI gateway operations.
    pub dci: Arc<crate::dci::Gateway>,
    /// Partner access tokens (issued and checked).
    pub tokens: crate::dci::Tokens,
}

/// The whole HTTP surface. Every routed request passes [`access::authorize`].
pub fn router(state: AppState) -> Router {
    let (api, document) = openapi::api_routes().split_for_parts();
    Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/metrics", get(get_metrics))
        .route("/.well-known/jwks.json", get(get_jwks))
        .merge(api)
        .merge(
            utoipa_swagger_ui::SwaggerUi::new(openapi::DOCS_PATH)
                .url(openapi::DOCUMENT_PATH, document),
        )
        .merge(dci::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::count_requests,
        ))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("route.not_found", "no such route")
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
}

async fn get_healthz() -> &'static str {
    "ok\n"
}

async fn get_readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.registry.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.registry.store();
    let records = store.count_records().await.ok();
    let audit_heads = match (
        store.audit_head().await,
        store.disclosure_audit_head().await,
    ) {
        (Ok(registry), Ok(disclosures)) => Some((registry, disclosures)),
        _ => None,
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(records.as_deref(), audit_heads),
    )
}

async fn get_jwks(State(state): State<AppState>) -> impl IntoResponse {
    // Partners cache it; five minutes keeps a rotation visible soon after a restart.
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.keys.jwks()),
    )
}
