//! Replies checked against the vendored DCI files (specs/dci/): the OpenAPI schemas of the
//! Social Registry API, by a small validator for the keywords that file uses (`type`,
//! `properties`, `required`, `items`, `enum`, `maxLength`, `pattern`, `format: date-time`,
//! `allOf`, `anyOf`, `oneOf`, `$ref` to any JSON pointer), and the records against the JSON-LD
//! classes (every property declared by its class or the nsr profile).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text =
            std::fs::read_to_string(root().join("specs/dci/social_api_v1.0.0.yaml")).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        serde_json::to_value(yaml).unwrap()
    })
}

fn resolve(pointer: &str) -> &'static Value {
    let pointer = pointer.trim_start_matches('#');
    openapi()
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the OpenAPI file"))
}

/// The schema of a request or reply body, by JSON pointer into the OpenAPI document.
pub fn schema(pointer: &str) -> &'static Value {
    resolve(pointer)
}

pub const SYNC_SEARCH_REPLY: &str =
    "/paths/~1registry~1sync~1search/post/responses/default/content/application~1json/schema";
pub const SYNC_TXN_STATUS_REPLY: &str =
    "/paths/~1registry~1sync~1txn~1status/post/responses/default/content/application~1json/schema";
pub const ACK: &str = "/components/responses/Response/content/application~1json/schema";
pub const HTTP_ERROR: &str =
    "/components/responses/HttpErrorResponse/content/application~1json/schema";
pub const ON_SEARCH_REQUEST: &str =
    "/paths/~1registry~1on-search/post/requestBody/content/application~1json/schema";
pub const TXN_ON_STATUS_REQUEST: &str =
    "/paths/~1registry~1txn~1on-status/post/requestBody/content/application~1json/schema";

/// Problems of `value` against `schema` (empty: valid).
pub fn problems(value: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(value, schema, "$", &mut out);
    out
}

/// Panics listing every problem.
pub fn assert_valid(value: &Value, pointer: &str) {
    let found = problems(value, schema(pointer));
    assert!(
        found.is_empty(),
        "not valid against {pointer}:\n{}\n{}",
        found.join("\n"),
        serde_json::to_string_pretty(value).unwrap()
    );
}

fn check(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        check(value, resolve(reference), at, out);
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            check(value, part, at, out);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let passing = options
                .iter()
                .filter(|option| problems(value, option).is_empty())
                .count();
            let ok = if keyword == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                let detail: Vec<String> = options
                    .iter()
                    .map(|o| problems(value, o).join("; "))
                    .collect();
                out.push(format!(
                    "{at}: {passing} of the {keyword} alternatives match ({})",
                    detail.join(" | ")
                ));
            }
        }
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("unsupported type {other}"),
        };
        if !ok {
            out.push(format!("{at}: expected {ty}, found {value}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(text) = value.as_str() {
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && text.chars().count() as u64 > max
        {
            out.push(format!("{at}: longer than {max}"));
        }
        match schema.get("pattern").and_then(Value::as_str) {
            None => {}
            Some("^[a-z]{3,3}$")
                if !(text.len() == 3 && text.bytes().all(|b| b.is_ascii_lowercase())) =>
            {
                out.push(format!("{at}: `{text}` does not match ^[a-z]{{3,3}}$"));
            }
            Some("^[a-z]{3,3}$") => {}
            Some(other) => panic!("unsupported pattern {other}"),
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && chrono::DateTime::parse_from_rfc3339(text).is_err()
        {
            out.push(format!("{at}: `{text}` is not a date-time with a zone"));
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    out.push(format!("{at}: `{name}` is required"));
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in properties {
                if let Some(member) = object.get(name) {
                    check(member, sub, &format!("{at}.{name}"), out);
                }
            }
        }
    }
    if let (Some(items), Some(schema_items)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(item, schema_items, &format!("{at}[{i}]"), out);
        }
    }
}

/// Property names of each JSON-LD class (by its bare name: `Group`, `Member`, `Person`, …),
/// the nsr profile's `nsr:` properties included.
fn classes() -> &'static BTreeMap<String, BTreeSet<String>> {
    static CLASSES: OnceLock<BTreeMap<String, BTreeSet<String>>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut read = |dir: &Path, keep_prefix: bool| {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "jsonld") {
                    continue;
                }
                let Ok(doc) =
                    serde_json::from_str::<Value>(&std::fs::read_to_string(&path).unwrap())
                else {
                    continue;
                };
                let Some(id) = doc["@id"].as_str() else {
                    continue;
                };
                let class = id.rsplit(':').next().unwrap().replace('_', "");
                let names = out.entry(class).or_default();
                for property in doc["rdfs:property"].as_array().into_iter().flatten() {
                    let pid = property["@id"].as_str().unwrap();
                    let name = if keep_prefix {
                        pid.to_owned()
                    } else {
                        pid.rsplit(':').next().unwrap().to_owned()
                    };
                    names.insert(name);
                }
            }
        };
        read(&root().join("specs/dci/schemas/core/v1/data"), false);
        read(
            &root().join("specs/dci/schemas/extensions/social/v1/data"),
            false,
        );
        read(&root().join("mappings/profile"), true);
        out
    })
}

/// The class an object's `@type` names, with the subclass relations of the SR extension:
/// SRPerson is a Person; spdci:Member and spdci:Group extend the core classes of that name.
fn class_properties(ty: &str) -> BTreeSet<String> {
    let bare = ty.rsplit(':').next().unwrap();
    let classes = classes();
    let mut names = BTreeSet::new();
    let lookups: &[&str] = match bare {
        "SRPerson" => &["SRPerson", "Person"],
        other => &[other][..],
    };
    for name in lookups {
        if let Some(found) = classes.get(*name) {
            names.extend(found.iter().cloned());
        }
    }
    assert!(
        !names.is_empty() || bare == "Identifier",
        "no JSON-LD class {ty}"
    );
    names
}

/// Every property of every typed object in `record` is declared by its class.
pub fn assert_json_ld(record: &Value) {
    fn walk(value: &Value, at: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(ty) = object.get("@type").and_then(Value::as_str) {
                    let allowed = class_properties(ty);
                    for name in object.keys().filter(|k| !k.starts_with('@')) {
                        if !allowed.contains(name) {
                            out.push(format!("{at}.{name}: not a property of {ty}"));
                        }
                    }
                }
                for (name, member) in object {
                    if name != "@context" {
                        walk(member, &format!("{at}.{name}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(record, "$", &mut out);
    assert!(
        out.is_empty(),
        "not valid JSON-LD of the DCI classes:\n{}",
        out.join("\n")
    );
}

/// A sync search or on-search envelope: the OpenAPI shape, then each record's JSON-LD shape.
pub fn assert_search_envelope(envelope: &Value, pointer: &str) {
    assert_valid(envelope, pointer);
    for item in envelope["message"]["search_response"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for record in item["data"]["reg_records"].as_array().into_iter().flatten() {
            assert_json_ld(record);
        }
    }
}

#[test]
fn the_validator_catches_what_it_claims_to() {
    let ack = serde_json::json!({"message": {"ack_status": "ACK", "timestamp": "2026-01-01T00:00:00Z", "correlation_id": "c"}});
    assert!(problems(&ack, schema(ACK)).is_empty());
    let bad = serde_json::json!({"message": {"ack_status": "OK", "timestamp": "2026-01-01T00:00:00", "correlation_id": "c".repeat(100)}});
    let found = problems(&bad, schema(ACK));
    assert_eq!(found.len(), 3, "{found:?}");
    let missing = serde_json::json!({"message": {"ack_status": "ACK"}});
    assert_eq!(problems(&missing, schema(ACK)).len(), 2);
    // JSON-LD: a property the classes do not have is found.
    let record =
        serde_json::json!({"@type": "spdci:Member", "is_disabled": false, "shoe_size": 44});
    let result = std::panic::catch_unwind(|| assert_json_ld(&record));
    assert!(result.is_err());
}
