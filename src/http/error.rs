//! The one place errors become HTTP responses. Every error has one JSON shape,
//! `{"error": {"code": "area.reason", "message": "…", "problems": [{"field", "code", "message"}]}}`,
//! with a stable `code`; a 4xx lists every problem the caller can fix; a 5xx says only that
//! something failed (the detail is logged, never sent). Also the extractors that turn malformed
//! requests into that shape.

use crate::auth::{LoginError, TokenError, UserError};
use crate::partners::PartnerError;
use crate::registry::change_request::RequestError;
use crate::registry::listing::QueryError;
use crate::registry::record::Problem;
use crate::store::StoreError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `area.reason`, e.g. `change_request.conflict`.
    pub code: String,
    /// For people.
    pub message: String,
    /// Every problem with the request (empty when there is nothing field-specific to say).
    pub problems: Vec<ProblemBody>,
}

/// One problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// The field (`changes[0].gender`, `page_size`, `password`…).
    pub field: String,
    /// Stable, machine-readable: `not_in_enum`, `required`, `conflict`…
    pub code: String,
    pub message: String,
}

impl From<&Problem> for ProblemBody {
    fn from(problem: &Problem) -> Self {
        Self {
            field: problem.field.clone(),
            code: problem.code.as_str().to_owned(),
            message: problem.message.clone(),
        }
    }
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or its parameters are unusable.
    BadRequest {
        code: &'static str,
        message: String,
        problems: Vec<ProblemBody>,
    },
    /// 401, with `WWW-Authenticate: Bearer`: no usable credentials.
    Unauthenticated { code: &'static str, message: String },
    /// 403: authenticated, but not allowed.
    Forbidden { code: &'static str, message: String },
    /// 404.
    NotFound { code: &'static str, message: String },
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    Conflict {
        code: &'static str,
        message: String,
        problems: Vec<ProblemBody>,
    },
    /// 422: well-formed, but the content is not acceptable.
    Unprocessable {
        code: &'static str,
        message: String,
        problems: Vec<ProblemBody>,
    },
    /// 429, with `Retry-After`.
    TooManyRequests { retry_after: u64 },
    /// 503: a dependency (database, identity provider) is unavailable. The detail is logged.
    Unavailable(String),
    /// 500. The detail is logged.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// The stable code (also used by tests and logs).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unprocessable { code, .. } => code,
            Self::MethodNotAllowed => "route.method_not_allowed",
            Self::TooManyRequests { .. } => "request.too_many",
            Self::Unavailable(_) => "service.unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

fn problems(list: &[Problem]) -> Vec<ProblemBody> {
    list.iter().map(ProblemBody::from).collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let mut retry_after = None;
        let (status, message, problems) = match self {
            Self::BadRequest {
                message, problems, ..
            } => (StatusCode::BAD_REQUEST, message, problems),
            Self::Unauthenticated { message, .. } => (StatusCode::UNAUTHORIZED, message, vec![]),
            Self::Forbidden { message, .. } => (StatusCode::FORBIDDEN, message, vec![]),
            Self::NotFound { message, .. } => (StatusCode::NOT_FOUND, message, vec![]),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "the route does not take this method".to_owned(),
                vec![],
            ),
            Self::Conflict {
                message, problems, ..
            } => (StatusCode::CONFLICT, message, problems),
            Self::Unprocessable {
                message, problems, ..
            } => (StatusCode::UNPROCESSABLE_ENTITY, message, problems),
            Self::TooManyRequests {
                retry_after: seconds,
            } => {
                retry_after = Some(seconds);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed attempts; retry in {seconds} s"),
                    vec![],
                )
            }
            Self::Unavailable(detail) => {
                tracing::error!(%detail, "dependency unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a service nsr depends on is unavailable; retry later".to_owned(),
                    vec![],
                )
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_owned(),
                    vec![],
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                problems,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn partner_problem(field: &str, message: String) -> ProblemBody {
    ProblemBody {
        field: field.to_owned(),
        code: "invalid".to_owned(),
        message,
    }
}

impl From<PartnerError> for ApiError {
    fn from(error: PartnerError) -> Self {
        match error {
            PartnerError::Invalid(problems) => ApiError::Unprocessable {
                code: "partner.invalid",
                message: "the partner definition has problems".to_owned(),
                problems: problems
                    .into_iter()
                    .map(|p| partner_problem(p.field, p.message))
                    .collect(),
            },
            PartnerError::Exists(field) => ApiError::Conflict {
                code: "partner.exists",
                message: format!("a partner with this {field} already exists"),
                problems: vec![ProblemBody {
                    field,
                    code: "taken".to_owned(),
                    message: "already registered".to_owned(),
                }],
            },
            PartnerError::NotFound(id) => ApiError::NotFound {
                code: "partner.not_found",
                message: format!("no partner `{id}`"),
            },
            PartnerError::Store(error) => error.into(),
            other @ (PartnerError::Corrupt(..) | PartnerError::Keys(_)) => {
                ApiError::Internal(other.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => Self::Unavailable(detail),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        let message = error.to_string();
        match error {
            RequestError::Invalid(list) => Self::Unprocessable {
                code: "change_request.invalid",
                message: "the change request is not valid".to_owned(),
                problems: problems(&list),
            },
            RequestError::Conflict(list) => Self::Conflict {
                code: "change_request.conflict",
                message: format!(
                    "fields this change request touches changed since it was made: {}",
                    list.iter()
                        .map(|p| p.field.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                problems: problems(&list),
            },
            RequestError::NotFound => Self::not_found("change_request.not_found", message),
            RequestError::NotPending(_) => Self::Conflict {
                code: "change_request.not_pending",
                message,
                problems: vec![],
            },
            RequestError::OwnRequest => Self::forbidden("change_request.own_request", message),
            RequestError::NotMaker => Self::forbidden("change_request.not_maker", message),
            RequestError::Store(error) => error.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::UnknownRegister(_) => {
                Self::not_found("register.not_found", error.to_string())
            }
            QueryError::Invalid(list) => Self::BadRequest {
                code: "request.invalid",
                message: "the request has problems".to_owned(),
                problems: problems(&list),
            },
            QueryError::Store(error) => error.into(),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        let message = error.to_string();
        match error {
            UserError::Invalid(list) => Self::Unprocessable {
                code: "user.invalid",
                message: "the user is not valid".to_owned(),
                problems: list
                    .into_iter()
                    .map(|(field, message)| ProblemBody {
                        field: field.to_owned(),
                        code: "invalid".to_owned(),
                        message,
                    })
                    .collect(),
            },
            UserError::Exists(_) => Self::Conflict {
                code: "user.exists",
                message,
                problems: vec![],
            },
            UserError::NotFound(_) => Self::not_found("user.not_found", message),
            UserError::Store(error) => error.into(),
            UserError::Hashing => Self::Internal(message),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::Invalid => Self::Unauthenticated {
                code: "auth.invalid_credentials",
                message: error.to_string(),
            },
            LoginError::Throttled { retry_after } => Self::TooManyRequests { retry_after },
            LoginError::Store(error) => error.into(),
            LoginError::Internal => Self::Internal(error.to_string()),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Invalid(why) => Self::Unauthenticated {
                code: "auth.invalid_token",
                message: format!("the access token is not accepted: {why}"),
            },
            TokenError::ProviderUnavailable => {
                Self::Unavailable("the OIDC key set cannot be fetched".to_owned())
            }
            TokenError::Store(error) => error.into(),
        }
    }
}

/// `axum::Json`, with a malformed body reported in the error shape (400 `request.invalid_json`).
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Self(value))
            .map_err(|rejection| {
                ApiError::bad_request("request.invalid_json", rejection.body_text())
            })
    }
}

/// `axum::extract::Query`, with bad parameters reported in the error shape.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                ApiError::bad_request("request.invalid_query", rejection.body_text())
            })
    }
}

/// `axum::extract::Path`, with a malformed segment reported in the error shape.
#[derive(Debug)]
pub struct AppPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| {
                ApiError::bad_request("request.invalid_path", rejection.body_text())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::ProblemCode;

    #[test]
    fn a_conflict_is_a_409_naming_the_fields_and_a_5xx_hides_its_detail() {
        let error: ApiError = RequestError::Conflict(vec![Problem::new(
            "changes[0].first_name",
            ProblemCode::Conflict,
            "changed",
        )])
        .into();
        assert_eq!(error.code(), "change_request.conflict");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);

        let response =
            ApiError::from(StoreError::Other("secret table detail".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let response = ApiError::TooManyRequests { retry_after: 42 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        let response = ApiError::from(TokenError::Invalid("expired")).into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
