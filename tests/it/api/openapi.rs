//! The served OpenAPI document: OpenAPI 3.1, structurally sound, and listing exactly the API
//! routes of the access table; and the docs page served from the binary.

use super::TestApp;
use crate::support::Db;
use nsr::http::access::{Access, ROUTES};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Resolves a local `$ref` (`#/components/schemas/Name`).
fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    document.pointer(pointer)
}

/// Every `$ref` anywhere under `value`.
fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if key == "$ref" {
                    if let Some(text) = item.as_str() {
                        out.push(text.to_owned());
                    }
                } else {
                    references(item, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| references(i, out)),
        _ => {}
    }
}

/// The structural rules of OpenAPI 3.1 that a generator can get wrong (spec sections named).
fn check_structure(document: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |text: String| problems.push(text);
    // 4.8.1: `openapi` is the version; `info` with `title` and `version` is required.
    let version = document["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.1.") {
        problem(format!("openapi is `{version}`, not 3.1.x"));
    }
    for key in ["title", "version"] {
        if !document["info"][key].is_string() {
            problem(format!("info.{key} is missing"));
        }
    }
    // 4.8.8: path keys start with `/`; 4.8.12.1: each templated parameter is declared, in
    // path, required.
    let Some(paths) = document["paths"].as_object() else {
        problem("paths is missing".into());
        return problems;
    };
    let schemes: BTreeSet<&str> = document["components"]["securitySchemes"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            problem(format!("path `{path}` does not start with /"));
        }
        let templated: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let at = format!("{method} {path}");
            // 4.8.10: operationId unique; 4.8.16: responses present, each with a description.
            match operation["operationId"].as_str() {
                Some(id) if operation_ids.insert(id.to_owned()) => {}
                Some(id) => problem(format!("{at}: operationId `{id}` is not unique")),
                None => problem(format!("{at}: no operationId")),
            }
            match operation["responses"].as_object() {
                Some(responses) if !responses.is_empty() => {
                    for (status, response) in responses {
                        let response = response
                            .get("$ref")
                            .and_then(Value::as_str)
                            .and_then(|r| resolve(document, r))
                            .unwrap_or(response);
                        if !response["description"].is_string() {
                            problem(format!("{at}: response {status} has no description"));
                        }
                    }
                }
                _ => problem(format!("{at}: no responses")),
            }
            let parameters: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(operation["parameters"].as_array())
                .flatten()
                .collect();
            for name in &templated {
                let declared = parameters.iter().any(|p| {
                    p["name"] == *name && p["in"] == "path" && p["required"] == Value::Bool(true)
                });
                if !declared {
                    problem(format!("{at}: path parameter `{name}` is not declared"));
                }
            }
            for parameter in &parameters {
                let location = parameter["in"].as_str().unwrap_or_default();
                if !["query", "header", "path", "cookie"].contains(&location) {
                    problem(format!("{at}: parameter with `in: {location}`"));
                }
                if location == "path"
                    && !templated.contains(&parameter["name"].as_str().unwrap_or_default())
                {
                    problem(format!(
                        "{at}: path parameter {} is not in the path",
                        parameter["name"]
                    ));
                }
            }
            // 4.8.30: every security requirement names a declared scheme.
            let requirements = operation
                .get("security")
                .or_else(|| document.get("security"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for requirement in requirements {
                for scheme in requirement.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !schemes.contains(scheme.as_str()) {
                        problem(format!("{at}: unknown security scheme `{scheme}`"));
                    }
                }
            }
        }
    }
    // 4.8.7 / 4.8.23: every reference resolves inside the document.
    let mut refs = Vec::new();
    references(document, &mut refs);
    for reference in refs {
        if resolve(document, &reference).is_none() {
            problem(format!("`{reference}` does not resolve"));
        }
    }
    problems
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_lists_every_api_route() {
    let app = TestApp::new(Db::Sqlite).await.unwrap();
    let reply = app.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    let document = reply.body;
    let problems = check_structure(&document);
    assert!(problems.is_empty(), "{problems:#?}");

    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // Every route of the staff API (the document and docs page describe it, so are not in it).
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/") && r.path != "/api/v1/openapi.json")
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);

    // Operations that need a token say so; login does not.
    for rule in ROUTES
        .iter()
        .filter(|r| routed.contains(&(r.method.to_owned(), r.path.to_owned())))
    {
        let operation = &document["paths"][rule.path][rule.method.to_lowercase()];
        let security = operation
            .get("security")
            .or_else(|| document.get("security"))
            .unwrap();
        let open = security
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_object().unwrap().is_empty());
        assert_eq!(
            open,
            rule.access == Access::Public,
            "{} {}",
            rule.method,
            rule.path
        );
    }
    assert_eq!(
        document,
        serde_json::to_value(nsr::http::openapi::document()).unwrap()
    );
    app.finish().await;
}

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = TestApp::new(Db::Sqlite).await.unwrap();
    let redirect = app.call("GET", "/api/docs", None, None).await;
    assert_eq!(redirect.status, 303);
    let page = app.call("GET", "/api/docs/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.as_str().unwrap().contains("swagger-ui"),
        "{page:?}"
    );
    let bundle = app
        .call("GET", "/api/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.as_str().unwrap().len() > 100_000);
    let init = app
        .call("GET", "/api/docs/swagger-initializer.js", None, None)
        .await;
    assert!(init.body.as_str().unwrap().contains("/api/v1/openapi.json"));
    app.finish().await;
}
