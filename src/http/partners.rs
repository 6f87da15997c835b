//! Partner administration (admin): the registry of systems allowed to call the DCI gateway.
//! The same service as `nsr partner …`; every change is an audit-chain entry.

use super::AppState;
use super::error::{ApiError, AppJson, AppPath, ErrorBody, ProblemBody};
use crate::auth::Caller;
use crate::crypto::{Alg, SignatureProfile};
use crate::partners::{NewPartner, Partner, PartnerKeys};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A partner as the admin API shows it (never its secret or the secret's hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerBody {
    pub sender_id: String,
    pub client_id: String,
    pub enabled: bool,
    pub scopes: Vec<String>,
    /// `jws`, `dci-signature` or `none`.
    pub signature_profile: String,
    pub algorithms: Vec<String>,
    /// The registered JWK Set, when keys are inline.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// Where the partner publishes its keys, when not inline.
    pub jwks_url: Option<String>,
    pub callback_prefixes: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
    pub requires_encryption: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Partner> for PartnerBody {
    fn from(partner: Partner) -> Self {
        let d = partner.definition;
        let (jwks, jwks_url) = match d.keys {
            PartnerKeys::Jwks(jwks) => (serde_json::to_value(jwks).ok(), None),
            PartnerKeys::JwksUrl(url) => (None, Some(url)),
        };
        Self {
            sender_id: partner.sender_id,
            client_id: partner.client_id,
            enabled: partner.enabled,
            scopes: d.scopes,
            signature_profile: d.signature_profile.as_str().to_owned(),
            algorithms: d.algorithms.iter().map(|a| a.as_str().to_owned()).collect(),
            jwks,
            jwks_url,
            callback_prefixes: d.callback_prefixes,
            encryption_key: d.encryption_key.and_then(|k| serde_json::to_value(k).ok()),
            requires_encryption: d.requires_encryption,
            created_at: partner.created_at,
            updated_at: partner.updated_at,
        }
    }
}

/// Every partner.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartnersBody {
    pub partners: Vec<PartnerBody>,
}

/// A partner to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartnerBody {
    /// Its DCI `sender_id` (1–99 printable ASCII, no spaces, `"` or `|`).
    pub sender_id: String,
    /// Its OAuth client id.
    pub client_id: String,
    /// `registry.search`, `registry.txn-status`, `registry.subscribe`, `registry.unsubscribe`.
    pub scopes: Vec<String>,
    /// `jws` (default), `dci-signature`, or `none` (unsigned: only when asked for).
    pub signature_profile: Option<String>,
    /// `EdDSA`, `ES256`, `RS256`.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Its public JWK Set (inline), or
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// the HTTPS URL where it publishes one.
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub callback_prefixes: Vec<String>,
    /// Its public encryption JWK (ECDH-ES+A256KW or RSA-OAEP-256).
    #[schema(value_type = Option<Object>)]
    pub encryption_key: Option<serde_json::Value>,
    #[serde(default)]
    pub requires_encryption: bool,
    /// The client secret to use (at least 16 characters); omitted: one is generated and
    /// returned once.
    #[schema(format = Password)]
    pub client_secret: Option<String>,
}

/// A registered partner and, when nsr generated it, its client secret (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedPartnerBody {
    pub partner: PartnerBody,
    pub client_secret: Option<String>,
}

fn invalid(field: &str, message: String) -> ProblemBody {
    ProblemBody {
        field: field.to_owned(),
        code: "invalid".to_owned(),
        message,
    }
}

/// Turns the request body into the service's input, listing every problem it can see here.
fn new_partner(body: NewPartnerBody) -> Result<NewPartner, ApiError> {
    let mut problems = Vec::new();
    let signature_profile = match body.signature_profile.as_deref() {
        None => None,
        Some(text) => match text.parse::<SignatureProfile>() {
            Ok(profile) => Some(profile),
            Err(message) => {
                problems.push(invalid("signature_profile", message));
                None
            }
        },
    };
    let mut algorithms = Vec::new();
    for (i, text) in body.algorithms.iter().enumerate() {
        match text.parse::<Alg>() {
            Ok(alg) => algorithms.push(alg),
            Err(message) => problems.push(invalid(&format!("algorithms[{i}]"), message)),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Unprocessable {
            code: "partner.invalid",
            message: "the partner definition has problems".to_owned(),
            problems,
        });
    }
    Ok(NewPartner {
        sender_id: body.sender_id,
        client_id: body.client_id,
        scopes: body.scopes,
        signature_profile,
        algorithms,
        jwks: body.jwks.map(|v| v.to_string()),
        jwks_url: body.jwks_url,
        callback_prefixes: body.callback_prefixes,
        encryption_key: body.encryption_key.map(|v| v.to_string()),
        requires_encryption: body.requires_encryption,
        client_secret: body.client_secret,
    })
}

/// Partners, by sender id.
#[utoipa::path(
    get,
    path = "/api/v1/partners",
    tag = "admin",
    operation_id = "list_partners",
    responses(
        (status = 200, description = "Every partner", body = PartnersBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_partners(State(state): State<AppState>) -> Result<Json<PartnersBody>, ApiError> {
    let partners = state.partners.list().await?;
    Ok(Json(PartnersBody {
        partners: partners.into_iter().map(PartnerBody::from).collect(),
    }))
}

/// Registers a partner (written with an audit entry).
#[utoipa::path(
    post,
    path = "/api/v1/partners",
    tag = "admin",
    operation_id = "create_partner",
    request_body = NewPartnerBody,
    responses(
        (status = 201, description = "Registered; a generated secret is returned this once", body = CreatedPartnerBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 409, description = "The sender id or client id is taken", body = ErrorBody),
        (status = 422, description = "The definition has problems (every one listed)", body = ErrorBody),
    )
)]
pub async fn create_partner(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<NewPartnerBody>,
) -> Result<(StatusCode, Json<CreatedPartnerBody>), ApiError> {
    let (partner, client_secret) = state.partners.add(new_partner(body)?, &caller.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedPartnerBody {
            partner: partner.into(),
            client_secret,
        }),
    ))
}

/// Disables a partner: its tokens and messages are refused from now on.
#[utoipa::path(
    post,
    path = "/api/v1/partners/{sender_id}/disable",
    tag = "admin",
    operation_id = "disable_partner",
    params(("sender_id" = String, Path, description = "The partner's DCI sender id")),
    responses(
        (status = 200, description = "Disabled", body = PartnerBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such partner", body = ErrorBody),
    )
)]
pub async fn disable_partner(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(sender_id): AppPath<String>,
) -> Result<Json<PartnerBody>, ApiError> {
    let partner = state
        .partners
        .set_enabled(&sender_id, false, &caller.name)
        .await?;
    Ok(Json(partner.into()))
}

/// Enables a disabled partner again.
#[utoipa::path(
    post,
    path = "/api/v1/partners/{sender_id}/enable",
    tag = "admin",
    operation_id = "enable_partner",
    params(("sender_id" = String, Path, description = "The partner's DCI sender id")),
    responses(
        (status = 200, description = "Enabled", body = PartnerBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such partner", body = ErrorBody),
    )
)]
pub async fn enable_partner(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(sender_id): AppPath<String>,
) -> Result<Json<PartnerBody>, ApiError> {
    let partner = state
        .partners
        .set_enabled(&sender_id, true, &caller.name)
        .await?;
    Ok(Json(partner.into()))
}
