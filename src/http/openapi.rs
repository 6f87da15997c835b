//! The OpenAPI 3.1 description of the staff API, generated from the routes: every handler is
//! registered through `utoipa_axum::routes!`, which adds it to the router and to the document
//! at once, so a routed handler cannot be missing from it.

use super::AppState;
use super::{admin, disclosures, partners, records, requests, session};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Where the interactive docs page (Swagger UI, served from the binary) is.
pub const DOCS_PATH: &str = "/api/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "nsr staff API",
        description = "Read and change the national social registry. Every route except login \
            needs a bearer access token (from `POST /api/v1/auth/login` or the configured OpenID \
            Connect provider) whose roles allow it. Errors have one shape: \
            `{\"error\": {\"code\", \"message\", \"problems\": [{\"field\", \"code\", \"message\"}]}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "auth", description = "Logging in"),
        (name = "registry", description = "Registers, records, versions, change logs, named versions"),
        (name = "change requests", description = "Maker-checker changes to the registry"),
        (name = "audit", description = "The hash-chained audit log and the disclosure log"),
        (name = "admin", description = "Staff users and DCI partners"),
    )
)]
struct ApiDoc;

/// Declares the bearer-token security scheme every operation refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API routes and their description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session::login))
        .routes(routes!(session::me))
        .routes(routes!(records::list_registers))
        .routes(routes!(records::list_records))
        .routes(routes!(records::get_record))
        .routes(routes!(records::list_versions))
        .routes(routes!(records::list_changes))
        .routes(routes!(records::create_label))
        .routes(routes!(
            requests::list_change_requests,
            requests::submit_change_request
        ))
        .routes(routes!(requests::get_change_request))
        .routes(routes!(requests::approve_change_request))
        .routes(routes!(requests::reject_change_request))
        .routes(routes!(requests::cancel_change_request))
        .routes(routes!(admin::list_audit_entries))
        .routes(routes!(admin::verify_audit))
        .routes(routes!(disclosures::list_disclosures))
        .routes(routes!(disclosures::list_registrant_disclosures))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(admin::disable_user))
        .routes(routes!(partners::list_partners, partners::create_partner))
        .routes(routes!(partners::disable_partner))
        .routes(routes!(partners::enable_partner))
}

/// The OpenAPI document (as served at [`DOCUMENT_PATH`]).
pub fn document() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}
