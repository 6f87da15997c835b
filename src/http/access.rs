//! Who may call what: [`ROUTES`], the one table of every route (method and path, as routed)
//! and the roles allowed on it, and the middleware that enforces it on every routed request.
//! A route missing from the table is refused (500, logged), so a new route cannot slip out
//! unguarded; a test walks the whole table with every role and none.

use super::AppState;
use super::error::ApiError;
use crate::auth::{Caller, Role};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: operational endpoints, the API description, logging in.
    Public,
    /// Any authenticated caller, whatever their roles.
    Staff,
    /// An authenticated caller holding at least one of these roles.
    Roles(&'static [Role]),
    /// A DCI partner: the handler checks the partner access token from
    /// `/oauth2/client/token` (scope, and `header.sender_id` = the token's partner). Staff
    /// tokens are not accepted there.
    Partner,
}

/// One route and who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: &'static str,
    /// As routed: `{name}` for a path parameter, `{*name}` for the rest of the path.
    pub path: &'static str,
    pub access: Access,
}

const fn public(method: &'static str, path: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Public,
    }
}

const fn staff(method: &'static str, path: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Staff,
    }
}

const fn partner(method: &'static str, path: &'static str) -> Rule {
    Rule {
        method,
        path,
        access: Access::Partner,
    }
}

const fn roles(method: &'static str, path: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method,
        path,
        access: Access::Roles(roles),
    }
}

use Role::{Admin, Approver, Auditor, Enumerator, Viewer};

/// Register definitions are metadata, not registry data: every role may read them.
const EVERY_ROLE: &[Role] = &[Viewer, Enumerator, Approver, Auditor, Admin];
/// Registry data: everyone but a plain admin (who manages users, not people's records).
const DATA_READERS: &[Role] = &[Viewer, Enumerator, Approver, Auditor];
/// Change requests: the people who make, check and audit them.
const REQUEST_READERS: &[Role] = &[Enumerator, Approver, Auditor];

/// Every route nsr serves, and who may call it.
pub const ROUTES: &[Rule] = &[
    // operations and documentation
    public("GET", "/healthz"),
    public("GET", "/readyz"),
    public("GET", "/metrics"),
    public("GET", "/.well-known/jwks.json"),
    public("GET", "/api/v1/openapi.json"),
    public("GET", "/api/docs"),
    public("GET", "/api/docs/"),
    public("GET", "/api/docs/{*rest}"),
    // authentication
    public("POST", "/api/v1/auth/login"),
    staff("GET", "/api/v1/auth/me"),
    // reading
    roles("GET", "/api/v1/registers", EVERY_ROLE),
    roles("GET", "/api/v1/registers/{register}/records", DATA_READERS),
    roles("GET", "/api/v1/records/{id}", DATA_READERS),
    roles("GET", "/api/v1/records/{id}/versions", DATA_READERS),
    roles("GET", "/api/v1/records/{id}/changes", DATA_READERS),
    // named versions
    roles("POST", "/api/v1/labels", &[Approver]),
    // change requests (maker-checker)
    roles("GET", "/api/v1/change-requests", REQUEST_READERS),
    roles("POST", "/api/v1/change-requests", &[Enumerator]),
    roles("GET", "/api/v1/change-requests/{id}", REQUEST_READERS),
    roles("POST", "/api/v1/change-requests/{id}/approve", &[Approver]),
    roles("POST", "/api/v1/change-requests/{id}/reject", &[Approver]),
    roles("POST", "/api/v1/change-requests/{id}/cancel", &[Enumerator]),
    // audit
    roles("GET", "/api/v1/audit", &[Auditor]),
    roles("GET", "/api/v1/audit/verify", &[Auditor, Admin]),
    // the disclosure log (append-only; read here, never changed)
    roles("GET", "/api/v1/disclosures", &[Auditor, Admin]),
    roles(
        "GET",
        "/api/v1/registrants/{id}/disclosures",
        &[Auditor, Admin],
    ),
    // staff users
    roles("GET", "/api/v1/users", &[Admin]),
    roles("POST", "/api/v1/users", &[Admin]),
    roles("POST", "/api/v1/users/{name}/disable", &[Admin]),
    // DCI gateway (partners; client credentials for the token)
    public("POST", "/oauth2/client/token"),
    partner("POST", "/registry/sync/search"),
    partner("POST", "/registry/search"),
    partner("POST", "/registry/sync/txn/status"),
    partner("POST", "/registry/txn/status"),
    // DCI partners (administration)
    roles("GET", "/api/v1/partners", &[Admin]),
    roles("POST", "/api/v1/partners", &[Admin]),
    roles("POST", "/api/v1/partners/{sender_id}/disable", &[Admin]),
    roles("POST", "/api/v1/partners/{sender_id}/enable", &[Admin]),
];

/// The rule for a routed method and path.
pub fn rule_for(method: &str, path: &str) -> Option<&'static Rule> {
    ROUTES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

/// The bearer token of a request, if it has one.
fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    let value = parts.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Enforces [`ROUTES`]: authenticates the caller where a route needs it, checks their roles,
/// and hands the [`Caller`] to the handler. Runs after routing (it reads the matched path).
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = match request.method() {
        &Method::HEAD => "GET",
        other => other.as_str(),
    };
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return ApiError::not_found("route.not_found", "no such route").into_response();
    };
    let Some(rule) = rule_for(method, &path) else {
        return ApiError::Internal(format!("route {method} {path} is not in the access table"))
            .into_response();
    };
    if matches!(rule.access, Access::Public | Access::Partner) {
        return next.run(request).await;
    }
    let Some(token) = bearer(request.headers()) else {
        return ApiError::Unauthenticated {
            code: "auth.required",
            message: "this route needs a bearer access token".to_owned(),
        }
        .into_response();
    };
    let caller = match state.auth.authenticate(token).await {
        Ok(caller) => caller,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if let Access::Roles(allowed) = rule.access
        && !caller.has_any(allowed)
    {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return ApiError::forbidden(
            "auth.forbidden",
            format!("this needs one of the roles: {}", names.join(", ")),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The authenticated caller, put there by [`authorize`].
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated {
                code: "auth.required",
                message: "this route needs a bearer access token".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once_and_every_non_public_route_names_roles_or_staff() {
        for (i, rule) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[..i]
                    .iter()
                    .any(|r| r.method == rule.method && r.path == rule.path),
                "{} {} is listed twice",
                rule.method,
                rule.path
            );
            if let Access::Roles(roles) = rule.access {
                assert!(!roles.is_empty(), "{} {}", rule.method, rule.path);
            }
        }
        assert_eq!(
            rule_for("post", "/api/v1/change-requests/{id}/approve").map(|r| r.access),
            Some(Access::Roles(&[Approver]))
        );
    }
}
