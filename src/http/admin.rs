//! Staff users (admin) and the audit log (auditor).

use super::AppState;
use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody};
use crate::auth::{Caller, Role, StaffUser};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A staff user (never their password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<StaffUser> for UserBody {
    fn from(user: StaffUser) -> Self {
        Self {
            name: user.name,
            roles: user.roles,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Every staff user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersBody {
    pub users: Vec<UserBody>,
}

/// A new staff user.
#[derive(Deserialize, ToSchema)]
pub struct NewUserBody {
    /// 1 to 64 of a-z, 0-9, `.`, `_`, `-`.
    pub name: String,
    /// At least 12 characters.
    #[schema(format = Password)]
    pub password: String,
    pub roles: Vec<Role>,
}

/// Staff users, by name.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "admin",
    operation_id = "list_users",
    responses(
        (status = 200, description = "Every staff user", body = UsersBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<UsersBody>, ApiError> {
    let users = state.auth.users().list().await?;
    Ok(Json(UsersBody {
        users: users.into_iter().map(UserBody::from).collect(),
    }))
}

/// Adds a staff user (written with an audit entry).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "admin",
    operation_id = "create_user",
    request_body = NewUserBody,
    responses(
        (status = 201, description = "Added", body = UserBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "Bad name, password or roles (every problem listed)", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<NewUserBody>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    let user = state
        .auth
        .users()
        .add(&caller.name, &body.name, &body.password, &body.roles)
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Disables a staff user: their password and tokens stop working at once.
#[utoipa::path(
    post,
    path = "/api/v1/users/{name}/disable",
    tag = "admin",
    operation_id = "disable_user",
    params(("name" = String, Path, description = "User name")),
    responses(
        (status = 200, description = "Disabled", body = UserBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(name): AppPath<String>,
) -> Result<Json<UserBody>, ApiError> {
    let user = state.auth.users().disable(&caller.name, &name).await?;
    Ok(Json(user.into()))
}

/// A page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries after this sequence number (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// One audit-log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryBody {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `change_set`, `change_request.approve`, `user.add`…
    pub action: String,
    pub subject: String,
    /// JSON text, hashed exactly as stored.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Audit-log entries in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditBody {
    pub entries: Vec<AuditEntryBody>,
}

/// The hash-chained audit log, in order.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    operation_id = "list_audit_entries",
    params(AuditParams),
    responses(
        (status = 200, description = "Entries after `after`", body = AuditBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_audit_entries(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<AuditParams>,
) -> Result<Json<AuditBody>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state
        .registry
        .store()
        .audit_entries(params.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(AuditBody {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryBody {
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                subject: e.subject,
                detail: e.detail,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect(),
    }))
}

/// The result of walking the audit chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyBody {
    pub intact: bool,
    /// Entries verified (when intact).
    pub entries: Option<i64>,
    /// The first entry edited, removed or reordered (when broken).
    pub broken: Option<String>,
}

/// Walks the whole audit chain.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    operation_id = "verify_audit",
    responses(
        (status = 200, description = "Whether the chain is intact", body = AuditVerifyBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn verify_audit(
    State(state): State<AppState>,
) -> Result<Json<AuditVerifyBody>, ApiError> {
    Ok(Json(match state.registry.verify_audit().await? {
        Ok(entries) => AuditVerifyBody {
            intact: true,
            entries: Some(entries),
            broken: None,
        },
        Err(broken) => AuditVerifyBody {
            intact: false,
            entries: None,
            broken: Some(broken.to_string()),
        },
    }))
}
