//! The staff API, driven in-process through the real router (`oneshot`), on an isolated
//! database with a fake clock. `contract`-style stories run on SQLite and on PostgreSQL.

mod access;
mod login;
mod oidc;
mod openapi;
mod partners;
mod reading;
mod requests;

use crate::support::{Db, TestRegistry};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use nsr::auth::{Auth, AuthSettings, LoginLimits, OidcSettings, Role, TokenKey};
use nsr::crypto::KeyStore;
use nsr::http::router;
use nsr::registry::{Author, Draft, DraftMode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The router over a test registry, and the authentication it uses.
pub struct TestApp {
    pub t: TestRegistry,
    pub auth: Arc<Auth>,
    pub app: Router,
}

pub fn settings() -> AuthSettings {
    AuthSettings {
        token_ttl: chrono::Duration::minutes(15),
        limits: LoginLimits {
            per_account: 5,
            per_address: 20,
            window: chrono::Duration::minutes(5),
        },
        oidc: None,
    }
}

/// A response: status, body (JSON, or a string for anything else), headers.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: axum::http::HeaderMap,
}

impl Reply {
    /// The error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl TestApp {
    pub async fn new(db: Db) -> Option<Self> {
        Self::with(db, settings(), None).await
    }

    /// With these authentication settings, and (if given) these auto-approved sources.
    pub async fn with(
        db: Db,
        settings: AuthSettings,
        auto_approve: Option<Vec<String>>,
    ) -> Option<Self> {
        let mut t = TestRegistry::new(db).await?;
        if let Some(sources) = auto_approve {
            t.registry = t.registry.clone().with_auto_approve_sources(sources);
        }
        let auth = Arc::new(Auth::new(
            t.store().clone(),
            t.clock.clone(),
            TokenKey::generate(),
            settings,
        ));
        let keys = KeyStore::open_or_create_dir(&t.dir.path().join("keys")).unwrap();
        let app = router(t.app_state(Arc::new(keys), auth.clone()).await);
        Some(Self { t, auth, app })
    }

    /// Adds a staff user with `roles` and returns an access token for them.
    pub async fn user(&self, name: &str, roles: &[Role]) -> String {
        let user = self
            .auth
            .users()
            .add("test-admin", name, PASSWORD, roles)
            .await
            .unwrap();
        self.auth.issue_token(&user).unwrap().token
    }

    /// Sends a request from `address`.
    pub async fn call_from(
        &self,
        address: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = axum::http::Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => request.body(Body::empty()).unwrap(),
        };
        let peer: SocketAddr = format!("{address}:40000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_from("10.0.0.1", method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// A household HH-T1 with members IND-T1 and IND-T2, a second household HH-T2, and a
    /// disability row DIS-T1 of IND-T1, written directly (as a seed).
    pub async fn seed(&self) {
        let draft = |register: &str, id: &str, parent: Option<&str>, fields: Value| Draft {
            register: register.into(),
            functional_id: Some(id.into()),
            parent: parent.map(str::to_owned),
            status: None,
            fields: fields.as_object().cloned().unwrap(),
            mode: DraftMode::Replace,
        };
        self.t
            .registry
            .write(
                &Author {
                    actor: "seeder".into(),
                    source: "test".into(),
                    reason: None,
                },
                &[
                    draft(
                        "household",
                        "HH-T1",
                        None,
                        json!({"headship_type": "FEMALE_HEADED", "size_total": 2}),
                    ),
                    draft(
                        "household",
                        "HH-T2",
                        None,
                        json!({"headship_type": "MALE_HEADED", "size_total": 1}),
                    ),
                    draft(
                        "individual",
                        "IND-T1",
                        Some("HH-T1"),
                        json!({"foundational_id": "NID-1", "first_name": "Ada", "last_name": "Okafor", "gender": "FEMALE", "birth_date": "1990-05-01"}),
                    ),
                    draft(
                        "individual",
                        "IND-T2",
                        Some("HH-T1"),
                        json!({"foundational_id": "NID-2", "first_name": "Chidi", "last_name": "Okafor", "gender": "MALE", "birth_date": "1988-02-11"}),
                    ),
                    draft(
                        "disability",
                        "DIS-T1",
                        Some("IND-T1"),
                        json!({"disability_domain": "VISION", "disability_severity": "SOME_DIFFICULTY"}),
                    ),
                ],
            )
            .await
            .unwrap();
    }

    pub async fn finish(self) {
        self.t.finish().await;
    }
}

/// OIDC settings for a provider at `base`.
pub fn oidc_settings(base: &str) -> AuthSettings {
    AuthSettings {
        oidc: Some(OidcSettings {
            issuer: format!("{base}/realms/nsr"),
            audience: "nsr-api".into(),
            jwks_url: format!("{base}/realms/nsr/protocol/openid-connect/certs"),
            roles_claim: "realm_access.roles".into(),
            username_claim: "preferred_username".into(),
        }),
        ..settings()
    }
}

/// Runs each story on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL.
macro_rules! api_contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = crate::api::TestApp::new(crate::support::Db::Sqlite).await.unwrap();
                    super::$name(&app).await;
                    app.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(app) = crate::api::TestApp::new(crate::support::Db::Postgres).await else { return };
                    super::$name(&app).await;
                    app.finish().await;
                }
            )*
        }
    };
}
pub(crate) use api_contract;
