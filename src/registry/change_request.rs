//! Change requests: maker-checker for registry writes. A maker submits changes; they are
//! validated at once (every problem reported) and held pending with, for each record touched,
//! the version they were made against and the fields they touch. Another person approves
//! (the changes are applied as one change set: versions, change log, audit) or rejects with a
//! reason; the maker may cancel while pending.
//!
//! Conflict rule: on approval, a request whose touched fields (including the record's status
//! and parent) changed on the record since its base version is refused, naming those fields;
//! changes to other fields are kept (the request is re-based onto the current version).
//!
//! Requests from an auto-approved source (configuration `auto_approve_sources`) are applied
//! when submitted; bulk imports record one approved request per batch.

use super::audit::AuditDraft;
use super::change_set::{ChangeSet, PARENT_FIELD, STATUS_FIELD};
use super::ids;
use super::record::{Fields, Problem, ProblemCode, RecordStatus};
use super::register::Kind;
use super::service::{Author, Draft, DraftMode, Registry, Rejection, time_ordered_id};
use crate::store::{At, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use uuid::Uuid;

/// Recorded as the decider of requests applied by the auto-approval policy.
pub const AUTO_APPROVER: &str = "auto-approve";
/// Source of requests submitted through the staff API.
pub const API_SOURCE: &str = "api";

/// The built-in auto-approved sources: the operator's own tools (bulk CSV import and
/// `nsr update`), which run with direct access to the database anyway.
pub fn default_auto_approve_sources() -> Vec<String> {
    vec!["csv-import".to_owned(), "cli".to_owned()]
}

/// Where a change request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Rejected,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

/// What a request was made against, for one record it touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub functional_id: String,
    /// `None` for a record the request creates.
    pub record_id: Option<Uuid>,
    pub register: String,
    /// The version the request was made against; 0 for a record it creates.
    pub version: i64,
    /// The fields it touches (`_status` and `_parent` for the record's envelope).
    pub fields: Vec<String>,
}

/// One change request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRequest {
    pub id: Uuid,
    pub maker: String,
    pub source: String,
    pub reason: Option<String>,
    pub status: RequestStatus,
    pub submitted_at: DateTime<Utc>,
    /// The writes, one per change, in order. Empty for a bulk-import batch (its change set
    /// holds them).
    pub drafts: Vec<Draft>,
    pub bases: Vec<Base>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    /// The change set that applied it.
    pub change_set_id: Option<Uuid>,
    /// Records it writes (or wrote).
    pub record_count: i64,
}

impl ChangeRequest {
    /// The approved request recorded for one auto-approved bulk batch: a reference to its
    /// change set, no copy of the drafts.
    pub fn bulk(change_set: &ChangeSet) -> Self {
        Self {
            id: time_ordered_id(change_set.at()),
            maker: change_set.actor().to_owned(),
            source: change_set.source().to_owned(),
            reason: change_set.reason().map(str::to_owned),
            status: RequestStatus::Approved,
            submitted_at: change_set.at(),
            drafts: Vec::new(),
            bases: Vec::new(),
            decided_by: Some(AUTO_APPROVER.to_owned()),
            decided_at: Some(change_set.at()),
            decision_reason: None,
            change_set_id: Some(change_set.id()),
            record_count: i64::try_from(change_set.writes().len()).unwrap_or(i64::MAX),
        }
    }
}

/// A decision on a pending request, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: Uuid,
    pub status: RequestStatus,
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub change_set_id: Option<Uuid>,
}

/// One change a maker asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new record of a register (individual, household); its id is generated unless given.
    /// Supporting-table rows are added with [`Change::AddRow`].
    Create {
        register: String,
        id: Option<String>,
        parent: Option<String>,
        status: Option<RecordStatus>,
        fields: Fields,
    },
    /// Changes fields (a `null` value removes one), and optionally status and parent.
    Update {
        id: String,
        version: Option<i64>,
        fields: Fields,
        status: Option<RecordStatus>,
        parent: Option<String>,
    },
    /// A new supporting-table row under a record.
    AddRow {
        register: String,
        id: String,
        parent: String,
        fields: Fields,
    },
    /// Removes a supporting-table row (records are never deleted: it is archived).
    RemoveRow { id: String, version: Option<i64> },
    /// Moves an individual to another household.
    Move {
        id: String,
        household: String,
        version: Option<i64>,
    },
    /// Changes a record's status.
    SetStatus {
        id: String,
        status: RecordStatus,
        version: Option<i64>,
    },
}

/// Why a change-request operation did not happen. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the change request is invalid: {}", list(.0))]
    Invalid(Vec<Problem>),
    #[error("the change request conflicts with later changes: {}", list(.0))]
    Conflict(Vec<Problem>),
    #[error("no such change request")]
    NotFound,
    #[error("the change request is already {}", .0.as_str())]
    NotPending(RequestStatus),
    #[error("a change request cannot be approved or rejected by its maker")]
    OwnRequest,
    #[error("only the maker may cancel a change request")]
    NotMaker,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn at_change(index: usize, field: &str) -> String {
    format!("changes[{index}].{field}")
}

/// A change resolved against the current data: the draft to write and what it is based on.
struct Resolved {
    draft: Draft,
    base: Base,
}

impl Registry {
    /// Submits a change request: validates every change against the current data (reporting
    /// every problem), then holds it pending, or applies it at once if `author.source` is
    /// auto-approved.
    pub async fn submit(
        &self,
        author: &Author,
        changes: Vec<Change>,
    ) -> Result<ChangeRequest, RequestError> {
        if changes.is_empty() {
            return Err(RequestError::Invalid(vec![Problem::new(
                "changes",
                ProblemCode::Required,
                "a change request needs at least one change",
            )]));
        }
        let mut problems = Vec::new();
        let mut resolved = Vec::new();
        let mut targets = HashSet::new();
        for (index, change) in changes.into_iter().enumerate() {
            match self.resolve(index, change).await? {
                Ok(r) => {
                    if !targets.insert(r.base.functional_id.clone()) {
                        problems.push(Problem::new(
                            at_change(index, "id"),
                            ProblemCode::InvalidId,
                            format!(
                                "another change in this request already targets `{}`",
                                r.base.functional_id
                            ),
                        ));
                    }
                    resolved.push(r);
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if !problems.is_empty() {
            return Err(RequestError::Invalid(problems));
        }
        let (drafts, bases): (Vec<Draft>, Vec<Base>) =
            resolved.into_iter().map(|r| (r.draft, r.base)).unzip();
        let conflicts = self.conflicts(&bases).await?;
        if !conflicts.is_empty() {
            return Err(RequestError::Conflict(conflicts));
        }
        let prepared = self.prepare(author, &drafts).await?;
        if !prepared.rejected.is_empty() {
            return Err(RequestError::Invalid(change_problems(&prepared.rejected)));
        }
        if prepared.change_set.writes().is_empty() {
            return Err(RequestError::Invalid(vec![Problem::new(
                "changes",
                ProblemCode::Unchanged,
                "the request changes nothing",
            )]));
        }
        let now = self.now();
        let mut request = ChangeRequest {
            id: time_ordered_id(now),
            maker: author.actor.clone(),
            source: author.source.clone(),
            reason: author.reason.clone(),
            status: RequestStatus::Pending,
            submitted_at: now,
            record_count: i64::try_from(drafts.len()).unwrap_or(i64::MAX),
            drafts,
            bases,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            change_set_id: None,
        };
        if self.auto_approves(&author.source) {
            let change_set = prepared.change_set;
            request.status = RequestStatus::Approved;
            request.decided_by = Some(AUTO_APPROVER.to_owned());
            request.decided_at = Some(now);
            request.change_set_id = Some(change_set.id());
            self.store()
                .insert_change_request(&request, None, Some(&change_set))
                .await
                .map_err(store_conflict)?;
        } else {
            let audit = AuditDraft {
                at: now,
                actor: request.maker.clone(),
                action: "change_request.submit".to_owned(),
                subject: request.id.to_string(),
                detail: serde_json::json!({
                    "source": request.source,
                    "records": request.bases.iter().map(|b| &b.functional_id).collect::<Vec<_>>(),
                    "digest": drafts_digest(&request.drafts),
                })
                .to_string(),
            };
            self.store()
                .insert_change_request(&request, Some(&audit), None)
                .await?;
        }
        Ok(request)
    }

    /// Approves a pending request and applies it as one change set. Refused to its maker, and
    /// refused as a conflict (naming the fields) if a field it touches changed since its base.
    pub async fn approve(&self, id: Uuid, approver: &str) -> Result<ChangeRequest, RequestError> {
        let mut request = self.pending(id).await?;
        if request.maker == approver {
            return Err(RequestError::OwnRequest);
        }
        let conflicts = self.conflicts(&request.bases).await?;
        if !conflicts.is_empty() {
            return Err(RequestError::Conflict(conflicts));
        }
        let author = Author {
            actor: request.maker.clone(),
            source: request.source.clone(),
            reason: request.reason.clone(),
        };
        // Patch drafts merge onto the current versions: changes made since to other fields
        // are kept (the request is re-based).
        let prepared = self.prepare(&author, &request.drafts).await?;
        if !prepared.rejected.is_empty() {
            return Err(RequestError::Invalid(change_problems(&prepared.rejected)));
        }
        let change_set = prepared.change_set;
        let applied = !change_set.writes().is_empty();
        let decision = Decision {
            id,
            status: RequestStatus::Approved,
            by: approver.to_owned(),
            at: self.now(),
            reason: None,
            change_set_id: applied.then(|| change_set.id()),
        };
        let audit = decision_audit(&decision, &request);
        match self
            .store()
            .decide_change_request(&decision, applied.then_some(&change_set), &audit)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Stale(_)) => return Err(self.now_decided(id).await),
            Err(other) => return Err(store_conflict(other)),
        }
        request.status = RequestStatus::Approved;
        request.decided_by = Some(decision.by);
        request.decided_at = Some(decision.at);
        request.change_set_id = decision.change_set_id;
        Ok(request)
    }

    /// Rejects a pending request with a reason (not by its maker, who cancels instead).
    pub async fn reject(
        &self,
        id: Uuid,
        approver: &str,
        reason: &str,
    ) -> Result<ChangeRequest, RequestError> {
        if reason.trim().is_empty() {
            return Err(RequestError::Invalid(vec![Problem::new(
                "reason",
                ProblemCode::Required,
                "a rejection needs a reason",
            )]));
        }
        let request = self.pending(id).await?;
        if request.maker == approver {
            return Err(RequestError::OwnRequest);
        }
        self.close(
            request,
            RequestStatus::Rejected,
            approver,
            Some(reason.trim()),
        )
        .await
    }

    /// Cancels a pending request; only its maker may.
    pub async fn cancel(&self, id: Uuid, maker: &str) -> Result<ChangeRequest, RequestError> {
        let request = self.pending(id).await?;
        if request.maker != maker {
            return Err(RequestError::NotMaker);
        }
        self.close(request, RequestStatus::Cancelled, maker, None)
            .await
    }

    /// One change request.
    pub async fn change_request(&self, id: Uuid) -> Result<Option<ChangeRequest>, StoreError> {
        self.store().change_request(id).await
    }

    /// Change requests, newest first, optionally of one status.
    pub async fn change_requests(
        &self,
        status: Option<RequestStatus>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<ChangeRequest>, StoreError> {
        self.store().change_requests(status, offset, limit).await
    }

    async fn pending(&self, id: Uuid) -> Result<ChangeRequest, RequestError> {
        let request = self
            .store()
            .change_request(id)
            .await?
            .ok_or(RequestError::NotFound)?;
        if request.status != RequestStatus::Pending {
            return Err(RequestError::NotPending(request.status));
        }
        Ok(request)
    }

    /// The error for a request someone else decided while this decision was being made.
    async fn now_decided(&self, id: Uuid) -> RequestError {
        match self.store().change_request(id).await {
            Ok(Some(request)) => RequestError::NotPending(request.status),
            Ok(None) => RequestError::NotFound,
            Err(error) => error.into(),
        }
    }

    async fn close(
        &self,
        mut request: ChangeRequest,
        status: RequestStatus,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ChangeRequest, RequestError> {
        let decision = Decision {
            id: request.id,
            status,
            by: by.to_owned(),
            at: self.now(),
            reason: reason.map(str::to_owned),
            change_set_id: None,
        };
        let audit = decision_audit(&decision, &request);
        match self
            .store()
            .decide_change_request(&decision, None, &audit)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Stale(_)) => return Err(self.now_decided(request.id).await),
            Err(other) => return Err(other.into()),
        }
        request.status = status;
        request.decided_by = Some(decision.by);
        request.decided_at = Some(decision.at);
        request.decision_reason = decision.reason;
        Ok(request)
    }

    /// Turns one change into a draft and its base, or the problems that prevent it.
    async fn resolve(
        &self,
        index: usize,
        change: Change,
    ) -> Result<Result<Resolved, Vec<Problem>>, StoreError> {
        let (id, version, fields, status, parent, kind_rule) = match change {
            Change::Create {
                register,
                id,
                parent,
                status,
                fields,
            } => {
                return self
                    .resolve_new(index, register, id, parent, status, fields, Kind::Register)
                    .await;
            }
            Change::AddRow {
                register,
                id,
                parent,
                fields,
            } => {
                return self
                    .resolve_new(
                        index,
                        register,
                        Some(id),
                        Some(parent),
                        None,
                        fields,
                        Kind::Table,
                    )
                    .await;
            }
            Change::Update {
                id,
                version,
                fields,
                status,
                parent,
            } => (id, version, fields, status, parent, Target::Any),
            Change::RemoveRow { id, version } => (
                id,
                version,
                Fields::new(),
                Some(RecordStatus::Archived),
                None,
                Target::Row,
            ),
            Change::Move {
                id,
                household,
                version,
            } => (
                id,
                version,
                Fields::new(),
                None,
                Some(household),
                Target::Individual,
            ),
            Change::SetStatus {
                id,
                status,
                version,
            } => (id, version, Fields::new(), Some(status), None, Target::Any),
        };
        let Some(current) = self.find(&id, At::Current).await? else {
            return Ok(Err(vec![Problem::new(
                at_change(index, "id"),
                ProblemCode::NotFound,
                format!("no record `{id}`"),
            )]));
        };
        let mut problems = Vec::new();
        match kind_rule {
            Target::Row
                if self
                    .registers()
                    .get(&current.register)
                    .is_none_or(|d| d.kind != Kind::Table) =>
            {
                problems.push(Problem::new(
                    at_change(index, "id"),
                    ProblemCode::InvalidId,
                    format!(
                        "`{}` is a `{}` record, not a supporting-table row",
                        current.functional_id, current.register
                    ),
                ));
            }
            Target::Individual if current.register != "individual" => {
                problems.push(Problem::new(
                    at_change(index, "id"),
                    ProblemCode::InvalidId,
                    format!(
                        "only individuals move between households; `{}` is a `{}` record",
                        current.functional_id, current.register
                    ),
                ));
            }
            _ => {}
        }
        let base_version = match version {
            None => current.version,
            Some(v) if (1..=current.version).contains(&v) => v,
            Some(v) => {
                problems.push(Problem::new(
                    at_change(index, "version"),
                    ProblemCode::NotFound,
                    format!(
                        "`{}` has no version {v} (its current version is {})",
                        current.functional_id, current.version
                    ),
                ));
                current.version
            }
        };
        let mut touched: Vec<String> = fields.keys().cloned().collect();
        if status.is_some() {
            touched.push(STATUS_FIELD.to_owned());
        }
        if parent.is_some() {
            touched.push(PARENT_FIELD.to_owned());
        }
        if touched.is_empty() {
            problems.push(Problem::new(
                at_change(index, "fields"),
                ProblemCode::Unchanged,
                "the change names no field, status or parent",
            ));
        }
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        Ok(Ok(Resolved {
            base: Base {
                functional_id: current.functional_id.clone(),
                record_id: Some(current.id),
                register: current.register.clone(),
                version: base_version,
                fields: touched,
            },
            draft: Draft {
                register: current.register,
                functional_id: Some(current.functional_id),
                parent,
                status,
                fields,
                mode: DraftMode::Patch,
            },
        }))
    }

    /// A change that creates a record of a register (`Kind::Register`) or a supporting table.
    #[expect(clippy::too_many_arguments, reason = "the fields of one change")]
    async fn resolve_new(
        &self,
        index: usize,
        register: String,
        id: Option<String>,
        parent: Option<String>,
        status: Option<RecordStatus>,
        fields: Fields,
        kind: Kind,
    ) -> Result<Result<Resolved, Vec<Problem>>, StoreError> {
        let Some(def) = self.registers().get(&register) else {
            return Ok(Err(vec![Problem::new(
                at_change(index, "register"),
                ProblemCode::UnknownRegister,
                format!("no register `{register}`"),
            )]));
        };
        if kind != def.kind {
            let wanted = match kind {
                Kind::Table => "a supporting table (use `create` for a register)",
                Kind::Register => "a register (use `add_row` for a supporting table)",
            };
            return Ok(Err(vec![Problem::new(
                at_change(index, "register"),
                ProblemCode::UnknownRegister,
                format!("`{register}` is not {wanted}"),
            )]));
        }
        // Generated now, so the request shows the id the record will have.
        let id = match id {
            Some(id) => id,
            None if def.kind == Kind::Register => ids::generate(&def.prefix, rand::random()),
            None => {
                return Ok(Err(vec![Problem::new(
                    at_change(index, "id"),
                    ProblemCode::InvalidId,
                    format!(
                        "records of `{register}` need an id starting with `{}`",
                        def.prefix
                    ),
                )]));
            }
        };
        if self.find(&id, At::Current).await?.is_some() {
            return Ok(Err(vec![Problem::new(
                at_change(index, "id"),
                ProblemCode::InvalidId,
                format!("a record `{id}` already exists"),
            )]));
        }
        Ok(Ok(Resolved {
            base: Base {
                functional_id: id.clone(),
                record_id: None,
                register: def.name.clone(),
                version: 0,
                fields: Vec::new(),
            },
            draft: Draft {
                register: def.name.clone(),
                functional_id: Some(id),
                parent,
                status,
                fields,
                mode: DraftMode::Replace,
            },
        }))
    }

    /// For each base: the touched fields that changed on the record since the base version
    /// (or, for a record to be created, that one now exists).
    async fn conflicts(&self, bases: &[Base]) -> Result<Vec<Problem>, StoreError> {
        let mut problems = Vec::new();
        for (index, base) in bases.iter().enumerate() {
            let Some(record_id) = base.record_id else {
                if self
                    .store()
                    .record_by_functional_id(&base.functional_id, At::Current)
                    .await?
                    .is_some()
                {
                    problems.push(Problem::new(
                        at_change(index, "id"),
                        ProblemCode::Conflict,
                        format!("a record `{}` was created meanwhile", base.functional_id),
                    ));
                }
                continue;
            };
            let Some(current) = self.store().record_by_id(record_id, At::Current).await? else {
                continue;
            };
            if current.version <= base.version {
                continue;
            }
            let touched: BTreeSet<&str> = base.fields.iter().map(String::as_str).collect();
            let mut changed: Vec<(String, i64, String)> = Vec::new();
            for entry in self.store().change_log(record_id).await? {
                if entry.version > base.version
                    && touched.contains(entry.field.as_str())
                    && !changed.iter().any(|(f, _, _)| *f == entry.field)
                {
                    changed.push((entry.field, entry.version, entry.actor));
                }
            }
            for (field, version, actor) in changed {
                problems.push(Problem::new(
                    at_change(index, &field),
                    ProblemCode::Conflict,
                    format!(
                        "`{field}` of `{}` was changed in version {version} by {actor}, after version {} that this request was made against",
                        base.functional_id, base.version
                    ),
                ));
            }
        }
        Ok(problems)
    }
}

/// Which kind of record a change may target.
enum Target {
    Any,
    Row,
    Individual,
}

/// Rejections of prepared drafts (one per change) as problems named by change.
fn change_problems(rejected: &[Rejection]) -> Vec<Problem> {
    rejected
        .iter()
        .flat_map(|r| {
            r.problems.iter().map(move |p| Problem {
                field: at_change(r.index, &p.field),
                ..p.clone()
            })
        })
        .collect()
}

/// A store failure while applying a request: a version race or a unique value taken after
/// validation are conflicts or problems the caller can act on.
fn store_conflict(error: StoreError) -> RequestError {
    match error {
        StoreError::Conflict { functional_id, .. } => RequestError::Conflict(vec![Problem::new(
            "id",
            ProblemCode::Conflict,
            format!("`{functional_id}` changed while this request was being applied; try again"),
        )]),
        StoreError::Unique { field, .. } => RequestError::Invalid(vec![Problem::new(
            field,
            ProblemCode::Unique,
            "the value is already held by another record",
        )]),
        other => other.into(),
    }
}

/// The audit entry of a decision: who decided what, on whose request.
fn decision_audit(decision: &Decision, request: &ChangeRequest) -> AuditDraft {
    AuditDraft {
        at: decision.at,
        actor: decision.by.clone(),
        action: format!(
            "change_request.{}",
            match decision.status {
                RequestStatus::Approved => "approve",
                RequestStatus::Rejected => "reject",
                RequestStatus::Cancelled => "cancel",
                RequestStatus::Pending => "submit",
            }
        ),
        subject: decision.id.to_string(),
        detail: serde_json::json!({
            "maker": request.maker,
            "change_set": decision.change_set_id,
            "reason": decision.reason,
        })
        .to_string(),
    }
}

/// SHA-256 of the drafts' JSON: the submission's audit entry vouches for what was asked.
fn drafts_digest(drafts: &[Draft]) -> String {
    let text = serde_json::to_string(drafts).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}
