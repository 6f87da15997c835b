//! Reading many records: a register listed and filtered on its indexed fields, sorted and
//! paged; and named versions set on a chosen set of records.

use super::record::{Problem, ProblemCode, Record, RecordStatus, format_cell, parse_cell};
use super::register::{FieldDef, FieldType};
use super::service::Registry;
use crate::store::{At, ListingQuery, RecordSort, StoreError};

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 500;

/// A listing request. Filters and the sort key must be indexed (or unique) fields of the
/// register, so every query is served by an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub register: String,
    /// `(field, value)` pairs, all of which must match (values in their CSV text form).
    pub filters: Vec<(String, String)>,
    pub status: Option<RecordStatus>,
    /// `created` (the default: creation order), `functional_id`, or an indexed field; a
    /// leading `-` sorts descending.
    pub sort: Option<String>,
    /// 1-based.
    pub page: u64,
    pub page_size: u32,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<Record>,
    pub page: u64,
    pub page_size: u32,
    /// Whether a next page has records.
    pub has_more: bool,
}

/// Why a listing or a label could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no register `{0}`")]
    UnknownRegister(String),
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a label name: 1 to 64 of letters, digits, `.`, `_`, `-`.
pub fn check_label(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err("a label is 1 to 64 of A-Z, a-z, 0-9, `.`, `_`, `-`".to_owned())
    }
}

impl Registry {
    /// The fields of `register` that a listing may filter or sort on.
    pub fn queryable_fields(&self, register: &str) -> Vec<&FieldDef> {
        self.registers()
            .get(register)
            .map(|def| def.indexed_fields().collect())
            .unwrap_or_default()
    }

    /// Lists current records of a register. Every problem with the filters, sort or page is
    /// reported at once.
    pub async fn list(&self, request: &ListRequest) -> Result<Page, QueryError> {
        let Some(def) = self.registers().get(&request.register) else {
            return Err(QueryError::UnknownRegister(request.register.clone()));
        };
        let mut problems = Vec::new();
        let mut filters = Vec::new();
        for (name, value) in &request.filters {
            match def.field(name) {
                Some(field) if field.indexed || field.unique => match parse_cell(field, value) {
                    Ok(_) if field.ty == FieldType::Enum && !field.values.contains(value) => {
                        problems.push(Problem::new(
                            name,
                            ProblemCode::NotInEnum,
                            format!("`{value}` is not one of {}", field.values.join(", ")),
                        ));
                    }
                    Ok(parsed) => filters.push((field, format_cell(&parsed))),
                    Err(problem) => problems.push(problem),
                },
                Some(_) => problems.push(Problem::new(
                    name,
                    ProblemCode::Invalid,
                    "only indexed fields can be filtered on",
                )),
                None => problems.push(Problem::new(
                    name,
                    ProblemCode::UnknownField,
                    format!("register `{}` has no field `{name}`", def.name),
                )),
            }
        }
        let (descending, sort_name) = match request.sort.as_deref() {
            Some(s) => s.strip_prefix('-').map_or((false, s), |rest| (true, rest)),
            None => (false, "created"),
        };
        let sort = match sort_name {
            "created" => RecordSort::Created,
            "functional_id" => RecordSort::FunctionalId,
            name => match def.field(name) {
                Some(field) if field.indexed || field.unique => RecordSort::Field(field),
                _ => {
                    problems.push(Problem::new(
                        "sort",
                        ProblemCode::Invalid,
                        format!(
                            "sort by `created`, `functional_id` or an indexed field ({})",
                            def.indexed_fields()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                    RecordSort::Created
                }
            },
        };
        if request.page == 0 {
            problems.push(Problem::new(
                "page",
                ProblemCode::OutOfRange,
                "pages start at 1",
            ));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&request.page_size) {
            problems.push(Problem::new(
                "page_size",
                ProblemCode::OutOfRange,
                format!("page_size is 1 to {MAX_PAGE_SIZE}"),
            ));
        }
        if !problems.is_empty() {
            return Err(QueryError::Invalid(problems));
        }
        let offset = (request.page - 1).saturating_mul(u64::from(request.page_size));
        let mut records = self
            .store()
            .records_query(&ListingQuery {
                register: &def.name,
                filters,
                status: request.status,
                sort,
                descending,
                offset,
                // One more than asked, to know whether another page follows.
                limit: request.page_size + 1,
            })
            .await?;
        let has_more = records.len() > request.page_size as usize;
        records.truncate(request.page_size as usize);
        Ok(Page {
            records,
            page: request.page,
            page_size: request.page_size,
            has_more,
        })
    }

    /// Labels the current versions of all of `ids` (functional ids or UUIDs), or of none if
    /// the label is malformed or any id is unknown (each reported). Returns how many were
    /// newly labelled (a label already on a record stays where it is).
    pub async fn label_records(
        &self,
        label: &str,
        ids: &[String],
        actor: &str,
    ) -> Result<u64, QueryError> {
        let mut problems = Vec::new();
        if let Err(message) = check_label(label) {
            problems.push(Problem::new("label", ProblemCode::Invalid, message));
        }
        if ids.is_empty() {
            problems.push(Problem::new(
                "ids",
                ProblemCode::Required,
                "name at least one record",
            ));
        }
        let mut found = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            match self.find(id, At::Current).await? {
                Some(record) => found.push(record.id),
                None => problems.push(Problem::new(
                    format!("ids[{index}]"),
                    ProblemCode::NotFound,
                    format!("no record `{id}`"),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(QueryError::Invalid(problems));
        }
        Ok(self
            .store()
            .label_current_versions(label, &found, actor, self.now())
            .await?)
    }
}
