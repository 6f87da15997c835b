//! The disclosure log for auditors (and admins): what was sent to which partner, when, why,
//! with which records and fields; and one registrant's own disclosures (what the self-service
//! pages will show). Read-only: the log is append-only.

use super::AppState;
use super::error::{ApiError, AppPath, AppQuery, ErrorBody};
use crate::consent::log::{self, DisclosedRecord, Disclosure, DisclosureQuery};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which disclosures to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisclosureParams {
    /// Only disclosures that carried this registrant's record (functional id, e.g.
    /// `IND-NSR-0001`; a household's disclosures list its members too).
    pub registrant: Option<String>,
    /// Only disclosures to this partner (`sender_id`).
    pub partner: Option<String>,
    /// From this instant (RFC 3339), inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (RFC 3339), exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Entries to skip (default 0).
    pub offset: Option<u64>,
    /// At most this many, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// Paging of a registrant's own disclosures.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Entries to skip (default 0).
    pub offset: Option<u64>,
    /// At most this many, 1 to 500 (default 100).
    pub limit: Option<u32>,
}

/// One record a reply carried, and exactly which wire fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosedRecordBody {
    pub reference_id: String,
    pub purpose: String,
    /// `Member` or `Group`.
    pub entity: String,
    pub functional_id: String,
    /// For a member sent inside a household (Group): the household's functional id.
    pub within: Option<String>,
    /// Every field sent, as a wire path (`demographic_info.name.surname`, `member_list[].@id`).
    pub fields: Vec<String>,
}

/// One reply's disclosure.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosureBody {
    pub id: String,
    pub at: DateTime<Utc>,
    /// The partner's `sender_id`.
    pub partner: String,
    /// `on-search` or `txn-on-status`.
    pub action: String,
    pub message_id: String,
    pub transaction_id: String,
    pub correlation_id: String,
    pub purposes: Vec<String>,
    pub records: Vec<DisclosedRecordBody>,
    /// SHA-256 of the entry, as its audit-chain entry records it.
    pub digest: String,
}

/// Disclosures, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosuresBody {
    pub disclosures: Vec<DisclosureBody>,
}

impl From<DisclosedRecord> for DisclosedRecordBody {
    fn from(r: DisclosedRecord) -> Self {
        Self {
            reference_id: r.reference_id,
            purpose: r.purpose,
            entity: r.entity,
            functional_id: r.functional_id,
            within: r.within,
            fields: r.fields,
        }
    }
}

impl From<Disclosure> for DisclosureBody {
    fn from(d: Disclosure) -> Self {
        let digest = d.digest();
        Self {
            id: d.id.to_string(),
            at: d.at,
            partner: d.partner,
            action: d.action,
            message_id: d.message_id,
            transaction_id: d.transaction_id,
            correlation_id: d.correlation_id,
            purposes: d.purposes,
            records: d.records.into_iter().map(Into::into).collect(),
            digest,
        }
    }
}

/// The disclosure log, filtered by registrant, partner and period.
#[utoipa::path(
    get,
    path = "/api/v1/disclosures",
    tag = "audit",
    operation_id = "list_disclosures",
    params(DisclosureParams),
    responses(
        (status = 200, description = "Matching disclosures, newest first", body = DisclosuresBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_disclosures(
    State(state): State<AppState>,
    AppQuery(params): AppQuery<DisclosureParams>,
) -> Result<Json<DisclosuresBody>, ApiError> {
    let query = DisclosureQuery {
        registrant: params.registrant,
        partner: params.partner,
        from: params.from,
        to: params.to,
        offset: params.offset.unwrap_or(0),
        limit: params.limit.unwrap_or(100),
    };
    let entries = log::list_disclosures(state.registry.store().as_ref(), &query).await?;
    Ok(Json(DisclosuresBody {
        disclosures: entries.into_iter().map(Into::into).collect(),
    }))
}

/// One registrant's own disclosures: each lists only that registrant's records.
#[utoipa::path(
    get,
    path = "/api/v1/registrants/{id}/disclosures",
    tag = "audit",
    operation_id = "list_registrant_disclosures",
    params(("id" = String, Path, description = "The registrant's functional id"), PageParams),
    responses(
        (status = 200, description = "The registrant's disclosures, newest first", body = DisclosuresBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Role not allowed", body = ErrorBody),
    )
)]
pub async fn list_registrant_disclosures(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    AppQuery(params): AppQuery<PageParams>,
) -> Result<Json<DisclosuresBody>, ApiError> {
    let entries = log::disclosures_of(
        state.registry.store().as_ref(),
        &id,
        params.offset.unwrap_or(0),
        params.limit.unwrap_or(100),
    )
    .await?;
    Ok(Json(DisclosuresBody {
        disclosures: entries.into_iter().map(Into::into).collect(),
    }))
}
