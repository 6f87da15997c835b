//! Records and their values: the typed checks every write goes through.

use super::register::{FieldDef, FieldType, RegisterDef};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A record's field values, as a JSON object. Absent fields are absent, never `null`.
pub type Fields = serde_json::Map<String, Value>;

/// The life-cycle state of a record. Records are never deleted; they are archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordStatus {
    Active,
    Inactive,
    Archived,
}

impl RecordStatus {
    /// The stored and displayed form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
            Self::Archived => "ARCHIVED",
        }
    }

    /// Parses the stored form (`ACTIVE`, `INACTIVE`, `ARCHIVED`; case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "ACTIVE" => Some(Self::Active),
            "INACTIVE" => Some(Self::Inactive),
            "ARCHIVED" => Some(Self::Archived),
            _ => None,
        }
    }
}

/// One version of a record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Internal id, stable for the record's whole life.
    pub id: Uuid,
    pub register: String,
    /// The human-facing id (`IND-…`, `HH-…`, `DIS-…`).
    pub functional_id: String,
    /// The parent record (an individual's household, a supporting row's owner).
    pub parent_id: Option<Uuid>,
    /// The parent's functional id, filled in by reads for display and export.
    pub parent_functional_id: Option<String>,
    pub status: RecordStatus,
    /// 1 for the first version, +1 per change set that touches the record.
    pub version: i64,
    pub fields: Fields,
    /// The change set that wrote this version.
    pub change_set_id: Uuid,
    /// When this version became current.
    pub valid_from: DateTime<Utc>,
    /// When a later version replaced it (`None` while current).
    pub valid_to: Option<DateTime<Utc>>,
}

/// What is wrong with one field of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field, or `id`, `parent_id`, `status`, `register` for the record's envelope.
    pub field: String,
    /// Stable machine-readable code.
    pub code: ProblemCode,
    pub message: String,
}

/// Stable codes for [`Problem`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    UnknownRegister,
    UnknownField,
    WrongType,
    NotInEnum,
    OutOfRange,
    Required,
    Unique,
    InvalidId,
    NotFound,
    MissingParent,
    InvalidParent,
    InvalidStatus,
    /// A field changed since the version a change request was made against.
    Conflict,
    /// A change that would change nothing.
    Unchanged,
    /// A value that cannot be used as asked (a filter, a sort, a label).
    Invalid,
}

impl ProblemCode {
    /// The code as text (as in CSV error files).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownRegister => "unknown_register",
            Self::UnknownField => "unknown_field",
            Self::WrongType => "wrong_type",
            Self::NotInEnum => "not_in_enum",
            Self::OutOfRange => "out_of_range",
            Self::Required => "required",
            Self::Unique => "unique",
            Self::InvalidId => "invalid_id",
            Self::NotFound => "not_found",
            Self::MissingParent => "missing_parent",
            Self::InvalidParent => "invalid_parent",
            Self::InvalidStatus => "invalid_status",
            Self::Conflict => "conflict",
            Self::Unchanged => "unchanged",
            Self::Invalid => "invalid",
        }
    }
}

impl Problem {
    pub fn new(field: impl Into<String>, code: ProblemCode, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a complete set of field values against the register: unknown fields, types, enum
/// values, ranges and required fields. Returns every problem, not just the first.
pub fn validate_fields(def: &RegisterDef, fields: &Fields) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, value) in fields {
        match def.field(name) {
            None => problems.push(Problem::new(
                name,
                ProblemCode::UnknownField,
                format!("register `{}` has no field `{name}`", def.name),
            )),
            Some(field) => {
                if let Err(problem) = check_value(field, field.ty, value) {
                    problems.push(problem);
                }
            }
        }
    }
    for field in def.fields.iter().filter(|f| f.required) {
        if !fields.contains_key(&field.name) {
            problems.push(Problem::new(
                &field.name,
                ProblemCode::Required,
                "is required",
            ));
        }
    }
    problems
}

fn wrong_type(field: &FieldDef, ty: FieldType, value: &Value) -> Problem {
    let shown = match value {
        Value::String(s) => format!("\"{}\"", s.chars().take(40).collect::<String>()),
        other => other.to_string().chars().take(40).collect(),
    };
    Problem::new(
        &field.name,
        ProblemCode::WrongType,
        format!("expected {}, got {shown}", ty.name()),
    )
}

fn check_value(field: &FieldDef, ty: FieldType, value: &Value) -> Result<(), Problem> {
    let ok = match ty {
        FieldType::String => value.is_string(),
        FieldType::Integer => value.is_i64() || value.is_u64(),
        FieldType::Decimal => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
        FieldType::Date => value
            .as_str()
            .is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        FieldType::Datetime => value
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        FieldType::Object => value.is_object(),
        FieldType::Enum => {
            let Some(text) = value.as_str() else {
                return Err(wrong_type(field, ty, value));
            };
            if !field.values.iter().any(|v| v == text) {
                return Err(Problem::new(
                    &field.name,
                    ProblemCode::NotInEnum,
                    format!("`{text}` is not one of {}", field.values.join(", ")),
                ));
            }
            true
        }
        FieldType::List => {
            let (Some(items), Some(list)) = (field.items, value.as_array()) else {
                return Err(wrong_type(field, ty, value));
            };
            for item in list {
                check_value(field, items, item)?;
            }
            true
        }
    };
    if !ok {
        return Err(wrong_type(field, ty, value));
    }
    if let Some(number) = value.as_f64().filter(|_| ty.is_numeric()) {
        let below = field.min.is_some_and(|min| number < min);
        let above = field.max.is_some_and(|max| number > max);
        if below || above {
            let bound = |b: Option<f64>| b.map_or("-".to_owned(), |v| v.to_string());
            return Err(Problem::new(
                &field.name,
                ProblemCode::OutOfRange,
                format!(
                    "{number} is outside [{}, {}]",
                    bound(field.min),
                    bound(field.max)
                ),
            ));
        }
    }
    Ok(())
}

/// Turns a CSV cell into a typed value (empty cells are absent and never reach here). The
/// result is then checked by [`validate_fields`] like any other write.
pub fn parse_cell(field: &FieldDef, cell: &str) -> Result<Value, Problem> {
    let bad = |expected: &str| {
        Problem::new(
            &field.name,
            ProblemCode::WrongType,
            format!(
                "expected {expected}, got \"{}\"",
                cell.chars().take(40).collect::<String>()
            ),
        )
    };
    match field.ty {
        FieldType::String | FieldType::Date | FieldType::Datetime | FieldType::Enum => {
            Ok(Value::String(cell.to_owned()))
        }
        FieldType::Integer => cell
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("integer")),
        FieldType::Decimal => cell
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("decimal")),
        FieldType::Boolean => match cell.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("true or false")),
        },
        FieldType::List | FieldType::Object => {
            serde_json::from_str(cell).map_err(|_| bad(&format!("JSON {}", field.ty.name())))
        }
    }
}

/// The CSV form of a value: the inverse of [`parse_cell`].
pub fn format_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Removes `null` values: absent and null mean the same, and only absence is stored.
pub fn without_nulls(fields: Fields) -> Fields {
    fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::register::parse_register;
    use serde_json::json;
    use std::path::Path;

    fn person() -> RegisterDef {
        parse_register(
            Path::new("person.yaml"),
            r#"
name: person
title: Person
kind: register
prefix: "P-"
fields:
  gender: {type: enum, description: g, values: [MALE, FEMALE], required: true}
  age: {type: integer, description: a, min: 0, max: 130}
  score: {type: decimal, description: s}
  born: {type: date, description: b}
  seen: {type: datetime, description: s}
  tags: {type: list, items: string, description: t}
  ok: {type: boolean, description: o}
"#,
        )
        .unwrap()
    }

    fn fields(value: Value) -> Fields {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = validate_fields(
            &person(),
            &fields(
                json!({"age": "x", "born": "2020-13-01", "tags": [1], "colour": "red", "score": 1.5}),
            ),
        );
        let mut named: Vec<(&str, ProblemCode)> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.code))
            .collect();
        named.sort_by_key(|(f, _)| f.to_string());
        assert_eq!(
            named,
            [
                ("age", ProblemCode::WrongType),
                ("born", ProblemCode::WrongType),
                ("colour", ProblemCode::UnknownField),
                ("gender", ProblemCode::Required),
                ("tags", ProblemCode::WrongType),
            ]
        );
    }

    #[test]
    fn enum_and_range_are_checked() {
        let problems = validate_fields(&person(), &fields(json!({"gender": "M", "age": 131})));
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].code, ProblemCode::NotInEnum);
        assert!(problems[0].message.contains("MALE, FEMALE"));
        assert_eq!(problems[1].code, ProblemCode::OutOfRange);
    }

    #[test]
    fn cells_round_trip_through_their_text_form() {
        let def = person();
        for (name, cell) in [
            ("age", "42"),
            ("score", "12.345"),
            ("ok", "true"),
            ("tags", "[\"a\",\"b\"]"),
        ] {
            let value = parse_cell(def.field(name).unwrap(), cell).unwrap();
            assert_eq!(format_cell(&value), cell);
        }
        assert!(parse_cell(def.field("ok").unwrap(), "yes").is_err());
        assert!(parse_cell(def.field("seen").unwrap(), "2026-01-01T00:00:00Z").is_ok());
    }
}
