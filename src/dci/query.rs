//! DCI search criteria → a [`RecordQuery`]. `query_type` chooses the decoder (the `anyOf`
//! query shapes overlap, so nothing is guessed from the shape; shared notes §10.7):
//!
//! - `idtype-value` (G2P Connect: `idtype`): `{type, value}`; `type` is an identifier type
//!   of the entity in the mapping.
//! - `expression`: a MongoDB-style filter, at `query.value.expression.query` as in the spec
//!   example (or `query.value.expression`, or `query` itself). Operators `$and $or $not $eq $ne
//!   $gt $gte $lt $lte $in $nin`; a bare value means `$eq`; several members of one object are
//!   ANDed. `collection` (`Group`/`Member`) may choose the entity.
//! - `predicate`: `[{seq_num, expression1, condition, expression2}]` with operators `gt lt eq
//!   ge le in` and conditions `and or not`. Items are taken in `seq_num` order and ANDed; `and`
//!   and `or` join `expression1` with `expression2`; `not` negates `expression1` and takes no
//!   `expression2` (OpenG2P's reading of this unspecified part).
//!
//! Only the attributes the mapping declares can be named, and each value is checked against
//! the attribute's register field (type, enum values, code list) before it becomes a bound
//! parameter. Anything else is refused with `rjct.filter.invalid` (or
//! `rjct.search_criteria.invalid` for a malformed criteria object), naming what was wrong.

use super::codes::search as reason;
use super::mapping::{Attribute, Entity, Mapping};
use crate::registry::query::{Filter, Op, RecordQuery, Scalar, SortKey, Target};
use crate::registry::register::FieldType;
use chrono::NaiveDate;
use serde_json::{Map, Value};

/// Nesting a filter may have, and conditions it may hold: partners get answers, not a way to
/// make the database work without bound.
const MAX_DEPTH: usize = 8;
const MAX_CONDITIONS: usize = 32;
/// Values in one `$in` / `in`.
const MAX_IN_VALUES: usize = 500;

/// Why one search item is refused: a `SearchStatusReasonCode` and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn criteria_invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(reason::SEARCH_CRITERIA_INVALID, message)
}

fn filter_invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(reason::FILTER_INVALID, message)
}

/// A search item ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub entity: String,
    pub query: RecordQuery,
    /// `None` without `pagination`: then at most the page size limit may match.
    pub page: Option<(u32, u32)>,
}

/// Limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_page_size: u32,
}

/// Compiles one item's `search_criteria`.
pub fn compile(
    mapping: &Mapping,
    criteria: &Value,
    limits: QueryLimits,
) -> Result<Plan, Rejection> {
    let criteria = criteria
        .as_object()
        .ok_or_else(|| criteria_invalid("search_criteria must be an object"))?;
    if let Some(version) = criteria.get("version")
        && version.as_str() != Some("1.0.0")
    {
        return Err(criteria_invalid(
            "search_criteria.version: only 1.0.0 is supported",
        ));
    }
    if let Some(reg_type) = criteria.get("reg_type") {
        let ok = reg_type.as_str().is_some_and(|t| {
            t == mapping.reg_type()
                || t.rsplit(':')
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case("social"))
        });
        if !ok {
            return Err(criteria_invalid(format!(
                "reg_type: this registry is `{}`",
                mapping.reg_type()
            )));
        }
    }
    let query_type = criteria
        .get("query_type")
        .and_then(Value::as_str)
        .ok_or_else(|| criteria_invalid("query_type is required"))?;
    let query = criteria
        .get("query")
        .ok_or_else(|| criteria_invalid("query is required"))?;

    let entity_name = choose_entity(mapping, criteria, query_type, query)?;
    let entity = mapping.entity(&entity_name).ok_or_else(|| {
        criteria_invalid(format!("response_entity `{entity_name}` is not served"))
    })?;

    let filter = match query_type {
        "idtype-value" | "idtype" => id_type_value(entity, query)?,
        "expression" => {
            let mut budget = MAX_CONDITIONS;
            expression(entity, expression_body(query)?, 0, &mut budget)?
        }
        "predicate" => predicate(entity, query)?,
        "namedQuery" => {
            return Err(criteria_invalid(
                "query_type namedQuery: this registry defines no named queries",
            ));
        }
        other => {
            return Err(criteria_invalid(format!(
                "query_type `{other}` is not one of idtype-value, expression, predicate"
            )));
        }
    };

    let sort = sort_keys(entity, criteria.get("sort"))?;
    let page = pagination(criteria.get("pagination"), limits)?;
    let (limit, offset) = match page {
        Some((size, number)) => (size, u64::from(size) * u64::from(number - 1)),
        // One more than allowed, to tell "too many" from "exactly the limit".
        None => (limits.max_page_size.saturating_add(1), 0),
    };
    Ok(Plan {
        entity: entity_name,
        query: RecordQuery {
            register: entity.register.clone(),
            filter,
            sort,
            limit,
            offset,
            count: page.is_some(),
            child_registers: entity.child_registers().to_vec(),
            by_identifier: query_type == "idtype-value",
        },
        page,
    })
}

/// `response_entity`, else an expression's `collection`, else `reg_record_type`, else Member.
fn choose_entity(
    mapping: &Mapping,
    criteria: &Map<String, Value>,
    query_type: &str,
    query: &Value,
) -> Result<String, Rejection> {
    let known = |name: &str| -> Option<String> {
        let bare = name.rsplit(':').next().unwrap_or(name);
        let canonical = match bare.to_ascii_lowercase().as_str() {
            "group" | "household" => "Group",
            "member" | "srperson" | "person" | "individual" => "Member",
            _ => return None,
        };
        mapping.entity(canonical).map(|_| canonical.to_owned())
    };
    if let Some(entity) = criteria.get("response_entity") {
        let name = entity.as_str().unwrap_or_default();
        return match name {
            "Group" | "Member" if mapping.entity(name).is_some() => Ok(name.to_owned()),
            _ => Err(criteria_invalid("response_entity must be Group or Member")),
        };
    }
    if query_type == "expression"
        && let Some(collection) = expression_collection(query)
    {
        return known(collection).ok_or_else(|| {
            criteria_invalid(format!(
                "expression collection `{collection}`: use Group or Member"
            ))
        });
    }
    if let Some(record_type) = criteria.get("reg_record_type") {
        let name = record_type.as_str().unwrap_or_default();
        return known(name).ok_or_else(|| {
            criteria_invalid(format!(
                "reg_record_type `{name}`: this registry serves Group and Member"
            ))
        });
    }
    Ok("Member".to_owned())
}

fn expression_collection(query: &Value) -> Option<&str> {
    let value = query.get("value").unwrap_or(query);
    let expression = value.get("expression").unwrap_or(value);
    expression.get("collection").and_then(Value::as_str)
}

/// Finds the Mongo-style filter inside the query object.
fn expression_body(query: &Value) -> Result<&Value, Rejection> {
    let value = query.get("value").unwrap_or(query);
    let expression = value.get("expression").unwrap_or(value);
    let body = match expression.get("query") {
        Some(body) => body,
        None if expression.get("collection").is_some() => {
            return Err(criteria_invalid("expression has a collection but no query"));
        }
        None => expression,
    };
    if body.as_object().is_none_or(Map::is_empty) {
        return Err(criteria_invalid(
            "expression query must be a non-empty object, e.g. {\"$and\": [{\"sex\": {\"$eq\": \"female\"}}]}",
        ));
    }
    Ok(body)
}

fn id_type_value(entity: &Entity, query: &Value) -> Result<Filter, Rejection> {
    let id_type = query
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| criteria_invalid("idtype-value query needs a `type`"))?;
    let value = query
        .get("value")
        .ok_or_else(|| criteria_invalid("idtype-value query needs a `value`"))?;
    let attribute = entity.identifier(id_type).ok_or_else(|| {
        criteria_invalid(format!(
            "identifier type `{id_type}` is not searchable for {} (known: {})",
            entity.name,
            entity.identifier_types().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let value = match value {
        Value::Number(n) => Value::String(n.to_string()),
        other => other.clone(),
    };
    condition(attribute, Op::Eq, &value)
        .map_err(|r| Rejection::new(reason::SEARCH_CRITERIA_INVALID, r.message))
}

fn attribute<'e>(entity: &'e Entity, name: &str) -> Result<&'e Attribute, Rejection> {
    entity.attribute(name).ok_or_else(|| {
        filter_invalid(format!(
            "attribute `{name}` is not searchable for {} (searchable: {})",
            entity.name,
            entity.attribute_names().collect::<Vec<_>>().join(", ")
        ))
    })
}

fn expression(
    entity: &Entity,
    node: &Value,
    depth: usize,
    budget: &mut usize,
) -> Result<Filter, Rejection> {
    if depth > MAX_DEPTH {
        return Err(filter_invalid(format!(
            "expression nested deeper than {MAX_DEPTH}"
        )));
    }
    let object = node
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| filter_invalid("each expression must be a non-empty object"))?;
    let mut parts = Vec::new();
    for (key, value) in object {
        let part = match key.as_str() {
            "$and" | "$or" => {
                let items = value
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| filter_invalid(format!("{key} takes a non-empty array")))?;
                let inner = items
                    .iter()
                    .map(|item| expression(entity, item, depth + 1, budget))
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$and" {
                    Filter::And(inner)
                } else {
                    Filter::Or(inner)
                }
            }
            "$not" => Filter::Not(Box::new(expression(entity, value, depth + 1, budget)?)),
            op if op.starts_with('$') => {
                return Err(filter_invalid(format!(
                    "operator `{op}` is not supported here (logical: $and, $or, $not)"
                )));
            }
            name => field_expression(attribute(entity, name)?, value, budget)?,
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        Filter::And(parts)
    })
}

/// `{"attr": value}` or `{"attr": {"$gt": 1, "$lt": 5}}`.
fn field_expression(
    attribute: &Attribute,
    value: &Value,
    budget: &mut usize,
) -> Result<Filter, Rejection> {
    let spend = |budget: &mut usize| {
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| filter_invalid(format!("more than {MAX_CONDITIONS} conditions")))?;
        Ok::<(), Rejection>(())
    };
    let Some(operators) = value
        .as_object()
        .filter(|o| o.keys().all(|k| k.starts_with('$')))
    else {
        spend(budget)?;
        return condition(attribute, Op::Eq, value);
    };
    if operators.is_empty() {
        return Err(filter_invalid(format!(
            "attribute `{}`: no operator",
            attribute.name
        )));
    }
    let mut parts = Vec::new();
    for (op, operand) in operators {
        spend(budget)?;
        let part = match op.as_str() {
            "$eq" => condition(attribute, Op::Eq, operand)?,
            "$ne" => condition(attribute, Op::Ne, operand)?,
            "$gt" => condition(attribute, Op::Gt, operand)?,
            "$gte" => condition(attribute, Op::Ge, operand)?,
            "$lt" => condition(attribute, Op::Lt, operand)?,
            "$lte" => condition(attribute, Op::Le, operand)?,
            "$in" => in_list(attribute, operand)?,
            "$nin" => Filter::Not(Box::new(in_list(attribute, operand)?)),
            "$not" => Filter::Not(Box::new(field_expression(attribute, operand, budget)?)),
            other => {
                return Err(filter_invalid(format!(
                    "attribute `{}`: operator `{other}` is not one of $eq $ne $gt $gte $lt $lte $in $nin $not",
                    attribute.name
                )));
            }
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        Filter::And(parts)
    })
}

fn predicate(entity: &Entity, query: &Value) -> Result<Filter, Rejection> {
    let items = query
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| criteria_invalid("a predicate query is a non-empty array"))?;
    if items.len() > MAX_CONDITIONS {
        return Err(filter_invalid(format!(
            "more than {MAX_CONDITIONS} predicates"
        )));
    }
    let mut ordered: Vec<(f64, &Value)> = Vec::with_capacity(items.len());
    for item in items {
        let seq = match item.get("seq_num") {
            None => f64::MAX,
            Some(n) => n
                .as_f64()
                .ok_or_else(|| filter_invalid("seq_num must be a number"))?,
        };
        ordered.push((seq, item));
    }
    ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut parts = Vec::with_capacity(ordered.len());
    for (_, item) in ordered {
        let first = item
            .get("expression1")
            .ok_or_else(|| criteria_invalid("each predicate needs expression1"))?;
        let first = predicate_expression(entity, first)?;
        let second = item
            .get("expression2")
            .map(|e| predicate_expression(entity, e))
            .transpose()?;
        let part = match (item.get("condition").map(|c| c.as_str()), second) {
            (None, None) => first,
            (Some(Some("and")), Some(second)) => Filter::And(vec![first, second]),
            (Some(Some("or")), Some(second)) => Filter::Or(vec![first, second]),
            (Some(Some("not")), None) => Filter::Not(Box::new(first)),
            (Some(Some("not")), Some(_)) => {
                return Err(filter_invalid(
                    "condition `not` negates expression1 and takes no expression2",
                ));
            }
            (Some(Some("and" | "or")), None) => {
                return Err(filter_invalid("conditions `and` and `or` need expression2"));
            }
            (None, Some(_)) => {
                return Err(filter_invalid("expression2 needs a condition (and, or)"));
            }
            (Some(other), _) => {
                return Err(filter_invalid(format!(
                    "condition {} is not one of and, or, not",
                    other.map_or_else(|| "?".to_owned(), str::to_owned)
                )));
            }
        };
        parts.push(part);
    }
    Ok(if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        Filter::And(parts)
    })
}

fn predicate_expression(entity: &Entity, expression: &Value) -> Result<Filter, Rejection> {
    let name = expression
        .get("attribute_name")
        .and_then(Value::as_str)
        .ok_or_else(|| criteria_invalid("expression needs attribute_name"))?;
    let attribute = attribute(entity, name)?;
    let operator = expression
        .get("operator")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            criteria_invalid(format!("attribute `{name}`: expression needs an operator"))
        })?;
    let value = expression.get("attribute_value").ok_or_else(|| {
        criteria_invalid(format!(
            "attribute `{name}`: expression needs attribute_value"
        ))
    })?;
    let op = match operator {
        "eq" => Op::Eq,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        "in" => return in_list(attribute, value),
        other => {
            return Err(filter_invalid(format!(
                "attribute `{name}`: operator `{other}` is not one of gt lt eq ge le in"
            )));
        }
    };
    condition(attribute, op, value)
}

fn in_list(attribute: &Attribute, operand: &Value) -> Result<Filter, Rejection> {
    let items = operand
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= MAX_IN_VALUES)
        .ok_or_else(|| {
            filter_invalid(format!(
                "attribute `{}`: `in` takes an array of 1 to {MAX_IN_VALUES} values",
                attribute.name
            ))
        })?;
    let mut values = Vec::new();
    for item in items {
        values.extend(scalars(attribute, item)?);
    }
    Ok(Filter::In {
        target: attribute.target.clone(),
        values,
    })
}

/// `attribute op value`, the value checked and converted to the field's type (a DCI code may
/// stand for several register values: then `Eq` is `In` and `Ne` is its negation).
fn condition(attribute: &Attribute, op: Op, value: &Value) -> Result<Filter, Rejection> {
    let mut values = scalars(attribute, value)?;
    let ranged = !matches!(op, Op::Eq | Op::Ne);
    if ranged {
        let enumerated = attribute.codes.is_some()
            || attribute
                .field
                .as_ref()
                .is_some_and(|f| f.ty == FieldType::Enum || f.ty == FieldType::Boolean);
        if enumerated {
            return Err(filter_invalid(format!(
                "attribute `{}` takes only equality (eq, ne, in)",
                attribute.name
            )));
        }
    }
    let target = attribute.target.clone();
    Ok(match (values.len(), op) {
        (1, _) => Filter::Compare {
            target,
            op,
            value: values.swap_remove(0),
        },
        (_, Op::Ne) => Filter::Not(Box::new(Filter::In { target, values })),
        (_, _) => Filter::In { target, values },
    })
}

/// The register values a DCI value stands for.
fn scalars(attribute: &Attribute, value: &Value) -> Result<Vec<Scalar>, Rejection> {
    let bad = |what: &str| {
        filter_invalid(format!(
            "attribute `{}`: {what} (got {})",
            attribute.name,
            short(value)
        ))
    };
    if value.is_null() || value.is_array() || value.is_object() {
        return Err(bad("needs a single value"));
    }
    if let Some(codes) = &attribute.codes {
        let mut matched: Vec<Scalar> = codes
            .to_register(value)
            .into_iter()
            .map(|v| Scalar::Text(v.to_owned()))
            .collect();
        // A register value is accepted as itself too (partners that know our values).
        if matched.is_empty()
            && let Some(text) = value.as_str()
            && attribute
                .field
                .as_ref()
                .is_some_and(|f| f.values.iter().any(|v| v == text))
        {
            matched.push(Scalar::Text(text.to_owned()));
        }
        if matched.is_empty() {
            return Err(bad(&format!(
                "not a code of the `{}` code list",
                codes.name()
            )));
        }
        return Ok(matched);
    }
    let Some(field) = &attribute.field else {
        // Record and parent ids.
        return value
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 99)
            .map(|s| vec![Scalar::Text(s.to_owned())])
            .ok_or_else(|| bad("needs an id (a string of 1 to 99 characters)"));
    };
    let scalar = match field.ty {
        FieldType::Integer | FieldType::Decimal => {
            let number = value
                .as_f64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse::<f64>().ok()))
                .filter(|n| n.is_finite())
                .ok_or_else(|| bad("needs a number"))?;
            Scalar::Number(number)
        }
        FieldType::Boolean => {
            let flag = value
                .as_bool()
                .or_else(|| match value.as_str() {
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    _ => None,
                })
                .ok_or_else(|| bad("needs true or false"))?;
            Scalar::Bool(flag)
        }
        FieldType::Date => {
            let text = value
                .as_str()
                .ok_or_else(|| bad("needs a date (YYYY-MM-DD)"))?;
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| bad("needs a date (YYYY-MM-DD)"))?;
            Scalar::Text(text.to_owned())
        }
        FieldType::Enum => {
            let text = value.as_str().ok_or_else(|| bad("needs a text value"))?;
            if !field.values.iter().any(|v| v == text) {
                return Err(bad(&format!("is one of {}", field.values.join(", "))));
            }
            Scalar::Text(text.to_owned())
        }
        _ => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad("needs a text value")),
            };
            if text.len() > 256 {
                return Err(bad("is longer than 256 characters"));
            }
            Scalar::Text(text)
        }
    };
    Ok(vec![scalar])
}

fn sort_keys(entity: &Entity, sort: Option<&Value>) -> Result<Vec<SortKey>, Rejection> {
    let Some(sort) = sort else {
        return Ok(Vec::new());
    };
    let items = sort.as_array().filter(|a| a.len() <= 4).ok_or_else(|| {
        Rejection::new(reason::SORT_INVALID, "sort is an array of at most 4 keys")
    })?;
    let mut keys = Vec::new();
    for item in items {
        let name = item
            .get("attribute_name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Rejection::new(reason::SORT_INVALID, "each sort key needs attribute_name")
            })?;
        let attribute = entity
            .attribute(name)
            .filter(|a| a.sortable && matches!(a.target, Target::Field(_) | Target::FunctionalId))
            .ok_or_else(|| {
                Rejection::new(
                    reason::SORT_INVALID,
                    format!("attribute `{name}` cannot be sorted on"),
                )
            })?;
        let descending = match item.get("sort_order").map(Value::as_str) {
            None | Some(Some("asc")) => false,
            Some(Some("desc")) => true,
            Some(_) => {
                return Err(Rejection::new(
                    reason::SORT_INVALID,
                    format!("attribute `{name}`: sort_order is asc or desc"),
                ));
            }
        };
        keys.push(SortKey {
            target: attribute.target.clone(),
            descending,
        });
    }
    Ok(keys)
}

/// `(page_size, page_number)`, both at least 1, the size at most the limit.
fn pagination(raw: Option<&Value>, limits: QueryLimits) -> Result<Option<(u32, u32)>, Rejection> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let invalid = |message: String| Rejection::new(reason::PAGINATION_INVALID, message);
    let whole =
        |name: &str, value: Option<&Value>, default: Option<u32>| -> Result<u32, Rejection> {
            match value {
                None => default.ok_or_else(|| invalid(format!("pagination.{name} is required"))),
                Some(v) => v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                            .map(|f| f as u64)
                    })
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        invalid(format!(
                            "pagination.{name} must be a whole number of at least 1"
                        ))
                    }),
            }
        };
    let size = whole("page_size", raw.get("page_size"), None)?;
    let number = whole("page_number", raw.get("page_number"), Some(1))?;
    if size > limits.max_page_size {
        return Err(invalid(format!(
            "pagination.page_size is at most {}",
            limits.max_page_size
        )));
    }
    if u64::from(size) * u64::from(number) > i64::MAX as u64 {
        return Err(invalid("pagination goes past the end".into()));
    }
    Ok(Some((size, number)))
}

/// A value for a message, cut short (it may be personal data: never logged, only echoed to the
/// partner who sent it).
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}
