//! Password logins: a token that works until it expires, one answer for every failure, the
//! throttle per account and per address (time moved by the fake clock, no sleeping), and
//! disabled users shut out at once.

use super::{PASSWORD, TestApp, api_contract};
use crate::support::Db;
use nsr::auth::{LoginLimits, Role};
use serde_json::json;

fn login(name: &str, password: &str) -> serde_json::Value {
    json!({"username": name, "password": password})
}

async fn a_login_returns_a_token_that_expires(app: &TestApp) {
    app.user("ana", &[Role::Viewer, Role::Enumerator]).await;
    let reply = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 900);
    assert_eq!(reply.body["roles"], json!(["viewer", "enumerator"]));
    let token = reply.body["access_token"].as_str().unwrap().to_owned();
    let me = app.get("/api/v1/auth/me", &token).await;
    assert_eq!(me.body["name"], "ana");
    assert_eq!(me.body["sees_personal_data"], true);

    app.t.clock.advance(chrono::Duration::minutes(15));
    let expired = app.get("/api/v1/auth/me", &token).await;
    assert_eq!(
        (expired.status, expired.code()),
        (401, "auth.invalid_token")
    );
}

async fn wrong_passwords_unknown_and_disabled_users_get_the_same_answer(app: &TestApp) {
    let token = app.user("ana", &[Role::Viewer]).await;
    let admin = app.user("root", &[Role::Admin]).await;
    let wrong = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", "not the password")),
        )
        .await;
    let unknown = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("nobody", PASSWORD)),
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (401, "auth.invalid_credentials")
    );
    assert_eq!(wrong.body, unknown.body);

    let disabled = app
        .post("/api/v1/users/ana/disable", &admin, json!({}))
        .await;
    assert_eq!(disabled.body["disabled"], true, "{disabled:?}");
    let after = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(after.body, wrong.body);
    let old_token = app.get("/api/v1/auth/me", &token).await;
    assert_eq!(
        old_token.status, 401,
        "a disabled user's token stops working"
    );

    // The user change is in the audit chain.
    let entries = app.t.store().audit_entries(0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.subject.as_str()))
        .collect();
    assert!(actions.contains(&("user.add", "user:ana")), "{actions:?}");
    assert!(
        actions.contains(&("user.disable", "user:ana")),
        "{actions:?}"
    );
    assert!(entries.iter().all(|e| !e.detail.contains("argon2")));
}

async fn users_are_managed_by_admins_through_the_api(app: &TestApp) {
    let admin = app.user("root", &[Role::Admin]).await;
    let created = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "new.user", "password": PASSWORD, "roles": ["approver", "viewer"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["roles"], json!(["viewer", "approver"]));
    assert!(created.body.get("password_hash").is_none());
    let again = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "new.user", "password": PASSWORD, "roles": ["viewer"]}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "user.exists"));
    let bad = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Bad Name", "password": "short", "roles": []}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "user.invalid"));
    assert_eq!(bad.body["error"]["problems"].as_array().unwrap().len(), 3);
    let listed = app.get("/api/v1/users", &admin).await;
    let names: Vec<&str> = listed.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new.user", "root"]);
}

api_contract!(
    a_login_returns_a_token_that_expires,
    wrong_passwords_unknown_and_disabled_users_get_the_same_answer,
    users_are_managed_by_admins_through_the_api,
);

#[tokio::test]
async fn failed_logins_are_throttled_per_account_then_released() {
    let app = TestApp::new(Db::Sqlite).await.unwrap();
    app.user("ana", &[Role::Viewer]).await;
    for _ in 0..5 {
        let reply = app
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(login("ana", "guess guess guess")),
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    // Even the right password is refused while the account is locked, from any address.
    let locked = app
        .call_from(
            "10.9.9.9",
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(
        (locked.status, locked.code()),
        (429, "request.too_many"),
        "{locked:?}"
    );
    assert_eq!(locked.headers["retry-after"], "300");
    app.t.clock.advance(chrono::Duration::seconds(299));
    let still = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(still.headers["retry-after"], "1");
    app.t.clock.advance(chrono::Duration::seconds(1));
    let released = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(released.status, 200, "{released:?}");
    app.finish().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address_across_accounts() {
    let settings = nsr::auth::AuthSettings {
        limits: LoginLimits {
            per_account: 100,
            per_address: 3,
            window: chrono::Duration::minutes(10),
        },
        ..super::settings()
    };
    let app = TestApp::with(Db::Sqlite, settings, None).await.unwrap();
    app.user("ana", &[Role::Viewer]).await;
    for name in ["bob", "cat", "dan"] {
        let reply = app
            .call_from(
                "192.0.2.7",
                "POST",
                "/api/v1/auth/login",
                None,
                Some(login(name, PASSWORD)),
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    let sprayer = app
        .call_from(
            "192.0.2.7",
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(sprayer.status, 429);
    assert_eq!(sprayer.headers["retry-after"], "600");
    let elsewhere = app
        .call_from(
            "192.0.2.8",
            "POST",
            "/api/v1/auth/login",
            None,
            Some(login("ana", PASSWORD)),
        )
        .await;
    assert_eq!(elsewhere.status, 200);
    app.finish().await;
}
