//! Replies checked against the vendored DCI files (specs/dci/): the OpenAPI schemas of the
//! Social Registry API (the validator in `nsr::conformance::openapi`), and the records against
//! the JSON-LD classes (every property declared by its class or the nsr profile).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub use nsr::conformance::openapi::{
    ACK, HTTP_ERROR, ON_SEARCH_REQUEST, SYNC_SEARCH_REPLY, SYNC_TXN_STATUS_REPLY,
    TXN_ON_STATUS_REQUEST,
};

/// Panics listing every problem of `value` against the OpenAPI schema at `pointer`.
pub fn assert_valid(value: &Value, pointer: &str) {
    let found = nsr::conformance::openapi::validate(value, pointer);
    assert!(
        found.is_empty(),
        "not valid against {pointer}:\n{}\n{}",
        found.join("\n"),
        serde_json::to_string_pretty(value).unwrap()
    );
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
fn a_property_outside_the_classes_is_found() {
    let record =
        serde_json::json!({"@type": "spdci:Member", "is_disabled": false, "shoe_size": 44});
    let result = std::panic::catch_unwind(|| assert_json_ld(&record));
    assert!(result.is_err());
    assert_json_ld(&serde_json::json!({"@type": "spdci:Member", "is_disabled": false}));
}
