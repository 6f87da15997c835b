//! A validator for the DCI Social Registry OpenAPI file nsr implements (specs/dci/, embedded),
//! covering the keywords that file uses: `type`, `properties`, `required`, `items`, `enum`,
//! `maxLength`, `pattern` (its one pattern, the ISO 639-3 `locale`), `format: date-time`,
//! `allOf`, `anyOf`, `oneOf`, and `$ref` to any JSON pointer (the file points into other
//! schemas' properties, and once into an `example`).

use serde_json::Value;
use std::sync::OnceLock;

const SPEC: &str = include_str!("../../specs/dci/social_api_v1.0.0.yaml");

/// Reply and callback bodies, by JSON pointer into the OpenAPI document.
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

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_yaml::from_str::<serde_yaml::Value>(SPEC)
            .ok()
            .and_then(|yaml| serde_json::to_value(yaml).ok())
            .unwrap_or(Value::Null)
    })
}

/// The schema at `pointer` (`#/components/…` or `/paths/…`).
pub fn schema(pointer: &str) -> Option<&'static Value> {
    document().pointer(pointer.trim_start_matches('#'))
}

/// Problems of `value` against the schema at `pointer` (empty: valid).
pub fn validate(value: &Value, pointer: &str) -> Vec<String> {
    match schema(pointer) {
        Some(schema) => problems(value, schema),
        None => vec![format!("no schema at {pointer}")],
    }
}

/// Problems of `value` against `schema`.
pub fn problems(value: &Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(value, schema, "$", &mut out);
    out
}

fn check(value: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match self::schema(reference) {
            Some(target) => check(value, target, at, out),
            None => out.push(format!("{at}: unresolvable $ref {reference}")),
        }
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            check(value, part, at, out);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = options.iter().map(|o| problems(value, o)).collect();
            let passing = results.iter().filter(|r| r.is_empty()).count();
            let ok = if keyword == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                let detail: Vec<String> = results.iter().map(|r| r.join("; ")).collect();
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
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            out.push(format!("{at}: expected {ty}, found {}", short(value)));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        out.push(format!("{at}: {} is not one of the enum", short(value)));
    }
    if let Some(text) = value.as_str() {
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && text.chars().count() as u64 > max
        {
            out.push(format!("{at}: longer than {max} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let matches = match pattern {
                "^[a-z]{3,3}$" => text.len() == 3 && text.bytes().all(|b| b.is_ascii_lowercase()),
                _ => true,
            };
            if !matches {
                out.push(format!("{at}: `{text}` does not match {pattern}"));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && chrono::DateTime::parse_from_rfc3339(text).is_err()
        {
            out.push(format!(
                "{at}: `{text}` is not a date-time with a time zone"
            ));
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
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(item, item_schema, &format!("{at}[{i}]"), out);
        }
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_validator_catches_what_it_claims_to() {
        let ack = json!({"message": {"ack_status": "ACK", "timestamp": "2026-01-01T00:00:00Z", "correlation_id": "c"}});
        assert!(validate(&ack, ACK).is_empty());
        let bad = json!({"message": {"ack_status": "OK", "timestamp": "2026-01-01T00:00:00", "correlation_id": "c".repeat(100)}});
        assert_eq!(validate(&bad, ACK).len(), 3, "{:?}", validate(&bad, ACK));
        let missing = json!({"message": {"ack_status": "ACK"}});
        assert_eq!(validate(&missing, ACK).len(), 2);
        let reply = json!({"header": {"message_id": "1", "message_ts": "2026-01-01T00:00:00Z", "action": "on-search", "status": "succ"},
            "message": {"transaction_id": "t", "correlation_id": "c", "search_response": [{"reference_id": "r", "timestamp": "2026-01-01T00:00:00Z", "status": "done", "locale": "EN"}]}});
        let found = validate(&reply, SYNC_SEARCH_REPLY);
        assert!(found.iter().any(|p| p.contains("status")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("locale")), "{found:?}");
    }
}
