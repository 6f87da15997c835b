//! Reading the registry: register definitions, a record with what surrounds it (now, as of an
//! instant, or by label), its versions and change log, register listings; and labelling named
//! versions.

use super::AppState;
use super::error::{ApiError, AppJson, AppPath, AppQuery, ErrorBody, ProblemBody};
use super::wire::{
    ChangesBody, PageBody, RecordBody, RecordViewBody, RegisterBody, RegistersBody, VersionsBody,
};
use crate::auth::Caller;
use crate::registry::listing::ListRequest;
use crate::registry::record::RecordStatus;
use crate::store::At;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// The register definitions in use, straight from `specs/registers`.
#[utoipa::path(
    get,
    path = "/api/v1/registers",
    tag = "registry",
    operation_id = "list_registers",
    responses(
        (status = 200, description = "Every register and supporting table", body = RegistersBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_registers(State(state): State<AppState>) -> Json<RegistersBody> {
    Json(RegistersBody {
        registers: state
            .registry
            .registers()
            .iter()
            .map(RegisterBody::from)
            .collect(),
    })
}

/// Which version of a record to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtParams {
    /// The version current at this instant (RFC 3339, or a date meaning its start in UTC).
    pub as_of: Option<String>,
    /// The version carrying this label (a named version, e.g. `survey-2026-r1`).
    pub label: Option<String>,
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// A record (by functional id or internal UUID) with its household, members and supporting
/// rows, all as of the same point.
#[utoipa::path(
    get,
    path = "/api/v1/records/{id}",
    tag = "registry",
    operation_id = "get_record",
    params(("id" = String, Path, description = "Functional id (IND-…, HH-…) or internal UUID"), AtParams),
    responses(
        (status = 200, description = "The record and what surrounds it", body = RecordViewBody),
        (status = 400, description = "Both as_of and label, or a bad instant", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such record (at that point)", body = ErrorBody),
    )
)]
pub async fn get_record(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
    AppQuery(params): AppQuery<AtParams>,
) -> Result<Json<RecordViewBody>, ApiError> {
    let instant = match params.as_of.as_deref() {
        Some(text) => Some(parse_instant(text).ok_or_else(|| ApiError::BadRequest {
            code: "request.invalid",
            message: "the request has problems".to_owned(),
            problems: vec![ProblemBody {
                field: "as_of".to_owned(),
                code: "invalid".to_owned(),
                message:
                    "an RFC 3339 instant (2026-11-21T10:00:00Z) or a date (2026-11-21)".to_owned(),
            }],
        })?),
        None => None,
    };
    let at = match (instant, params.label.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "request.invalid",
                "give as_of or label, not both",
            ));
        }
        (Some(t), None) => At::Instant(t),
        (None, Some(label)) => At::Label(label),
        (None, None) => At::Current,
    };
    let view = state
        .registry
        .show(&id, at)
        .await?
        .ok_or_else(|| ApiError::not_found("record.not_found", format!("no record `{id}`")))?;
    Ok(Json(RecordViewBody::new(
        view,
        state.registry.registers(),
        &caller,
    )))
}

/// Every version of a record, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/records/{id}/versions",
    tag = "registry",
    operation_id = "list_record_versions",
    params(("id" = String, Path, description = "Functional id or internal UUID")),
    responses(
        (status = 200, description = "The versions", body = VersionsBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
    )
)]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<VersionsBody>, ApiError> {
    let history = state
        .registry
        .history(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("record.not_found", format!("no record `{id}`")))?;
    let registers = state.registry.registers();
    Ok(Json(VersionsBody {
        versions: history
            .versions
            .into_iter()
            .map(|r| RecordBody::new(r, registers, &caller))
            .collect(),
    }))
}

/// A record's field-level change log, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/records/{id}/changes",
    tag = "registry",
    operation_id = "list_record_changes",
    params(("id" = String, Path, description = "Functional id or internal UUID")),
    responses(
        (status = 200, description = "The change log", body = ChangesBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
        (status = 404, description = "No such record", body = ErrorBody),
    )
)]
pub async fn list_changes(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(id): AppPath<String>,
) -> Result<Json<ChangesBody>, ApiError> {
    let history = state
        .registry
        .history(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("record.not_found", format!("no record `{id}`")))?;
    let register = history
        .versions
        .last()
        .map(|r| r.register.clone())
        .unwrap_or_default();
    Ok(Json(ChangesBody::new(
        &register,
        history.changes,
        state.registry.registers(),
        &caller,
    )))
}

/// Paging and sorting of a listing. Any other parameter filters on an indexed field of the
/// register (`?gender=FEMALE&birth_date=1990-05-01`); see `GET /api/v1/registers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-based page number (default 1).
    pub page: Option<u64>,
    /// Records per page, 1 to 500 (default 50).
    pub page_size: Option<u32>,
    /// `created` (default), `functional_id` or an indexed field; `-` in front sorts descending.
    pub sort: Option<String>,
    /// Only records with this status (`ACTIVE`, `INACTIVE`, `ARCHIVED`).
    pub status: Option<String>,
}

const LIST_KEYS: [&str; 4] = ["page", "page_size", "sort", "status"];

/// Current records of a register, filtered on its indexed fields, sorted and paged. Callers who
/// do not see personal data cannot filter or sort on personal fields (that would reveal them).
#[utoipa::path(
    get,
    path = "/api/v1/registers/{register}/records",
    tag = "registry",
    operation_id = "list_records",
    params(("register" = String, Path, description = "Register name, e.g. `individual`"), ListParams),
    responses(
        (status = 200, description = "One page of records", body = PageBody),
        (status = 400, description = "Unusable filters, sort or paging (every problem listed)", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed, or a personal field filtered without seeing personal data", body = ErrorBody),
        (status = 404, description = "No such register", body = ErrorBody),
    )
)]
pub async fn list_records(
    State(state): State<AppState>,
    caller: Caller,
    AppPath(register): AppPath<String>,
    AppQuery(params): AppQuery<ListParams>,
    AppQuery(all): AppQuery<BTreeMap<String, String>>,
) -> Result<Json<PageBody>, ApiError> {
    let filters: Vec<(String, String)> = all
        .into_iter()
        .filter(|(k, _)| !LIST_KEYS.contains(&k.as_str()))
        .collect();
    let status = match params.status.as_deref() {
        Some(text) => Some(
            RecordStatus::parse(text).ok_or_else(|| ApiError::BadRequest {
                code: "request.invalid",
                message: "the request has problems".to_owned(),
                problems: vec![ProblemBody {
                    field: "status".to_owned(),
                    code: "invalid_status".to_owned(),
                    message: format!("`{text}` is not ACTIVE, INACTIVE or ARCHIVED"),
                }],
            })?,
        ),
        None => None,
    };
    if !caller.sees_pii() {
        let def = state.registry.registers().get(&register);
        let sort_field = params.sort.as_deref().map(|s| s.trim_start_matches('-'));
        let personal: Vec<&str> = filters
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(sort_field)
            .filter(|name| def.and_then(|d| d.field(name)).is_some_and(|f| f.pii))
            .collect();
        if !personal.is_empty() {
            return Err(ApiError::forbidden(
                "records.personal_field",
                format!(
                    "your roles do not see personal data, so cannot filter or sort on {}",
                    personal.join(", ")
                ),
            ));
        }
    }
    let page = state
        .registry
        .list(&ListRequest {
            register,
            filters,
            status,
            sort: params.sort,
            page: params.page.unwrap_or(1),
            page_size: params.page_size.unwrap_or(50),
        })
        .await?;
    let registers = state.registry.registers();
    Ok(Json(PageBody {
        items: page
            .records
            .into_iter()
            .map(|r| RecordBody::new(r, registers, &caller))
            .collect(),
        page: page.page,
        page_size: page.page_size,
        has_more: page.has_more,
    }))
}

/// Names the current versions of a set of records.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LabelBody {
    /// 1 to 64 of A-Z, a-z, 0-9, `.`, `_`, `-`, e.g. `survey-2026-r1`.
    pub label: String,
    /// Functional ids or internal UUIDs.
    pub ids: Vec<String>,
}

/// What a label did.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelledBody {
    pub label: String,
    /// Records newly labelled (a record that already carries the label keeps it where it is).
    pub labelled: u64,
}

/// Labels the current versions of records (e.g. a survey round). A label never moves once set
/// on a record; read the labelled versions back with `GET /api/v1/records/{id}?label=…`.
#[utoipa::path(
    post,
    path = "/api/v1/labels",
    tag = "registry",
    operation_id = "create_label",
    request_body = LabelBody,
    responses(
        (status = 200, description = "Labelled", body = LabelledBody),
        (status = 400, description = "A malformed label or unknown ids (every one listed); nothing labelled", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn create_label(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<LabelBody>,
) -> Result<Json<LabelledBody>, ApiError> {
    let labelled = state
        .registry
        .label_records(&body.label, &body.ids, &caller.name)
        .await?;
    Ok(Json(LabelledBody {
        label: body.label,
        labelled,
    }))
}
