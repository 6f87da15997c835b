//! DCI conformance cases (`conformance/cases/*.yaml`, format in `conformance/README.md`): each a
//! request — built from a partner's point of view, signed with the partner's key — and what
//! the reply must be: HTTP status, ack status and error code, header status and reason, per
//! item status, reason and records, and the reply's shape against the OpenAPI file.
//!
//! The test suite runs them against nsr in process on both backends; `nsr conformance
//! --target URL --token T` runs them against any DCI Social Registry server over HTTP.

pub mod openapi;

use crate::crypto::{SignatureProfile, SigningKey, sign_envelope};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One case, as written in a case file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// `sync-search`, `search`, `sync-txn-status`, `txn-status`.
    pub call: String,
    /// Which token to send: `valid` (default), `none`, `invalid`.
    #[serde(default)]
    pub token: Option<String>,
    /// Header members to set over the defaults (`null` removes one).
    #[serde(default)]
    pub header: Map<String, Value>,
    /// The message; `{{now}}` and `{{unique}}` in strings are replaced.
    #[serde(default)]
    pub message: Value,
    /// Repeat the first `search_request` item to this many items (ids `<ref>-<n>`).
    #[serde(default)]
    pub repeat_items: Option<usize>,
    /// `valid` (default), `none` (unsigned), `tampered` (message changed after signing).
    #[serde(default)]
    pub sign: Option<String>,
    /// Send `message` as a (garbage) encrypted message.
    #[serde(default)]
    pub encrypted_garbage: bool,
    /// `sender_uri` of an async call: `callback` (default: the runner's), `elsewhere`, `none`.
    #[serde(default)]
    pub sender_uri: Option<String>,
    /// Send this text as the body instead of an envelope.
    #[serde(default)]
    pub raw_body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Send the same request twice and check the second reply.
    #[serde(default)]
    pub repeat: bool,
    /// Conditions of the target the case needs (e.g. `small-page-limit`); skipped otherwise.
    #[serde(default)]
    pub needs: Vec<String>,
    pub expect: Expect,
    /// The file it came from.
    #[serde(skip)]
    pub file: PathBuf,
}

/// What the reply must be.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub http: u16,
    /// `sync-search`, `sync-txn-status`, `ack`, `http-error`: the OpenAPI shape to check.
    #[serde(default)]
    pub shape: Option<String>,
    /// `ACK` or `ERR`.
    #[serde(default)]
    pub ack: Option<String>,
    /// The ack's `error.code`, or an HTTP error's `errors[0].code`.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub header_status: Option<String>,
    #[serde(default)]
    pub header_reason: Option<String>,
    /// Per `search_response` item (of the search, or of a status reply's `txn_status`).
    #[serde(default)]
    pub items: Option<Vec<ItemExpect>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemExpect {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The records' `@id`s, in order (after the last `:`; e.g. `IND-NSR-0001`).
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    #[serde(default)]
    pub total_count: Option<u64>,
    /// JSON pointer into the first record → expected value.
    #[serde(default)]
    pub record: Map<String, Value>,
}

impl Case {
    /// Every code the case expects to see (for coverage).
    pub fn codes(&self) -> Vec<String> {
        let mut out: Vec<String> = [&self.expect.error, &self.expect.header_reason]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for item in self.expect.items.iter().flatten() {
            out.extend(item.reason.clone());
        }
        out
    }
}

/// Loads every `*.yaml` case file in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut loaded: Vec<Case> =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        for case in &mut loaded {
            case.file = file.clone();
        }
        cases.extend(loaded);
    }
    Ok(cases)
}

/// Who the runner is, towards the server under test.
pub struct Target<'a> {
    /// The partner's `sender_id`.
    pub sender_id: String,
    /// The server's `receiver_id` (left out of headers when `None`).
    pub receiver_id: Option<String>,
    /// The partner's signing key and profile (`None`: send unsigned).
    pub signing: Option<(&'a SigningKey, SignatureProfile)>,
    /// A valid access token for the partner.
    pub token: String,
    /// A callback URL the server accepts for this partner (async cases).
    pub callback_url: String,
    /// Conditions the target meets (see `Case::needs`).
    pub conditions: BTreeSet<String>,
}

/// How requests reach the server.
#[async_trait]
pub trait Transport: Send + Sync {
    /// POSTs `body` to `path` with `headers`; returns the status and the body.
    async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String>;
}

/// Real HTTP to a base URL.
pub struct HttpTransport {
    base: String,
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new(base: &str) -> Result<Self, String> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes.to_vec()))
    }
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub file: PathBuf,
    /// `None`: skipped (the target lacks a condition the case needs).
    pub problems: Option<Vec<String>>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.problems.as_ref().is_some_and(Vec::is_empty)
    }
}

/// Runs `cases` in order. `now` is the time to stamp messages with.
pub async fn run(
    cases: &[Case],
    target: &Target<'_>,
    transport: &dyn Transport,
    now: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
) -> Vec<Outcome> {
    let counter = AtomicU64::new(0);
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let problems = if case.needs.iter().all(|n| target.conditions.contains(n)) {
            Some(run_case(case, target, transport, now(), &counter).await)
        } else {
            None
        };
        out.push(Outcome {
            name: case.name.clone(),
            file: case.file.clone(),
            problems,
        });
    }
    out
}

async fn run_case(
    case: &Case,
    target: &Target<'_>,
    transport: &dyn Transport,
    now: DateTime<Utc>,
    counter: &AtomicU64,
) -> Vec<String> {
    let unique = || {
        format!(
            "conf-{}-{}",
            now.timestamp_millis(),
            counter.fetch_add(1, Ordering::Relaxed)
        )
    };
    let (path, action, is_async) = match case.call.as_str() {
        "sync-search" => ("/registry/sync/search", "search", false),
        "search" => ("/registry/search", "search", true),
        "sync-txn-status" => ("/registry/sync/txn/status", "txn-status", false),
        "txn-status" => ("/registry/txn/status", "txn-status", true),
        other => return vec![format!("unknown call `{other}`")],
    };
    let body = match &case.raw_body {
        Some(raw) => raw.clone().into_bytes(),
        None => {
            let mut message = fill(&case.message, &now, &unique);
            if let (Some(n), Some(items)) = (
                case.repeat_items,
                message
                    .get_mut("search_request")
                    .and_then(Value::as_array_mut),
            ) {
                let first = items.first().cloned().unwrap_or(Value::Null);
                *items = (0..n)
                    .map(|i| {
                        let mut item = first.clone();
                        let reference =
                            format!("{}-{i}", first["reference_id"].as_str().unwrap_or("r"));
                        item["reference_id"] = json!(reference);
                        item
                    })
                    .collect();
            }
            let batch = match action {
                "search" => message["search_request"].as_array().map_or(1, Vec::len),
                _ => 1,
            };
            let mut header = Map::new();
            header.insert("version".into(), json!("1.0.0"));
            header.insert("message_id".into(), json!(unique()));
            header.insert("message_ts".into(), json!(now.to_rfc3339()));
            header.insert("action".into(), json!(action));
            header.insert("sender_id".into(), json!(target.sender_id));
            if let Some(receiver) = &target.receiver_id {
                header.insert("receiver_id".into(), json!(receiver));
            }
            header.insert("total_count".into(), json!(batch));
            header.insert("is_msg_encrypted".into(), json!(false));
            if is_async {
                match case.sender_uri.as_deref().unwrap_or("callback") {
                    "callback" => {
                        header.insert(
                            "sender_uri".into(),
                            json!(format!(
                                "{}/{}",
                                target.callback_url.trim_end_matches('/'),
                                if action == "search" {
                                    "on-search"
                                } else {
                                    "txn-on-status"
                                }
                            )),
                        );
                    }
                    "elsewhere" => {
                        header.insert(
                            "sender_uri".into(),
                            json!("https://not-registered.example.org/on-search"),
                        );
                    }
                    _ => {}
                }
            }
            for (name, value) in &case.header {
                if value.is_null() {
                    header.remove(name);
                } else {
                    header.insert(name.clone(), fill(value, &now, &unique));
                }
            }
            if case.encrypted_garbage {
                header.insert("is_msg_encrypted".into(), json!(true));
                message = json!({
                    "header": {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": "unknown-key"},
                    "ciphertext": "AAAA", "encrypted_key": "AAAA", "tag": "AAAA", "iv": "AAAA",
                });
            }
            let header = Value::Object(header);
            let sign = case.sign.as_deref().unwrap_or("valid");
            let signature = match (sign, target.signing) {
                ("none", _) | (_, None) => None,
                (_, Some((key, profile))) => {
                    match sign_envelope(
                        profile,
                        key,
                        &target.sender_id,
                        &header,
                        &message,
                        now,
                        Duration::minutes(5),
                    ) {
                        Ok(signature) => Some(signature),
                        Err(e) => return vec![format!("cannot sign: {e}")],
                    }
                }
            };
            if sign == "tampered" {
                message["transaction_id"] = json!("changed-after-signing");
            }
            let mut envelope = Map::new();
            if let Some(signature) = signature {
                envelope.insert("signature".into(), json!(signature));
            }
            envelope.insert("header".into(), header);
            envelope.insert("message".into(), message);
            Value::Object(envelope).to_string().into_bytes()
        }
    };
    let mut headers = vec![(
        "content-type".to_owned(),
        case.content_type
            .clone()
            .unwrap_or_else(|| "application/json".into()),
    )];
    match case.token.as_deref().unwrap_or("valid") {
        "none" => {}
        "invalid" => headers.push(("authorization".into(), "Bearer not.a.valid-token".into())),
        _ => headers.push(("authorization".into(), format!("Bearer {}", target.token))),
    }
    let mut reply = transport.post(path, &headers, body.clone()).await;
    if case.repeat && reply.is_ok() {
        reply = transport.post(path, &headers, body).await;
    }
    match reply {
        Ok((status, bytes)) => {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            check(&case.expect, status, &body)
        }
        Err(error) => vec![format!("request failed: {error}")],
    }
}

/// Replaces `{{now}}` and `{{unique}}` in every string of `value`.
fn fill(value: &Value, now: &DateTime<Utc>, unique: &dyn Fn() -> String) -> Value {
    match value {
        Value::String(text) if text.contains("{{") => Value::String(
            text.replace("{{now}}", &now.to_rfc3339())
                .replace("{{unique}}", &unique()),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill(i, now, unique)).collect()),
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.clone(), fill(v, now, unique)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn check(expect: &Expect, status: u16, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if status != expect.http {
        problems.push(format!("HTTP {status}, expected {}", expect.http));
    }
    if let Some(shape) = &expect.shape {
        let pointer = match shape.as_str() {
            "sync-search" => openapi::SYNC_SEARCH_REPLY,
            "sync-txn-status" => openapi::SYNC_TXN_STATUS_REPLY,
            "ack" => openapi::ACK,
            "http-error" => openapi::HTTP_ERROR,
            other => {
                problems.push(format!("unknown shape `{other}`"));
                ""
            }
        };
        if !pointer.is_empty() {
            problems.extend(
                openapi::validate(body, pointer)
                    .into_iter()
                    .map(|p| format!("shape: {p}")),
            );
        }
    }
    let mut expect_text = |name: &str, got: Option<&str>, want: &Option<String>| {
        if let Some(want) = want
            && got != Some(want.as_str())
        {
            problems.push(format!(
                "{name} is {}, expected {want}",
                got.unwrap_or("absent")
            ));
        }
    };
    expect_text(
        "ack_status",
        body["message"]["ack_status"].as_str(),
        &expect.ack,
    );
    let error = body["message"]["error"]["code"]
        .as_str()
        .or_else(|| body["errors"][0]["code"].as_str());
    expect_text("error code", error, &expect.error);
    expect_text(
        "header.status",
        body["header"]["status"].as_str(),
        &expect.header_status,
    );
    expect_text(
        "header.status_reason_code",
        body["header"]["status_reason_code"].as_str(),
        &expect.header_reason,
    );
    if let Some(items) = &expect.items {
        let got = body["message"]["search_response"]
            .as_array()
            .or_else(|| {
                body["message"]["txnstatus_response"]["txn_status"]["search_response"].as_array()
            })
            .cloned()
            .unwrap_or_default();
        if got.len() != items.len() {
            problems.push(format!(
                "{} search_response items, expected {}",
                got.len(),
                items.len()
            ));
        }
        for (i, (want, got)) in items.iter().zip(&got).enumerate() {
            let mut item_text = |name: &str, value: Option<&str>, expected: &Option<String>| {
                if let Some(expected) = expected
                    && value != Some(expected.as_str())
                {
                    problems.push(format!(
                        "item {i}: {name} is {}, expected {expected}",
                        value.unwrap_or("absent")
                    ));
                }
            };
            item_text("status", got["status"].as_str(), &want.status);
            item_text(
                "status_reason_code",
                got["status_reason_code"].as_str(),
                &want.reason,
            );
            let records = got["data"]["reg_records"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(ids) = &want.ids {
                let found: Vec<String> = records
                    .iter()
                    .map(|r| {
                        r["@id"]
                            .as_str()
                            .unwrap_or("")
                            .rsplit(':')
                            .next()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect();
                if &found != ids {
                    problems.push(format!("item {i}: records {found:?}, expected {ids:?}"));
                }
            }
            if let Some(total) = want.total_count
                && got["pagination"]["total_count"].as_u64() != Some(total)
            {
                problems.push(format!(
                    "item {i}: total_count {}, expected {total}",
                    got["pagination"]["total_count"]
                ));
            }
            for (pointer, expected) in &want.record {
                let value = records.first().and_then(|r| r.pointer(pointer));
                if value != Some(expected) {
                    problems.push(format!(
                        "item {i}: record{pointer} is {}, expected {expected}",
                        value.map_or("absent".into(), Value::to_string)
                    ));
                }
            }
        }
    }
    problems
}

/// The pass/fail table.
pub fn report(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let width = outcomes
        .iter()
        .map(|o| o.name.chars().count())
        .max()
        .unwrap_or(4)
        .min(80);
    for outcome in outcomes {
        let verdict = match &outcome.problems {
            None => "SKIP",
            Some(p) if p.is_empty() => "PASS",
            Some(_) => "FAIL",
        };
        let _ = writeln!(
            out,
            "{verdict}  {:<width$}  {}",
            outcome.name,
            outcome
                .file
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        );
        for problem in outcome.problems.iter().flatten() {
            let _ = writeln!(out, "        - {problem}");
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let skipped = outcomes.iter().filter(|o| o.problems.is_none()).count();
    let _ = writeln!(
        out,
        "{passed} passed, {} failed, {skipped} skipped, of {}",
        outcomes.len() - passed - skipped,
        outcomes.len()
    );
    out
}
