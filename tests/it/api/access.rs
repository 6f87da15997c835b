//! Every route × every role (and anonymous) against the one access table: anonymous gets 401
//! where a token is needed, a role not in the table 403, a role in it neither.

use super::{PASSWORD, TestApp, api_contract};
use nsr::auth::Role;
use nsr::http::access::{Access, ROUTES, rule_for};
use serde_json::{Value, json};

/// A concrete path for a routed path, with its parameters filled in with things that exist.
fn concrete(path: &str, request_id: &str) -> String {
    path.replace("{register}", "individual")
        .replace("{name}", "walk-target")
        .replace("{*rest}", "index.html")
        .replace(
            "{id}",
            if path.starts_with("/api/v1/change-requests") {
                request_id
            } else {
                "IND-T1"
            },
        )
}

/// A body the route accepts (a later call may still be refused as a conflict: that is fine).
fn body_for(method: &str, path: &str, caller: &str) -> Option<Value> {
    if method != "POST" {
        return None;
    }
    Some(match path {
        "/api/v1/auth/login" => json!({"username": "walk-viewer", "password": PASSWORD}),
        "/api/v1/labels" => json!({"label": "walk", "ids": ["IND-T1"]}),
        "/api/v1/change-requests" => json!({
            "reason": "walk",
            "changes": [{"op": "update", "id": "IND-T2", "fields": {"occupation": format!("walked by {caller}")}}],
        }),
        "/api/v1/change-requests/{id}/reject" => json!({"reason": "walk"}),
        "/api/v1/users" => {
            json!({"name": format!("new-{caller}"), "password": PASSWORD, "roles": ["viewer"]})
        }
        _ => json!({}),
    })
}

async fn every_route_allows_exactly_the_roles_in_the_table(app: &TestApp) {
    app.seed().await;
    let mut callers: Vec<(Option<Role>, String)> = vec![];
    for role in Role::ALL {
        let token = app.user(&format!("walk-{role}"), &[role]).await;
        callers.push((Some(role), token));
    }
    app.user("walk-target", &[Role::Viewer]).await;
    // A pending request made by the walking enumerator, so that its cancel is by the maker
    // and its approval by someone else.
    let enumerator = &callers[1].1;
    let submitted = app
        .post(
            "/api/v1/change-requests",
            enumerator,
            json!({"changes": [{"op": "update", "id": "IND-T1", "fields": {"occupation": "Weaver"}}]}),
        )
        .await;
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let request_id = submitted.body["id"].as_str().unwrap().to_owned();

    let mut checked = 0;
    for rule in ROUTES {
        let path = concrete(rule.path, &request_id);
        // Anonymous.
        let reply = app
            .call(
                rule.method,
                &path,
                None,
                body_for(rule.method, rule.path, "anon"),
            )
            .await;
        match rule.access {
            Access::Public => assert!(
                ![401, 403, 404, 405].contains(&reply.status),
                "anonymous {} {path}: {reply:?}",
                rule.method
            ),
            // DCI routes answer in the DCI error shape (`{errors: [...]}`).
            Access::Partner => assert_eq!(
                reply.status, 401,
                "anonymous {} {path}: {reply:?}",
                rule.method
            ),
            _ => {
                assert_eq!(
                    reply.status, 401,
                    "anonymous {} {path}: {reply:?}",
                    rule.method
                );
                assert_eq!(reply.code(), "auth.required");
                assert_eq!(reply.headers["www-authenticate"], "Bearer");
            }
        }
        // Each role.
        for (role, token) in &callers {
            let role = role.unwrap();
            let allowed = match rule.access {
                Access::Public | Access::Staff => true,
                Access::Roles(roles) => roles.contains(&role),
                Access::Partner => {
                    // A staff token is not a partner token: refused by the DCI routes.
                    let reply = app
                        .call(rule.method, &path, Some(token), Some(json!({})))
                        .await;
                    assert_eq!(
                        reply.status, 401,
                        "{role} {} {path}: {reply:?}",
                        rule.method
                    );
                    checked += 1;
                    continue;
                }
            };
            let reply = app
                .call(
                    rule.method,
                    &path,
                    Some(token),
                    body_for(rule.method, rule.path, role.as_str()),
                )
                .await;
            if allowed {
                assert!(
                    ![401, 403, 405].contains(&reply.status) && reply.code() != "route.not_found",
                    "{role} {} {path} is allowed by the table: {reply:?}",
                    rule.method
                );
            } else {
                assert_eq!(
                    reply.status, 403,
                    "{role} {} {path}: {reply:?}",
                    rule.method
                );
                assert_eq!(reply.code(), "auth.forbidden");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * Role::ALL.len());
}

async fn a_bad_or_missing_token_is_401_and_a_wrong_method_405(app: &TestApp) {
    app.seed().await;
    for header in ["Bearer nonsense", "Basic d2FsazpwYXNz", "Bearer "] {
        let request = axum::http::Request::get("/api/v1/registers")
            .header("authorization", header)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.app.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{header}");
    }
    let token = app.user("ana", &[Role::Viewer]).await;
    let reply = app
        .call("DELETE", "/api/v1/records/IND-T1", Some(&token), None)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (405, "route.method_not_allowed")
    );
    let reply = app
        .call("GET", "/api/v1/nothing-here", Some(&token), None)
        .await;
    assert_eq!((reply.status, reply.code()), (404, "route.not_found"));
}

api_contract!(
    every_route_allows_exactly_the_roles_in_the_table,
    a_bad_or_missing_token_is_401_and_a_wrong_method_405,
);

/// Routes are added in `src/http` either through `utoipa_axum::routes!` (their paths come from
/// `#[utoipa::path]`) or with `.route("…")`: every such path must be in the access table.
#[test]
fn every_path_routed_in_the_source_is_in_the_access_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut missing = Vec::new();
    let mut found = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let line = line.trim();
            let (method, routed) = if let Some(rest) = line.strip_prefix(".route(\"") {
                // `.route("/path", post(handler))`: the method router names the method.
                let method = ["get", "post", "put", "patch", "delete"]
                    .iter()
                    .find(|v| rest.contains(&format!(", {v}(")))
                    .map_or("GET", |v| match *v {
                        "post" => "POST",
                        "put" => "PUT",
                        "patch" => "PATCH",
                        "delete" => "DELETE",
                        _ => "GET",
                    });
                (method, rest.split('"').next().unwrap().to_owned())
            } else if let Some(verb) = ["get", "post", "put", "patch", "delete"]
                .iter()
                .find(|v| line == format!("{v},"))
            {
                // `#[utoipa::path(` then the method line, then `path = "…"`.
                let next = lines.peek().map(|l| l.trim()).unwrap_or_default();
                let Some(p) = next.strip_prefix("path = \"") else {
                    continue;
                };
                (*verb, p.split('"').next().unwrap().to_owned())
            } else {
                continue;
            };
            found += 1;
            if rule_for(method, &routed).is_none() {
                missing.push(format!("{method} {routed} ({})", path.display()));
            }
        }
    }
    assert!(found >= 20, "the scan found only {found} routes");
    assert!(missing.is_empty(), "not in ROUTES: {missing:?}");
}
