//! DCI routes: the partner token endpoint and the Social Registry endpoints. Handlers are
//! thin: authenticate the bearer token, check its scope, hand the body to [`Gateway`], and
//! turn the outcome into HTTP here, in one place:
//!
//! | outcome | HTTP |
//! |---|---|
//! | no or bad token, disabled partner | 401 `{errors:[{code: err.request.unauthorized, message}]}` + `WWW-Authenticate` |
//! | token lacks the scope; envelope sender ≠ token partner | 403 `{errors:[{code: err.request.forbidden, message}]}` |
//! | body not `application/json` | 415 `{errors:[…err.request.bad…]}` |
//! | sync answer (signed envelope, also header `rjct`) | 200 |
//! | ack `ACK` | 202 |
//! | ack `ERR` | 400 (503 for `err.service.unavailable`) |
//! | reply cannot be signed | 500 `{errors:[…]}`, no registry data |
//!
//! Token endpoint errors follow RFC 6749 §5.2 (`{"error", "error_description"}`).

use super::AppState;
use crate::dci::codes::err;
use crate::dci::token::{TokenError, TokenRequest, TokenRequestError, basic_credentials};
use crate::dci::{Gateway, GatewayError, Operation, Reply};
use crate::partners::Partner;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

/// The DCI routes, merged into the router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/oauth2/client/token", post(post_oauth2_client_token))
        .route("/registry/sync/search", post(post_reg_sync_search))
        .route("/registry/search", post(post_reg_search))
        .route("/registry/sync/txn/status", post(post_reg_sync_txnstatus))
        .route("/registry/txn/status", post(post_reg_txnstatus))
}

/// An HTTP-layer error body (`HttpErrorResponse`).
fn http_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"errors": [{"code": code, "message": message}]})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    response
}

/// RFC 6749 §4.4 client credentials; client authentication by HTTP Basic or in the form.
async fn post_oauth2_client_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let oauth_error = |error: TokenRequestError| {
        let status = match error {
            TokenRequestError::InvalidClient => StatusCode::UNAUTHORIZED,
            TokenRequestError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = (
            status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({"error": error.code(), "error_description": error.to_string()})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"nsr\""),
            );
        }
        response
    };
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error(TokenRequestError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return oauth_error(TokenRequestError::InvalidRequest(
            "the body is not form-encoded".into(),
        ));
    };
    let mut request = TokenRequest::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "grant_type" => &mut request.grant_type,
            "client_id" => &mut request.client_id,
            "client_secret" => &mut request.client_secret,
            "scope" => &mut request.scope,
            _ => continue,
        };
        // RFC 6749 §3.1: parameters must not be repeated.
        if slot.replace(value).is_some() {
            return oauth_error(TokenRequestError::InvalidRequest(format!(
                "`{name}` is given twice"
            )));
        }
    }
    if let Some(authorization) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let Some((id, secret)) = basic_credentials(authorization) else {
            return oauth_error(TokenRequestError::InvalidClient);
        };
        // RFC 6749 §2.3: one authentication method per request.
        if request.client_secret.is_some() {
            return oauth_error(TokenRequestError::InvalidRequest(
                "client credentials given both in the header and in the body".into(),
            ));
        }
        if request
            .client_id
            .as_ref()
            .is_some_and(|form_id| *form_id != id)
        {
            return oauth_error(TokenRequestError::InvalidClient);
        }
        request.client_id = Some(id);
        request.client_secret = Some(secret);
    }
    match state.tokens.issue(&request).await {
        Ok(issued) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            })),
        )
            .into_response(),
        Err(error) => oauth_error(error),
    }
}

/// The partner a request's bearer token stands for, if the token is valid and grants `scope`.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
) -> Result<Partner, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(http_error(
            StatusCode::UNAUTHORIZED,
            err::REQUEST_UNAUTHORIZED,
            &TokenError::Missing.to_string(),
        ));
    };
    match state.tokens.verify(token).await {
        Ok((grant, partner)) if grant.allows(scope) => Ok(partner),
        Ok(_) => Err(http_error(
            StatusCode::FORBIDDEN,
            err::REQUEST_FORBIDDEN,
            &format!("the access token does not grant `{scope}`"),
        )),
        Err(TokenError::Unavailable) => Err(http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            err::SERVICE_UNAVAILABLE,
            "try again later",
        )),
        Err(error) => Err(http_error(
            StatusCode::UNAUTHORIZED,
            err::REQUEST_UNAUTHORIZED,
            &error.to_string(),
        )),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Authenticate, check the scope and content type, run `operation`, answer.
async fn dci_call(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    operation: Operation,
    sync: bool,
) -> Response {
    let scope = match operation {
        Operation::Search => "registry.search",
        Operation::TxnStatus => "registry.txn-status",
    };
    let partner = match authorize(state, headers, scope).await {
        Ok(partner) => partner,
        Err(response) => return response,
    };
    if !is_json(headers) {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            err::REQUEST_BAD,
            "the body must be application/json",
        );
    }
    let gateway: &Gateway = &state.dci;
    let outcome = if sync {
        gateway.sync(operation, &partner, body).await
    } else {
        gateway.accept(operation, &partner, body).await
    };
    match outcome {
        Ok(Reply::Envelope(envelope)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            envelope,
        )
            .into_response(),
        Ok(Reply::Ack(ack)) => {
            let status = match ack.error {
                None => StatusCode::ACCEPTED,
                Some(code) if code == err::SERVICE_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                Some(_) => StatusCode::BAD_REQUEST,
            };
            (status, Json(ack.to_json())).into_response()
        }
        Err(GatewayError::Forbidden) => http_error(
            StatusCode::FORBIDDEN,
            err::REQUEST_FORBIDDEN,
            "header.sender_id is not the partner the access token was issued to",
        ),
        Err(GatewayError::Seal(_)) => http_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "err.service.unavailable",
            "the reply could not be signed",
        ),
    }
}

/// `POST /registry/sync/search` (operation `post_reg_sync_search`).
async fn post_reg_sync_search(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dci_call(&state, &headers, &body, Operation::Search, true).await
}

/// `POST /registry/search` (operation `post_reg_search`).
async fn post_reg_search(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dci_call(&state, &headers, &body, Operation::Search, false).await
}

/// `POST /registry/sync/txn/status` (operation `post_reg_sync_txnstatus`).
async fn post_reg_sync_txnstatus(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dci_call(&state, &headers, &body, Operation::TxnStatus, true).await
}

/// `POST /registry/txn/status` (operation `post_reg_txnstatus`).
async fn post_reg_txnstatus(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dci_call(&state, &headers, &body, Operation::TxnStatus, false).await
}
