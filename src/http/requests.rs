//! Change requests (maker-checker): submit, list, read, approve, reject, cancel. The rules live
//! in `registry::change_request`; these handlers translate.

use super::AppState;
use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody, ProblemBody};
use super::wire::{ChangeRequestBody, ChangeRequestsBody};
use crate::auth::Caller;
use crate::registry::Author;
use crate::registry::change_request::{API_SOURCE, Change, RequestStatus};
use crate::registry::record::{Fields, RecordStatus};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// One change, by `op`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeInput {
    /// A new individual or household (id generated unless given).
    Create {
        register: String,
        id: Option<String>,
        /// The parent's functional id (an individual's household).
        parent: Option<String>,
        /// `ACTIVE` (default), `INACTIVE` or `ARCHIVED`.
        #[schema(value_type = Option<String>)]
        status: Option<RecordStatus>,
        #[serde(default)]
        #[schema(value_type = Object)]
        fields: Fields,
    },
    /// Changes fields (`null` removes one), and optionally status and parent.
    Update {
        id: String,
        /// The version the change was made against (default: the current one). If a field it
        /// touches changed since, the request is refused as a conflict.
        version: Option<i64>,
        #[serde(default)]
        #[schema(value_type = Object)]
        fields: Fields,
        #[schema(value_type = Option<String>)]
        status: Option<RecordStatus>,
        parent: Option<String>,
    },
    /// A new supporting-table row (disability, shock…) under a record.
    AddRow {
        register: String,
        id: String,
        parent: String,
        #[serde(default)]
        #[schema(value_type = Object)]
        fields: Fields,
    },
    /// Removes a supporting-table row (it is archived; nothing is deleted).
    RemoveRow { id: String, version: Option<i64> },
    /// Moves an individual to another household.
    Move {
        id: String,
        /// The new household's functional id.
        household: String,
        version: Option<i64>,
    },
    /// Changes a record's status.
    SetStatus {
        id: String,
        #[schema(value_type = String)]
        status: RecordStatus,
        version: Option<i64>,
    },
}

impl From<ChangeInput> for Change {
    fn from(input: ChangeInput) -> Self {
        match input {
            ChangeInput::Create {
                register,
                id,
                parent,
                status,
                fields,
            } => Change::Create {
                register,
                id,
                parent,
                status,
                fields,
            },
            ChangeInput::Update {
                id,
                version,
                fields,
                status,
                parent,
            } => Change::Update {
                id,
                version,
                fields,
                status,
                parent,
            },
            ChangeInput::AddRow {
                register,
                id,
                parent,
                fields,
            } => Change::AddRow {
                register,
                id,
                parent,
                fields,
            },
            ChangeInput::RemoveRow { id, version } => Change::RemoveRow { id, version },
            ChangeInput::Move {
                id,
                household,
                version,
            } => Change::Move {
                id,
                household,
                version,
            },
            ChangeInput::SetStatus {
                id,
                status,
                version,
            } => Change::SetStatus {
                id,
                status,
                version,
            },
        }
    }
}

/// A change request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitBody {
    /// Why (kept with the change set and in the audit log).
    pub reason: Option<String>,
    pub changes: Vec<ChangeInput>,
}

/// A rejection.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RejectBody {
    pub reason: String,
}

/// Paging and filtering of change requests.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestListParams {
    /// `pending`, `approved`, `rejected` or `cancelled`.
    pub status: Option<String>,
    /// 1-based (default 1).
    pub page: Option<u64>,
    /// 1 to 500 (default 50).
    pub page_size: Option<u32>,
}

/// Submits a change request. Every change is validated at once and every problem reported;
/// a valid request is held pending for an approver (or applied at once if its source is
/// auto-approved).
#[utoipa::path(
    post,
    path = "/api/v1/change-requests",
    tag = "change requests",
    operation_id = "submit_change_request",
    request_body = SubmitBody,
    responses(
        (status = 201, description = "Held pending (or applied, if auto-approved)", body = ChangeRequestBody),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 409, description = "A field it touches changed since the version given", body = ErrorBody),
        (status = 422, description = "Invalid changes (every problem listed)", body = ErrorBody),
    )
)]
pub async fn submit_change_request(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<SubmitBody>,
) -> Result<(StatusCode, Json<ChangeRequestBody>), ApiError> {
    let author = Author {
        actor: caller.name.clone(),
        source: API_SOURCE.to_owned(),
        reason: body.reason.filter(|r| !r.trim().is_empty()),
    };
    let changes = body.changes.into_iter().map(Change::from).collect();
    let request = state.registry.submit(&author, changes).await?;
    Ok((
        StatusCode::CREATED,
        Json(ChangeRequestBody::new(
            request,
            state.registry.registers(),
            &caller,
        )),
    ))
}

/// Change requests, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/change-requests",
    tag = "change requests",
    operation_id = "list_change_requests",
    params(RequestListParams),
    responses(
        (status = 200, description = "One page of change requests", body = ChangeRequestsBody),
        (status = 400, description = "Bad status or paging", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_change_requests(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<RequestListParams>,
) -> Result<Json<ChangeRequestsBody>, ApiError> {
    let mut problems = Vec::new();
    let status = match params.status.as_deref() {
        Some(text) => {
            let parsed = RequestStatus::parse(text);
            if parsed.is_none() {
                problems.push(ProblemBody {
                    field: "status".to_owned(),
                    code: "invalid".to_owned(),
                    message: "pending, approved, rejected or cancelled".to_owned(),
                });
            }
            parsed
        }
        None => None,
    };
    let page = params.page.unwrap_or(1);
    let page_size = params.page_size.unwrap_or(50);
    if page == 0 {
        problems.push(ProblemBody {
            field: "page".to_owned(),
            code: "out_of_range".to_owned(),
            message: "pages start at 1".to_owned(),
        });
    }
    if !(1..=500).contains(&page_size) {
        problems.push(ProblemBody {
            field: "page_size".to_owned(),
            code: "out_of_range".to_owned(),
            message: "page_size is 1 to 500".to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::BadRequest {
            code: "request.invalid",
            message: "the request has problems".to_owned(),
            problems,
        });
    }
    let offset = (page - 1).saturating_mul(u64::from(page_size));
    let mut requests = state
        .registry
        .change_requests(status, offset, page_size + 1)
        .await?;
    let has_more = requests.len() > page_size as usize;
    requests.truncate(page_size as usize);
    let registers = state.registry.registers();
    Ok(Json(ChangeRequestsBody {
        items: requests
            .into_iter()
            .map(|r| ChangeRequestBody::new(r, registers, &caller))
            .collect(),
        page,
        page_size,
        has_more,
    }))
}

/// One change request.
#[utoipa::path(
    get,
    path = "/api/v1/change-requests/{id}",
    tag = "change requests",
    operation_id = "get_change_request",
    params(("id" = Uuid, Path, description = "Change request id")),
    responses(
        (status = 200, description = "The change request", body = ChangeRequestBody),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such change request", body = ErrorBody),
    )
)]
pub async fn get_change_request(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ChangeRequestBody>, ApiError> {
    let request =
        state.registry.change_request(id).await?.ok_or_else(|| {
            ApiError::not_found("change_request.not_found", "no such change request")
        })?;
    Ok(Json(ChangeRequestBody::new(
        request,
        state.registry.registers(),
        &caller,
    )))
}

/// Approves a pending change request and applies it as one change set. Its maker cannot
/// approve it. If a field it touches changed since the version it was made against, it is
/// refused as a conflict naming the fields; changes to other fields are kept.
#[utoipa::path(
    post,
    path = "/api/v1/change-requests/{id}/approve",
    tag = "change requests",
    operation_id = "approve_change_request",
    params(("id" = Uuid, Path, description = "Change request id")),
    responses(
        (status = 200, description = "Approved and applied", body = ChangeRequestBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed, or the caller made the request", body = ErrorBody),
        (status = 404, description = "No such change request", body = ErrorBody),
        (status = 409, description = "Not pending, or a conflict (the fields are listed)", body = ErrorBody),
        (status = 422, description = "No longer valid against the current data (every problem listed)", body = ErrorBody),
    )
)]
pub async fn approve_change_request(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ChangeRequestBody>, ApiError> {
    let request = state.registry.approve(id, &caller.name).await?;
    Ok(Json(ChangeRequestBody::new(
        request,
        state.registry.registers(),
        &caller,
    )))
}

/// Rejects a pending change request, with a reason. Its maker cannot (they cancel instead).
#[utoipa::path(
    post,
    path = "/api/v1/change-requests/{id}/reject",
    tag = "change requests",
    operation_id = "reject_change_request",
    params(("id" = Uuid, Path, description = "Change request id")),
    request_body = RejectBody,
    responses(
        (status = 200, description = "Rejected", body = ChangeRequestBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed, or the caller made the request", body = ErrorBody),
        (status = 404, description = "No such change request", body = ErrorBody),
        (status = 409, description = "Not pending", body = ErrorBody),
        (status = 422, description = "No reason given", body = ErrorBody),
    )
)]
pub async fn reject_change_request(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    AppJson(body): AppJson<RejectBody>,
) -> Result<Json<ChangeRequestBody>, ApiError> {
    let request = state
        .registry
        .reject(id, &caller.name, &body.reason)
        .await?;
    Ok(Json(ChangeRequestBody::new(
        request,
        state.registry.registers(),
        &caller,
    )))
}

/// Cancels a pending change request; only its maker may.
#[utoipa::path(
    post,
    path = "/api/v1/change-requests/{id}/cancel",
    tag = "change requests",
    operation_id = "cancel_change_request",
    params(("id" = Uuid, Path, description = "Change request id")),
    responses(
        (status = 200, description = "Cancelled", body = ChangeRequestBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed, or not the maker", body = ErrorBody),
        (status = 404, description = "No such change request", body = ErrorBody),
        (status = 409, description = "Not pending", body = ErrorBody),
    )
)]
pub async fn cancel_change_request(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<ChangeRequestBody>, ApiError> {
    let request = state.registry.cancel(id, &caller.name).await?;
    Ok(Json(ChangeRequestBody::new(
        request,
        state.registry.registers(),
        &caller,
    )))
}
