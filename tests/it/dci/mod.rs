//! The DCI gateway end to end, in process: the router over a registry holding the NSR sample,
//! a registered partner with its own keys, signed envelopes, real HTTP callback receivers, and
//! the job worker driven pass by pass under the fake clock. Every reply is checked against the
//! vendored OpenAPI and JSON-LD files (`schema`).

mod binary;
mod conformance;
mod jobs;
pub mod schema;
mod search;
mod token;

use crate::support::TestRegistry;
use axum::body::Body;
use chrono::Duration;
use http_body_util::BodyExt;
use nsr::clock::Clock;
use nsr::config::Config;
use nsr::crypto::{Alg, Jwks, KeyStore, SignatureProfile, sign_envelope};
use nsr::dci::{Gateway, Worker};
use nsr::http::router;
use nsr::partners::{NewPartner, Partners, RemoteJwks};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

pub const SENDER: &str = "spmis.example.org";
pub const CLIENT_ID: &str = "spmis";
pub const SECRET: &str = "correct horse battery staple";
pub const OUR_ID: &str = "nsr.test";
/// The purpose the test policy (tests/fixtures/consent-policies) grants the test partner.
pub const PURPOSE: &str = "social_protection";

/// The consent policies the gateway tests run with: every field to the test partner, for
/// `social_protection`, on a legal basis.
pub fn test_policies_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/consent-policies")
}

/// A partner system's keys.
pub struct PartnerSide {
    _dir: tempfile::TempDir,
    pub keys: KeyStore,
}

impl PartnerSide {
    pub fn new(t: &TestRegistry) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = KeyStore::open_or_create_dir(&dir.path().join("keys")).unwrap();
        keys.generate(Alg::EdDsa, t.clock.now()).unwrap();
        Self { _dir: dir, keys }
    }

    pub fn jwks(&self) -> String {
        serde_json::to_string(&Jwks {
            keys: vec![self.keys.signing_key().unwrap().public_jwk().clone()],
        })
        .unwrap()
    }
}

/// The configuration the tests run the gateway with.
pub fn config() -> Config {
    Config {
        mappings_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
        consent_policies_dir: test_policies_dir(),
        gateway_sender_id: OUR_ID.into(),
        dci_max_batch: 5,
        dci_max_page_size: 10,
        callback_retry_initial_seconds: 2,
        callback_retry_max_seconds: 60,
        callback_deadline_seconds: 600,
        job_lease_seconds: 120,
        ..Config::default()
    }
}

/// A gateway under test.
pub struct Dci<'t> {
    pub t: &'t TestRegistry,
    pub partner: PartnerSide,
    pub keys: Arc<KeyStore>,
    pub gateway: Arc<Gateway>,
    pub app: axum::Router,
    /// Staff authentication of the same app (auditors read the disclosure log).
    pub auth: Arc<nsr::auth::Auth>,
    counter: AtomicU64,
}

impl<'t> Dci<'t> {
    /// The NSR sample loaded, our keys, one partner (search and txn-status scopes, JWS,
    /// callbacks to this machine).
    pub async fn new(t: &'t TestRegistry) -> Self {
        Self::with(t, &["registry.search", "registry.txn-status"]).await
    }

    pub async fn with(t: &'t TestRegistry, scopes: &[&str]) -> Self {
        Self::with_config(t, scopes, config()).await
    }

    /// The gateway with the consent policies in `dir` (the test partner, both scopes).
    pub async fn with_policies(t: &'t TestRegistry, dir: &Path) -> Self {
        let config = Config {
            consent_policies_dir: dir.to_path_buf(),
            ..config()
        };
        Self::with_config(t, &["registry.search", "registry.txn-status"], config).await
    }

    pub async fn with_config(t: &'t TestRegistry, scopes: &[&str], config: Config) -> Self {
        nsr::ingest::sample::seed_sample(&t.registry).await.unwrap();
        let (keys, _) =
            KeyStore::open_or_init(&t.dir.path().join("our-keys"), t.clock.now()).unwrap();
        let keys = Arc::new(keys);
        let partner = PartnerSide::new(t);
        let partners = Partners::new(
            t.store().clone(),
            t.clock.clone(),
            RemoteJwks::new(Duration::minutes(5), std::time::Duration::from_secs(5)).unwrap(),
        );
        partners
            .add(
                NewPartner {
                    sender_id: SENDER.into(),
                    client_id: CLIENT_ID.into(),
                    scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                    signature_profile: Some(SignatureProfile::Jws),
                    algorithms: vec![Alg::EdDsa],
                    jwks: Some(partner.jwks()),
                    callback_prefixes: vec!["http://127.0.0.1:".into()],
                    client_secret: Some(SECRET.into()),
                    ..NewPartner::default()
                },
                "test",
            )
            .await
            .unwrap();
        let auth = t.staff_auth();
        let state = t.app_state_with(keys.clone(), auth.clone(), &config).await;
        let gateway = state.dci.clone();
        let app = router(state);
        Self {
            t,
            partner,
            keys,
            gateway,
            app,
            auth,
            counter: AtomicU64::new(0),
        }
    }

    pub fn worker(&self) -> Worker {
        Worker::new(self.gateway.clone()).unwrap()
    }

    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends a raw request through the router.
    pub async fn send(&self, request: axum::http::Request<Body>) -> (u16, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, value)
    }

    /// A token for the test partner with every scope it has.
    pub async fn token(&self) -> String {
        let (status, body) = self
            .send(
                axum::http::Request::post("/oauth2/client/token")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(format!(
                        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={}",
                        SECRET.replace(' ', "+")
                    )))
                    .unwrap(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A request header from the partner.
    pub fn header(&self, action: &str, total_count: usize) -> Value {
        json!({
            "version": "1.0.0",
            "message_id": self.next_id("msg"),
            "message_ts": self.t.clock.now().to_rfc3339(),
            "action": action,
            "sender_id": SENDER,
            "receiver_id": OUR_ID,
            "total_count": total_count,
            "is_msg_encrypted": false,
        })
    }

    /// `{signature, header, message}` signed with the partner's key.
    pub fn envelope(&self, header: &Value, message: &Value) -> Value {
        let signature = sign_envelope(
            SignatureProfile::Jws,
            self.partner.keys.signing_key().unwrap(),
            SENDER,
            header,
            message,
            self.t.clock.now(),
            Duration::minutes(5),
        )
        .unwrap();
        json!({"signature": signature, "header": header, "message": message})
    }

    /// A SearchRequest message of the given items.
    pub fn search_message(&self, items: Vec<Value>) -> Value {
        json!({"transaction_id": self.next_id("txn"), "search_request": items})
    }

    /// A search item; criteria naming no purpose get the test policy's
    /// (`consent.purpose.code: social_protection`).
    pub fn search_item(&self, reference_id: &str, mut criteria: Value) -> Value {
        if let Some(object) = criteria.as_object_mut()
            && !object.contains_key("consent")
            && !object.contains_key("authorize")
        {
            object.insert("consent".into(), json!({"purpose": {"code": PURPOSE}}));
        }
        json!({
            "reference_id": reference_id,
            "timestamp": self.t.clock.now().to_rfc3339(),
            "search_criteria": criteria,
            "locale": "eng",
        })
    }

    /// POSTs a JSON body with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.send(
            axum::http::Request::post(path)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        )
        .await
    }

    /// A signed sync search of one criteria; returns status and reply.
    pub async fn sync_search(&self, token: &str, criteria: Value) -> (u16, Value) {
        let message = self.search_message(vec![self.search_item("r-1", criteria)]);
        let envelope = self.envelope(&self.header("search", 1), &message);
        let (status, reply) = self.post("/registry/sync/search", token, &envelope).await;
        if status == 200 {
            schema::assert_search_envelope(&reply, schema::SYNC_SEARCH_REPLY);
            self.assert_signed_by_us(&reply);
        }
        (status, reply)
    }

    /// Our signature on a reply verifies with our JWKS.
    pub fn assert_signed_by_us(&self, envelope: &Value) {
        nsr::crypto::verify_envelope(
            SignatureProfile::Jws,
            envelope["signature"].as_str(),
            &envelope["header"],
            &envelope["message"],
            &self.keys.jwks().keys,
            &nsr::crypto::VerifyPolicy::default(),
            self.t.clock.now(),
        )
        .unwrap();
        assert_eq!(envelope["header"]["sender_id"], OUR_ID);
    }
}

/// What a partner's callback endpoint received, and how it answers.
#[derive(Default)]
pub struct Receiver {
    /// Every envelope POSTed to it, in order, and whether it acknowledged it.
    pub received: Mutex<Vec<Value>>,
    pub acknowledged: Mutex<Vec<Value>>,
    /// While true it answers 503 (the partner is down).
    pub down: Mutex<bool>,
    arrived: tokio::sync::Notify,
}

impl Receiver {
    /// A partner callback endpoint on a real local port; returns it and its base URL.
    pub async fn start() -> (Arc<Self>, String) {
        use axum::routing::post;
        let receiver = Arc::new(Self::default());
        let shared = receiver.clone();
        let app = axum::Router::new().route(
            "/callback/{action}",
            post(move |body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    shared.received.lock().unwrap().push(envelope.clone());
                    let down = *shared.down.lock().unwrap();
                    if !down {
                        shared.acknowledged.lock().unwrap().push(envelope.clone());
                    }
                    shared.arrived.notify_waiters();
                    if down {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"message": "down"})),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"message": {
                            "ack_status": "ACK",
                            "timestamp": "2026-11-01T09:00:00Z",
                            "correlation_id": envelope["message"]["correlation_id"],
                        }})),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{address}/callback"))
    }

    /// Waits (for real time, up to `limit`) until `done` holds for what arrived.
    pub async fn wait_until(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&Self) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return done(self);
            }
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}
