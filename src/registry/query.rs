//! Record queries as data: which records of one register match a filter, in which order, which
//! page. The DCI gateway compiles partner queries into this; a store turns it into one
//! parameterised SQL statement over the field indexes. Names in a query (register, fields,
//! keys) are checked identifiers from register definitions and mappings, never caller text;
//! values are only ever bound as parameters.

use super::record::Record;
use super::register::{FieldDef, FieldType, is_valid_name};

/// A field of a record's document that a query reads: a register field, or (for a list of
/// objects) one member of one element, e.g. the `number` of the first of `phone_numbers`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRef {
    name: String,
    ty: FieldType,
    element: Option<(u32, String)>,
}

impl FieldRef {
    /// A register field (scalar types only: lists and objects cannot be compared).
    pub fn field(def: &FieldDef) -> Option<Self> {
        (!matches!(def.ty, FieldType::List | FieldType::Object) && is_valid_name(&def.name)).then(
            || Self {
                name: def.name.clone(),
                ty: def.ty,
                element: None,
            },
        )
    }

    /// Member `key` of element `index` of a list-of-objects field; compared as text.
    pub fn element(def: &FieldDef, index: u32, key: &str) -> Option<Self> {
        (def.ty == FieldType::List
            && def.items == Some(FieldType::Object)
            && is_valid_name(&def.name)
            && is_valid_name(key))
        .then(|| Self {
            name: def.name.clone(),
            ty: FieldType::String,
            element: Some((index, key.to_owned())),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type values compare as.
    pub fn ty(&self) -> FieldType {
        self.ty
    }

    pub fn element_path(&self) -> Option<(u32, &str)> {
        self.element.as_ref().map(|(i, k)| (*i, k.as_str()))
    }
}

/// What a condition compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The record's functional id (`IND-…`).
    FunctionalId,
    /// A field of the record.
    Field(FieldRef),
    /// The functional id of the record's parent (an individual's household).
    ParentFunctionalId,
    /// The record's status (`ACTIVE`, `INACTIVE`, `ARCHIVED`).
    Status,
    /// A field of a current child record in `register` (a household's members, a supporting
    /// row): the condition holds when some child matches.
    Child { register: String, field: FieldRef },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A value to compare with, already of the target's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(f64),
    Bool(bool),
}

/// A condition on records. Comparisons with a record that lacks the value are false (SQL
/// semantics), also under `Ne` and `Not`.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Compare {
        target: Target,
        op: Op,
        value: Scalar,
    },
    /// The target equals one of `values` (at least one).
    In {
        target: Target,
        values: Vec<Scalar>,
    },
    /// The target has no value (the field is absent or null).
    Absent(Target),
    /// Some current child record in `register` satisfies `filter`, evaluated on that child:
    /// every condition of `filter` holds on the same child row (e.g. one consent row that is
    /// captured, in scope and not withdrawn).
    ChildWhere {
        register: String,
        filter: Box<Filter>,
    },
    /// Some element of the list field `list` satisfies every condition, all on the same
    /// element.
    Element {
        list: String,
        conditions: Vec<ElementCondition>,
    },
}

/// A condition on one element of a list field: the element itself (`key: None`, a list of
/// strings) or its member `key` (a list of objects) is one of `values`, or (with
/// `or_absent`) has no value.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementCondition {
    pub key: Option<String>,
    pub values: Vec<String>,
    pub or_absent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// `FunctionalId` or `Field`.
    pub target: Target,
    pub descending: bool,
}

/// One page of the current records of `register` that match `filter`, ordered by `sort` and
/// then by record id (creation order), so pages are stable.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordQuery {
    pub register: String,
    pub filter: Filter,
    pub sort: Vec<SortKey>,
    pub limit: u32,
    pub offset: u64,
    /// Also count every match (for `total_count`).
    pub count: bool,
    /// Also read the current children of each record on the page that belong to these
    /// registers (members, supporting rows), in the same statement; none when empty.
    pub child_registers: Vec<String>,
    /// The filter picks records by identifier (an `idtype-value` lookup, functional ids):
    /// the best plan does not depend on the values, so a store may plan the statement once
    /// for every execution.
    pub by_identifier: bool,
}

/// The answer to a [`RecordQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub records: Vec<Record>,
    /// Every match, when counting was asked for.
    pub total: Option<u64>,
    /// The children of the page's records, when asked for, by register and functional id.
    pub children: Vec<Record>,
}

impl RecordQuery {
    /// Every name the query will write into SQL, checked once more by the store.
    pub fn names_are_valid(&self) -> bool {
        fn target_ok(target: &Target) -> bool {
            match target {
                Target::FunctionalId | Target::ParentFunctionalId | Target::Status => true,
                Target::Field(field) => field_ok(field),
                Target::Child { register, field } => is_valid_name(register) && field_ok(field),
            }
        }
        fn field_ok(field: &FieldRef) -> bool {
            is_valid_name(&field.name)
                && field
                    .element
                    .as_ref()
                    .is_none_or(|(_, key)| is_valid_name(key))
        }
        fn filter_ok(filter: &Filter) -> bool {
            match filter {
                Filter::And(parts) | Filter::Or(parts) => {
                    !parts.is_empty() && parts.iter().all(filter_ok)
                }
                Filter::Not(inner) => filter_ok(inner),
                Filter::Compare { target, .. } => target_ok(target),
                Filter::In { target, values } => !values.is_empty() && target_ok(target),
                Filter::Absent(target) => target_ok(target),
                Filter::ChildWhere { register, filter } => {
                    is_valid_name(register) && filter_ok(filter)
                }
                Filter::Element { list, conditions } => {
                    is_valid_name(list)
                        && !conditions.is_empty()
                        && conditions.iter().all(|c| {
                            (!c.values.is_empty() || c.or_absent)
                                && c.key.as_deref().is_none_or(is_valid_name)
                        })
                }
            }
        }
        is_valid_name(&self.register)
            && self.child_registers.iter().all(|r| is_valid_name(r))
            && filter_ok(&self.filter)
            && self.sort.iter().all(|k| {
                matches!(k.target, Target::FunctionalId | Target::Field(_)) && target_ok(&k.target)
            })
    }
}
