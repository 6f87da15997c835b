//! The DCI Social Registry operations: `/registry/sync/search`, `/registry/search` (async),
//! `/registry/txn/status` (async) and `/registry/sync/txn/status`. HTTP-free: the handlers in
//! `http::dci` pass the authenticated partner and the body, and turn the [`Reply`] into a
//! response.
//!
//! Layers of refusal (shared notes §4.2): an envelope that cannot be opened gets an ack `ERR`
//! with its `err.*` code; a header the spec's rules refuse gets, in a sync reply, a signed
//! envelope whose header has `status: rjct` and the `rjct.*` reason (in an async ack: `ERR`
//! with `err.request.bad`, or `err.version.not_supported`, and the `rjct.*` reason first in
//! the message); a search item that cannot be answered gets `status: rjct` with its
//! `SearchStatusReasonCode`, beside the items that can.

use super::codes::{err, header as header_code, search as search_code};
use super::disclosure;
use super::envelope::{EnvelopeError, Envelopes, Opened, SealError};
use super::mapping::{Mapping, Related};
use super::query::{self, Plan, QueryLimits, Rejection};
use crate::clock::{Clock, to_text};
use crate::partners::{Partner, Partners};
use crate::registry::Registry;
use crate::registry::query::Filter;
use crate::store::{DciJobLookup, DciJobRow, StoreError};
use chrono::{DateTime, Duration};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// Longest id the spec allows (`transaction_id`, `correlation_id`, `reference_id` in practice).
const MAX_ID_LEN: usize = 99;
/// Most reference ids one status request may list.
const MAX_REFERENCE_IDS: usize = 500;

/// Limits and timings from configuration.
#[derive(Debug, Clone)]
pub struct GatewayPolicy {
    pub max_batch: u32,
    pub max_page_size: u32,
    pub callback_deadline: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub callback_timeout: std::time::Duration,
    pub lease: Duration,
}

impl Default for GatewayPolicy {
    fn default() -> Self {
        Self {
            max_batch: 50,
            max_page_size: 1000,
            callback_deadline: Duration::hours(24),
            retry_initial: Duration::seconds(2),
            retry_max: Duration::minutes(10),
            callback_timeout: std::time::Duration::from_secs(10),
            lease: Duration::minutes(2),
        }
    }
}

/// What to answer on the HTTP call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A signed envelope, as the JSON bytes to send: the sync answer (HTTP 200).
    Envelope(Vec<u8>),
    /// The ack `Response`: `ACK` (HTTP 202) or `ERR` with a code.
    Ack(Ack),
}

/// The ack `{"message": {ack_status, timestamp, error?, correlation_id}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `None` for ACK; the `err.*` code for ERR.
    pub error: Option<&'static str>,
    pub message: String,
    pub correlation_id: String,
    pub timestamp: String,
}

impl Ack {
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "ack_status".into(),
            Value::from(if self.error.is_some() { "ERR" } else { "ACK" }),
        );
        body.insert("timestamp".into(), Value::from(self.timestamp.clone()));
        if let Some(code) = self.error {
            body.insert(
                "error".into(),
                json!({"code": code, "message": self.message}),
            );
        }
        body.insert(
            "correlation_id".into(),
            Value::from(self.correlation_id.clone()),
        );
        json!({ "message": body })
    }
}

/// Failures that leave nothing to answer but an HTTP error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `header.sender_id` is another partner than the token's (HTTP 403).
    #[error("the envelope's sender is not the token's partner")]
    Forbidden,
    /// The reply could not be signed (or encrypted, or released): HTTP 500, and no registry
    /// data leaves.
    #[error("the reply could not be sealed: {0}")]
    Seal(String),
}

/// A header or envelope refusal: an `err.*` or `rjct.*` code and why.
#[derive(Debug, Clone)]
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<&EnvelopeError> for Refusal {
    fn from(error: &EnvelopeError) -> Self {
        Refusal::new(error.code(), error.to_string())
    }
}

/// Which operation a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Search,
    TxnStatus,
}

impl Operation {
    fn action(self) -> &'static str {
        match self {
            Operation::Search => "search",
            Operation::TxnStatus => "txn-status",
        }
    }

    fn callback_action(self) -> &'static str {
        match self {
            Operation::Search => "on-search",
            Operation::TxnStatus => "txn-on-status",
        }
    }

    fn job_kind(self) -> &'static str {
        self.action()
    }

    pub fn from_job_kind(kind: &str) -> Option<Self> {
        match kind {
            "search" => Some(Operation::Search),
            "txn-status" => Some(Operation::TxnStatus),
            _ => None,
        }
    }
}

/// The gateway: everything the DCI operations need.
#[derive(Clone)]
pub struct Gateway {
    registry: Registry,
    partners: Partners,
    envelopes: Envelopes,
    mapping: Arc<Mapping>,
    /// The consent policies, each with its view of the mapping: every reply passes them.
    release: Arc<disclosure::Release>,
    policy: GatewayPolicy,
    our_id: String,
    /// Wakes the job worker of this process when a job is stored.
    wake: Arc<tokio::sync::Notify>,
}

impl Gateway {
    pub fn new(
        registry: Registry,
        partners: Partners,
        envelopes: Envelopes,
        mapping: Arc<Mapping>,
        release: Arc<disclosure::Release>,
        policy: GatewayPolicy,
        our_id: String,
    ) -> Self {
        Self {
            registry,
            partners,
            envelopes,
            mapping,
            release,
            policy,
            our_id,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub fn policy(&self) -> &GatewayPolicy {
        &self.policy
    }

    pub fn wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.registry.clock()
    }

    fn now_text(&self) -> String {
        to_text(self.clock().now())
    }

    /// A new correlation id: ours, unique (UUIDv7), well under 99 characters.
    fn new_correlation_id(&self) -> String {
        Uuid::now_v7().to_string()
    }

    fn ack_error(&self, code: &'static str, message: impl Into<String>) -> Reply {
        Reply::Ack(Ack {
            error: Some(code),
            message: message.into(),
            correlation_id: self.new_correlation_id(),
            timestamp: self.now_text(),
        })
    }

    /// `POST /registry/sync/search` and `POST /registry/sync/txn/status`.
    pub async fn sync(
        &self,
        operation: Operation,
        partner: &Partner,
        body: &[u8],
    ) -> Result<Reply, GatewayError> {
        let opened = match self.envelopes.open_for(body, partner).await {
            Ok(opened) => opened,
            Err(EnvelopeError::SenderMismatch) => return Err(GatewayError::Forbidden),
            Err(error @ (EnvelopeError::Timestamp(_) | EnvelopeError::Duplicate)) => {
                let refusal = Refusal::from(&error);
                return self
                    .rejected_envelope(operation, partner, None, &refusal)
                    .await;
            }
            Err(error) => return Ok(self.ack_error(error.code(), error.to_string())),
        };
        let batch = match message_batch(operation, &opened.message) {
            Ok(batch) => batch,
            Err(message) => return Ok(self.ack_error(err::REQUEST_BAD, message)),
        };
        if let Err(refusal) = self.check_header(operation, &opened, batch) {
            if refusal.code.starts_with("err.") {
                return Ok(self.ack_error(refusal.code, refusal.message));
            }
            let transaction_id = opened.message.get("transaction_id").and_then(Value::as_str);
            return self
                .rejected_envelope(operation, partner, transaction_id, &refusal)
                .await;
        }
        let correlation_id = self.new_correlation_id();
        let message = match operation {
            Operation::Search => {
                self.search_response(&partner.sender_id, &opened.message, &correlation_id)
                    .await
            }
            Operation::TxnStatus => {
                self.txn_status_response(&partner.sender_id, &opened.message, &correlation_id)
                    .await
            }
        };
        let (message, completed) = match message {
            Ok(done) => done,
            Err(error) => {
                tracing::warn!(%error, "sync DCI request failed in the store");

                return Ok(self.ack_error(err::SERVICE_UNAVAILABLE, "try again later"));
            }
        };
        let header = self.callback_header(
            operation,
            partner,
            &Uuid::new_v4().to_string(),
            "succ",
            None,
            batch,
            completed,
        );
        // A sync search answers from the query just run; a status reply replays stored
        // results, whose records are checked again.
        let fresh = operation == Operation::Search;
        self.seal_reply(partner, operation, header, message, fresh)
            .await
            .map(Reply::Envelope)
    }

    /// `POST /registry/search` and `POST /registry/txn/status`: checks the envelope and
    /// header, stores the job, then acknowledges. The answer goes to `header.sender_uri`.
    pub async fn accept(
        &self,
        operation: Operation,
        partner: &Partner,
        body: &[u8],
    ) -> Result<Reply, GatewayError> {
        let opened = match self.envelopes.open_for(body, partner).await {
            Ok(opened) => opened,
            Err(EnvelopeError::SenderMismatch) => return Err(GatewayError::Forbidden),
            Err(error @ (EnvelopeError::Timestamp(_) | EnvelopeError::Duplicate)) => {
                return Ok(self.ack_error(err::REQUEST_BAD, format!("{}: {error}", error.code())));
            }
            Err(error) => return Ok(self.ack_error(error.code(), error.to_string())),
        };
        let batch = match message_batch(operation, &opened.message) {
            Ok(batch) => batch,
            Err(message) => return Ok(self.ack_error(err::REQUEST_BAD, message)),
        };
        if let Err(refusal) = self.check_header(operation, &opened, batch) {
            return Ok(match refusal.code {
                code if code.starts_with("err.") => self.ack_error(code, refusal.message),
                header_code::VERSION_INVALID => {
                    self.ack_error(err::VERSION_NOT_SUPPORTED, refusal.message)
                }
                code => self.ack_error(err::REQUEST_BAD, format!("{code}: {}", refusal.message)),
            });
        }
        let callback_url = match opened.header.get("sender_uri").and_then(Value::as_str) {
            Some(url) if partner.allows_callback(url) => url.to_owned(),
            Some(_) => {
                return Ok(self.ack_error(
                    err::SENDER_URI_INVALID,
                    "sender_uri does not start with a callback prefix registered for this partner",
                ));
            }
            None => {
                return Ok(self.ack_error(
                    err::SENDER_URI_INVALID,
                    "an async request needs header.sender_uri, the callback URL",
                ));
            }
        };
        let now = self.clock().now();
        let correlation_id = self.new_correlation_id();
        let request = json!({"header": opened.header, "message": opened.message});
        let job = DciJobRow {
            job_id: Uuid::now_v7(),
            sender_id: partner.sender_id.clone(),
            kind: operation.job_kind().to_owned(),
            transaction_id: text_of(&opened.message, "transaction_id").to_owned(),
            correlation_id: correlation_id.clone(),
            request_message_id: opened.message_id.clone(),
            request: request.to_string(),
            callback_url,
            callback_message_id: Uuid::new_v4().to_string(),
            status: "rcvd".into(),
            result: None,
            delivery: "pending".into(),
            attempts: 0,
            next_attempt_at: now,
            deadline: now + self.policy.callback_deadline,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        if let Err(error) = self
            .registry
            .store()
            .insert_dci_job(&job, &reference_ids(operation, &opened.message))
            .await
        {
            tracing::warn!(%error, "could not store a DCI job");
            return Ok(self.ack_error(err::SERVICE_UNAVAILABLE, "try again later"));
        }
        self.wake.notify_one();
        tracing::info!(job_id = %job.job_id, sender_id = %partner.sender_id, kind = %job.kind, "DCI job accepted");
        Ok(Reply::Ack(Ack {
            error: None,
            message: String::new(),
            correlation_id,
            timestamp: to_text(now),
        }))
    }

    /// Computes a stored job's callback `{"header", "message"}` (unsealed) and its DCI status.
    pub(crate) async fn answer_job(
        &self,
        job: &DciJobRow,
        partner: &Partner,
    ) -> Result<(Value, &'static str), StoreError> {
        let operation = Operation::from_job_kind(&job.kind)
            .ok_or_else(|| StoreError::Other(format!("unknown job kind `{}`", job.kind)))?;
        let request: Value = serde_json::from_str(&job.request)
            .map_err(|e| StoreError::Other(format!("stored job request is not JSON: {e}")))?;
        let message = request.get("message").cloned().unwrap_or(Value::Null);
        let batch = message_batch(operation, &message).unwrap_or(0);
        let (response, completed) = match operation {
            Operation::Search => {
                self.search_response(&job.sender_id, &message, &job.correlation_id)
                    .await?
            }
            Operation::TxnStatus => {
                self.txn_status_response(&job.sender_id, &message, &job.correlation_id)
                    .await?
            }
        };
        let all_rejected = response
            .get("search_response")
            .and_then(Value::as_array)
            .is_some_and(|items| !items.is_empty() && items.iter().all(|i| i["status"] == "rjct"));
        let status = if all_rejected { "rjct" } else { "succ" };
        let header = self.callback_header(
            operation,
            partner,
            &job.callback_message_id,
            "succ",
            None,
            batch,
            completed,
        );
        Ok((envelope_of(header, response), status))
    }

    /// Releases (the consent decision: records checked again unless `fresh`, fields cut to
    /// the policy), seals, and logs the disclosure with its chain entry: the one way registry
    /// data leaves. When the log cannot be written, nothing is sent.
    pub(crate) async fn seal_reply(
        &self,
        partner: &Partner,
        operation: Operation,
        header: Value,
        mut message: Value,
        fresh: bool,
    ) -> Result<Vec<u8>, GatewayError> {
        let message_id = header
            .get("message_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let info = disclosure::ReplyInfo {
            partner: &partner.sender_id,
            action: operation.callback_action(),
            message_id: &message_id,
            fresh,
            now: self.clock().now(),
        };
        let store = self.registry.store();
        let disclosed = disclosure::release(&self.release, store.as_ref(), &info, &mut message)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "a DCI reply was withheld");
                GatewayError::Seal(e.to_string())
            })?;
        let envelope = self
            .envelopes
            .seal(partner, header, message)
            .map_err(|e: SealError| {
                tracing::error!(error = %e, "cannot seal a DCI reply");
                GatewayError::Seal(e.to_string())
            })?;
        if let Some(disclosure) = disclosed {
            store.insert_disclosure(disclosure).await.map_err(|e| {
                tracing::warn!(error = %e, "the disclosure log cannot be written: reply withheld");
                GatewayError::Seal(e.to_string())
            })?;
        }
        Ok(envelope)
    }

    /// A sync reply refusing the whole message at header level: signed, `status: rjct`, the
    /// reason code, and an empty answer.
    async fn rejected_envelope(
        &self,
        operation: Operation,
        partner: &Partner,
        transaction_id: Option<&str>,
        refusal: &Refusal,
    ) -> Result<Reply, GatewayError> {
        let correlation_id = self.new_correlation_id();
        let transaction_id = transaction_id
            .filter(|t| t.len() <= MAX_ID_LEN)
            .unwrap_or_default();
        let message = match operation {
            Operation::Search => json!({
                "transaction_id": transaction_id,
                "correlation_id": correlation_id,
                "search_response": [],
            }),
            Operation::TxnStatus => json!({
                "transaction_id": transaction_id,
                "correlation_id": correlation_id,
                "txnstatus_response": {
                    "txn_type": "search",
                    "txn_status": {
                        "transaction_id": transaction_id,
                        "correlation_id": correlation_id,
                        "search_response": [],
                    },
                },
            }),
        };
        let header = self.callback_header(
            operation,
            partner,
            &Uuid::new_v4().to_string(),
            "rjct",
            Some(refusal),
            0,
            0,
        );
        self.seal_reply(partner, operation, header, message, true)
            .await
            .map(Reply::Envelope)
    }

    /// A `MsgCallbackHeader` for a reply to `partner` (our `sender_id` is set when sealing).
    #[expect(clippy::too_many_arguments, reason = "one header, its fields")]
    fn callback_header(
        &self,
        operation: Operation,
        partner: &Partner,
        message_id: &str,
        status: &str,
        refusal: Option<&Refusal>,
        total: usize,
        completed: usize,
    ) -> Value {
        let mut header = Map::new();
        header.insert("version".into(), "1.0.0".into());
        header.insert("message_id".into(), message_id.into());
        header.insert("message_ts".into(), self.now_text().into());
        header.insert("action".into(), operation.callback_action().into());
        header.insert("status".into(), status.into());
        if let Some(refusal) = refusal {
            header.insert("status_reason_code".into(), refusal.code.into());
            header.insert(
                "status_reason_message".into(),
                truncate(&refusal.message, 999).into(),
            );
        }
        header.insert("total_count".into(), total.into());
        header.insert("completed_count".into(), completed.into());
        header.insert("sender_id".into(), self.our_id.clone().into());
        header.insert("receiver_id".into(), partner.sender_id.clone().into());
        header.insert("is_msg_encrypted".into(), false.into());
        Value::Object(header)
    }

    /// The header rules of the spec (R5, R16): version, action for this endpoint, receiver,
    /// `total_count` = the number of requests in the message, within our batch limit.
    fn check_header(
        &self,
        operation: Operation,
        opened: &Opened,
        batch: usize,
    ) -> Result<(), Refusal> {
        let header = &opened.header;
        if let Some(version) = header.get("version")
            && version.as_str() != Some("1.0.0")
        {
            return Err(Refusal::new(
                header_code::VERSION_INVALID,
                "header.version: this gateway speaks 1.0.0",
            ));
        }
        if opened.action != operation.action() {
            return Err(Refusal::new(
                header_code::ACTION_INVALID,
                format!(
                    "header.action must be `{}` on this endpoint",
                    operation.action()
                ),
            ));
        }
        if let Some(receiver) = header.get("receiver_id")
            && receiver.as_str() != Some(self.our_id.as_str())
        {
            return Err(Refusal::new(
                err::RECEIVER_ID_INVALID,
                format!("header.receiver_id: this gateway is `{}`", self.our_id),
            ));
        }
        let total = header.get("total_count").and_then(Value::as_u64);
        match total {
            Some(total) if total == batch as u64 => {}
            _ => {
                return Err(Refusal::new(
                    header_code::TOTAL_COUNT_INVALID,
                    format!(
                        "header.total_count must be a whole number equal to the requests in the message ({batch})"
                    ),
                ));
            }
        }
        if batch > self.policy.max_batch as usize {
            return Err(Refusal::new(
                header_code::TOTAL_COUNT_LIMIT_EXCEEDED,
                format!("at most {} requests per message", self.policy.max_batch),
            ));
        }
        Ok(())
    }

    /// Answers every item of a (structurally checked) SearchRequest: the SearchResponse and
    /// how many items completed (all of them: answered or rejected).
    async fn search_response(
        &self,
        partner: &str,
        message: &Value,
        correlation_id: &str,
    ) -> Result<(Value, usize), StoreError> {
        let items = message
            .get("search_request")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut seen = HashSet::new();
        let mut responses = Vec::with_capacity(items.len());
        for item in items {
            let reference_id = match item.get("reference_id") {
                Some(Value::String(id)) => id.clone(),
                _ => String::new(),
            };
            let mut response = match self
                .search_item(partner, item, &reference_id, &mut seen)
                .await?
            {
                Ok(data) => data,
                Err(rejection) => json!({
                    "reference_id": reference_id,
                    "timestamp": self.now_text(),
                    "status": "rjct",
                    "status_reason_code": rejection.code,
                    "status_reason_message": truncate(&rejection.message, 999),
                }),
            };
            if let (Some(locale), Some(fields)) = (
                item.get("locale")
                    .and_then(Value::as_str)
                    .filter(|l| valid_locale(l)),
                response.as_object_mut(),
            ) {
                fields.insert("locale".into(), locale.into());
            }
            responses.push(response);
        }
        let completed = responses.len();
        let mut reply = json!({
            "transaction_id": text_of(message, "transaction_id"),
            "correlation_id": correlation_id,
        });
        // Moved in: `json!` would copy every record.
        reply["search_response"] = Value::Array(responses);
        Ok((reply, completed))
    }

    /// One search item: its checks, its query, its records.
    async fn search_item(
        &self,
        partner: &str,
        item: &Value,
        reference_id: &str,
        seen: &mut HashSet<String>,
    ) -> Result<Result<Value, Rejection>, StoreError> {
        let reject = |code, message: &str| Ok(Err(Rejection::new(code, message)));
        if reference_id.is_empty() || reference_id.len() > MAX_ID_LEN {
            return reject(
                search_code::REFERENCE_ID_INVALID,
                "reference_id must be a string of 1 to 99 characters",
            );
        }
        if !seen.insert(reference_id.to_owned()) {
            return reject(
                search_code::REFERENCE_ID_DUPLICATE,
                "reference_id is used by an earlier item of this message",
            );
        }
        let timestamp_ok = item
            .get("timestamp")
            .and_then(Value::as_str)
            .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok());
        if !timestamp_ok {
            return reject(
                search_code::TIMESTAMP_INVALID,
                "timestamp must be an RFC 3339 date-time with a time zone",
            );
        }
        if let Some(locale) = item.get("locale")
            && !locale.as_str().is_some_and(valid_locale)
        {
            return reject(
                search_code::SEARCH_CRITERIA_INVALID,
                "locale must be an ISO 639-3 code: three lower-case letters",
            );
        }
        let Some(criteria) = item.get("search_criteria") else {
            return reject(
                search_code::SEARCH_CRITERIA_INVALID,
                "search_criteria is required",
            );
        };
        // The consent decision, before anything runs: a purpose, a policy granting it to
        // this partner, a query type it allows; its page limit; its view of the mapping
        // (what may be searched and rendered); its records condition in the query.
        let purpose = match disclosure::purpose_of(criteria) {
            Ok(purpose) => purpose,
            Err(message) => return reject(search_code::SEARCH_CRITERIA_INVALID, &message),
        };
        let Some(view) = self.release.grant(partner, &purpose) else {
            return reject(
                search_code::PURPOSE_NOT_PERMITTED,
                &format!(
                    "no consent policy lets this partner receive registry data for purpose `{}`",
                    truncate(&purpose, 100)
                ),
            );
        };
        if let Some(query_type) = criteria.get("query_type").and_then(Value::as_str)
            && !view.policy.allows_query_type(query_type)
        {
            return reject(
                search_code::PURPOSE_NOT_PERMITTED,
                &format!(
                    "the consent policy for this purpose does not allow query_type `{}`",
                    truncate(query_type, 100)
                ),
            );
        }
        let limits = QueryLimits {
            max_page_size: self.policy.max_page_size.min(view.policy.max_page_size),
        };
        let mut plan = match query::compile(&view.mapping, criteria, limits) {
            Ok(plan) => plan,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let request = crate::consent::Request {
            partner,
            purpose: &purpose,
            today: self.clock().now().date_naive(),
        };
        let Some(eligible) =
            crate::consent::decision::records_filter(&view.policy, &plan.query.register, &request)
        else {
            return reject(
                search_code::PURPOSE_NOT_PERMITTED,
                "the consent policy for this purpose does not cover this response_entity",
            );
        };
        plan.query.filter = Filter::And(vec![plan.query.filter, eligible]);
        let mut response = self
            .run_plan(reference_id, &plan, &view.mapping, limits.max_page_size)
            .await?;
        if let Ok(Value::Object(fields)) = &mut response {
            fields.insert(disclosure::PURPOSE_KEY.into(), purpose.into());
        }
        Ok(response)
    }

    async fn run_plan(
        &self,
        reference_id: &str,
        plan: &Plan,
        mapping: &Mapping,
        max_page_size: u32,
    ) -> Result<Result<Value, Rejection>, StoreError> {
        let store = self.registry.store();
        let mut page = store.query_records(&plan.query).await?;
        if plan.page.is_none() && page.records.len() > max_page_size as usize {
            return Ok(Err(Rejection::new(
                search_code::TOO_MANY_RECORDS,
                format!(
                    "more than {max_page_size} records match; narrow the query or ask for pages (pagination)"
                ),
            )));
        }
        let Some(entity) = mapping.entity(&plan.entity) else {
            return Err(StoreError::Other(format!("no entity {}", plan.entity)));
        };
        // The page's children came with it; a Group's members' own rows (disability) are one
        // more read.
        let mut related = Related::default();
        if entity.needs_children() && !page.records.is_empty() {
            if let Some(member) = entity.members.as_deref().and_then(|m| mapping.entity(m))
                && member.needs_children()
            {
                let member_ids: Vec<Uuid> = page
                    .children
                    .iter()
                    .filter(|c| c.register == member.register)
                    .map(|c| c.id)
                    .collect();
                if !member_ids.is_empty() {
                    related.add(
                        store
                            .children_of(&member_ids, member.child_registers())
                            .await?,
                    );
                }
            }
            related.add(std::mem::take(&mut page.children));
        }
        let records: Vec<Value> = page
            .records
            .iter()
            .map(|record| mapping.render_marked(entity, record, &related))
            .collect();
        let mut response = json!({
            "reference_id": reference_id,
            "timestamp": self.now_text(),
            "status": "succ",
            "data": {
                "version": "1.0.0",
                "reg_type": mapping.reg_type(),
                "reg_record_type": entity.reg_record_type,
            },
        });
        // Moved in: `json!` would copy every record.
        response["data"]["reg_records"] = Value::Array(records);
        if let (Some((size, number)), Some(fields)) = (plan.page, response.as_object_mut()) {
            fields.insert(
                "pagination".into(),
                json!({
                    "page_size": size,
                    "page_number": number,
                    "total_count": page.total.unwrap_or(0),
                }),
            );
        }
        Ok(Ok(response))
    }

    /// Answers a TxnStatusRequest from `sender_id`'s stored jobs: their current status, and
    /// their stored results once done.
    async fn txn_status_response(
        &self,
        sender_id: &str,
        message: &Value,
        correlation_id: &str,
    ) -> Result<(Value, usize), StoreError> {
        let request = &message["txnstatus_request"];
        let txn_type = text_of(request, "txn_type");
        let asked_reference = text_of(request, "reference_id");
        let lookup = txn_lookup(request).unwrap_or(DciJobLookup::ReferenceIds(Vec::new()));
        let jobs = if txn_type == "search" {
            self.registry
                .store()
                .find_dci_jobs(sender_id, "search", &lookup)
                .await?
        } else {
            // Subscriptions and receipts do not exist in this registry (yet).
            Vec::new()
        };
        let mut items = Vec::new();
        for job in &jobs {
            items.extend(self.job_items(job));
        }
        if let DciJobLookup::ReferenceIds(ids) = &lookup {
            items.retain(|item| {
                item["reference_id"]
                    .as_str()
                    .is_some_and(|r| ids.iter().any(|id| id == r))
            });
            for id in ids {
                if !items.iter().any(|i| i["reference_id"] == id.as_str()) {
                    items.push(self.unknown_reference(
                        id,
                        "no search request with this reference_id from this sender",
                    ));
                }
            }
        } else if jobs.is_empty() {
            items.push(self.unknown_reference(
                asked_reference,
                &format!(
                    "no {txn_type} transaction found for this {}",
                    text_of(request, "attribute_type")
                ),
            ));
        }
        let (txn_transaction, txn_correlation) = match (jobs.first(), &lookup) {
            (Some(job), _) => (job.transaction_id.clone(), job.correlation_id.clone()),
            (None, DciJobLookup::TransactionId(id)) => (id.clone(), correlation_id.to_owned()),
            (None, DciJobLookup::CorrelationId(id)) => (String::new(), id.clone()),
            (None, DciJobLookup::ReferenceIds(_)) => (String::new(), correlation_id.to_owned()),
        };
        let mut reply = json!({
            "transaction_id": text_of(message, "transaction_id"),
            "correlation_id": correlation_id,
            "txnstatus_response": {
                "txn_type": txn_type,
                "txn_status": {
                    "transaction_id": txn_transaction,
                    "correlation_id": txn_correlation,
                },
            },
        });
        // Moved in: `json!` would copy every stored record.
        reply["txnstatus_response"]["txn_status"]["search_response"] = Value::Array(items);
        Ok((reply, 1))
    }

    /// A job's search_response items: the stored result's, or the request's items with the
    /// job's current status while it is not done.
    fn job_items(&self, job: &DciJobRow) -> Vec<Value> {
        if let Some(items) = job
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
            .and_then(|r| r["message"]["search_response"].as_array().cloned())
        {
            return items;
        }
        let request: Value = serde_json::from_str(&job.request).unwrap_or(Value::Null);
        request["message"]["search_request"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        json!({
                            "reference_id": text_of(item, "reference_id"),
                            "timestamp": to_text(job.updated_at),
                            "status": job.status,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unknown_reference(&self, reference_id: &str, message: &str) -> Value {
        json!({
            "reference_id": reference_id,
            "timestamp": self.now_text(),
            "status": "rjct",
            "status_reason_code": search_code::REFERENCE_ID_INVALID,
            "status_reason_message": message,
        })
    }
}

/// `{"header": …, "message": …}`, both moved in (`json!` would copy them).
fn envelope_of(header: Value, message: Value) -> Value {
    Value::Object(Map::from_iter([
        ("header".to_owned(), header),
        ("message".to_owned(), message),
    ]))
}

/// The number of requests in a message, after checking its structure (the parts the spec
/// requires); a message that fails is `err.request.bad`.
fn message_batch(operation: Operation, message: &Value) -> Result<usize, String> {
    let object = message
        .as_object()
        .ok_or_else(|| "message must be an object".to_owned())?;
    match object.get("transaction_id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_LEN => {}
        _ => return Err("message.transaction_id must be a string of 1 to 99 characters".into()),
    }
    match operation {
        Operation::Search => object
            .get("search_request")
            .and_then(Value::as_array)
            .filter(|items| !items.is_empty())
            .map(Vec::len)
            .ok_or_else(|| "message.search_request must be a non-empty array".into()),
        Operation::TxnStatus => {
            let request = object
                .get("txnstatus_request")
                .filter(|r| r.is_object())
                .ok_or_else(|| "message.txnstatus_request must be an object".to_owned())?;
            let reference = text_of(request, "reference_id");
            if reference.is_empty() || reference.len() > MAX_ID_LEN {
                return Err(
                    "txnstatus_request.reference_id must be a string of 1 to 99 characters".into(),
                );
            }
            match text_of(request, "txn_type") {
                "search" | "subscribe" | "receipt" => {}
                _ => {
                    return Err(
                        "txnstatus_request.txn_type must be search, subscribe or receipt".into(),
                    );
                }
            }
            if let Some(locale) = request.get("locale")
                && !locale.as_str().is_some_and(valid_locale)
            {
                return Err(
                    "txnstatus_request.locale must be three lower-case letters (ISO 639-3)".into(),
                );
            }
            txn_lookup(request)?;
            Ok(1)
        }
    }
}

/// `attribute_type` + `attribute_value` of a status request.
fn txn_lookup(request: &Value) -> Result<DciJobLookup, String> {
    let value = &request["attribute_value"];
    let id = |what: &str| {
        value
            .as_str()
            .filter(|v| !v.is_empty() && v.len() <= MAX_ID_LEN)
            .map(str::to_owned)
            .ok_or_else(|| format!("attribute_value must be a {what} of 1 to 99 characters"))
    };
    match text_of(request, "attribute_type") {
        "transaction_id" => Ok(DciJobLookup::TransactionId(id("transaction_id")?)),
        "correlation_id" => Ok(DciJobLookup::CorrelationId(id("correlation_id")?)),
        "reference_id_list" => {
            let ids: Vec<String> = value
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= MAX_REFERENCE_IDS)
                .ok_or_else(|| format!("attribute_value must be a list of 1 to {MAX_REFERENCE_IDS} reference ids"))?
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN).map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| "each reference id is a string of 1 to 99 characters".to_owned())?;
            Ok(DciJobLookup::ReferenceIds(ids))
        }
        _ => Err("txnstatus_request.attribute_type must be transaction_id, reference_id_list or correlation_id".into()),
    }
}

fn reference_ids(operation: Operation, message: &Value) -> Vec<String> {
    match operation {
        Operation::Search => message["search_request"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["reference_id"].as_str())
                    .filter(|r| !r.is_empty() && r.len() <= MAX_ID_LEN)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        Operation::TxnStatus => {
            vec![text_of(&message["txnstatus_request"], "reference_id").to_owned()]
        }
    }
}

/// ISO 639-3 as the spec's pattern has it: `^[a-z]{3}$`.
fn valid_locale(locale: &str) -> bool {
    locale.len() == 3 && locale.bytes().all(|b| b.is_ascii_lowercase())
}

fn text_of<'v>(value: &'v Value, name: &str) -> &'v str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
