//! `POST /api/v1/auth/login` (password → short-lived access token) and `GET /api/v1/auth/me`.

use super::AppState;
use super::error::{ApiError, AppJson, ErrorBody};
use crate::auth::{Caller, Origin, Role};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use utoipa::ToSchema;

/// A password login.
#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

/// An access token (RFC 6750 bearer token).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    pub expires_at: DateTime<Utc>,
    pub roles: Vec<Role>,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeBody {
    /// The name recorded as actor (`oidc:<name>` for a token from the identity provider).
    pub name: String,
    pub roles: Vec<Role>,
    /// `local` (nsr login) or `oidc`.
    pub origin: String,
    /// Whether personal fields are shown unmasked to this caller.
    pub sees_personal_data: bool,
}

/// The client's network address (the TCP peer; nsr does not trust forwarding headers), for the
/// per-address login throttle.
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
        ))
    }
}

/// Logs in with a staff user's name and password. Failed logins are throttled per account and
/// per client address (429 with `Retry-After`).
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    request_body = LoginBody,
    security(()),
    responses(
        (status = 200, description = "An access token", body = TokenBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown user, wrong password or disabled account", body = ErrorBody),
        (status = 429, description = "Too many failed logins for this account or address", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a login may be tried again"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    AppJson(body): AppJson<LoginBody>,
) -> Result<Json<TokenBody>, ApiError> {
    let token = state
        .auth
        .login(&body.username, &body.password, &address)
        .await?;
    Ok(Json(TokenBody {
        expires_in: (token.expires_at - state.registry.now()).num_seconds(),
        access_token: token.token,
        token_type: "Bearer".to_owned(),
        expires_at: token.expires_at,
        roles: token.roles,
    }))
}

/// The authenticated caller and their roles.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "get_me",
    responses(
        (status = 200, description = "The caller", body = MeBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn me(caller: Caller) -> Json<MeBody> {
    Json(MeBody {
        sees_personal_data: caller.sees_pii(),
        roles: caller.roles.iter().copied().collect(),
        origin: match caller.origin {
            Origin::Local => "local",
            Origin::Oidc => "oidc",
        }
        .to_owned(),
        name: caller.name,
    })
}
