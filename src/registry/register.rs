//! Register definitions: the data that `specs/registers/*.yaml` holds, loaded and checked at
//! start. The same definition drives validation, database indexes, CSV columns and, later, the
//! DCI mapping and consent field names.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The value type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Decimal,
    Boolean,
    Date,
    Datetime,
    Enum,
    List,
    Object,
}

impl FieldType {
    /// The name used in YAML and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Enum => "enum",
            Self::List => "list",
            Self::Object => "object",
        }
    }

    /// Whether values compare as numbers in a database index.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Decimal)
    }
}

/// Whether a definition is a main register or a supporting table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Individual and Household: nsr generates their functional ids.
    Register,
    /// Supporting tables: the caller supplies ids, which must carry the prefix.
    Table,
}

/// One field of a register.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub ty: FieldType,
    pub description: String,
    /// Allowed values of an `enum` (or of a `list` whose items are `enum`).
    pub values: Vec<String>,
    /// Element type of a `list`.
    pub items: Option<FieldType>,
    pub required: bool,
    pub unique: bool,
    pub indexed: bool,
    pub pii: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// One register or supporting table.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterDef {
    pub name: String,
    pub title: String,
    pub kind: Kind,
    pub prefix: String,
    pub parents: Vec<String>,
    pub parent_required: bool,
    /// In file order: CSV columns and displays follow it.
    pub fields: Vec<FieldDef>,
    /// The file it was read from, for messages.
    pub source: PathBuf,
    /// Field name → position in `fields` (lookups happen for every cell of a bulk import).
    positions: HashMap<String, usize>,
}

impl RegisterDef {
    /// The field called `name`, if the register has one.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.positions.get(name).and_then(|&i| self.fields.get(i))
    }

    /// Fields that get a database index (unique ones included).
    pub fn indexed_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.indexed || f.unique)
    }
}

/// All registers, by name.
#[derive(Debug, Clone, Default)]
pub struct Registers {
    by_name: BTreeMap<String, RegisterDef>,
}

/// A definition that cannot be used; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct DefinitionError {
    pub file: PathBuf,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    name: String,
    title: String,
    kind: Kind,
    prefix: String,
    #[serde(default)]
    parents: Vec<String>,
    #[serde(default)]
    parent_required: bool,
    fields: serde_yaml::Mapping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    ty: FieldType,
    description: String,
    #[serde(default)]
    values: Vec<String>,
    items: Option<FieldType>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    unique: bool,
    #[serde(default)]
    indexed: bool,
    #[serde(default)]
    pii: bool,
    min: Option<f64>,
    max: Option<f64>,
}

/// Names end up inside SQL index expressions and CSV headers: keep them to `[a-z][a-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 48
}

fn parse_field(
    file: &Path,
    name: &str,
    value: serde_yaml::Value,
) -> Result<FieldDef, DefinitionError> {
    let fail = |message: String| DefinitionError {
        file: file.to_path_buf(),
        message: format!("field `{name}`: {message}"),
    };
    if !is_valid_name(name) {
        return Err(fail(
            "name must match [a-z][a-z0-9_]* (at most 48 characters)".into(),
        ));
    }
    let raw: RawField = serde_yaml::from_value(value).map_err(|e| fail(e.to_string()))?;
    let enum_values_needed = raw.ty == FieldType::Enum
        || (raw.ty == FieldType::List && raw.items == Some(FieldType::Enum));
    if enum_values_needed && raw.values.is_empty() {
        return Err(fail("an enum needs `values`".into()));
    }
    if !enum_values_needed && !raw.values.is_empty() {
        return Err(fail("`values` is only for enums".into()));
    }
    match (raw.ty, raw.items) {
        (FieldType::List, None) => return Err(fail("a list needs `items`".into())),
        (FieldType::List, Some(FieldType::List)) => {
            return Err(fail("`items` cannot be a list".into()));
        }
        (FieldType::List, Some(_)) => {}
        (_, Some(_)) => return Err(fail("`items` is only for lists".into())),
        _ => {}
    }
    if (raw.min.is_some() || raw.max.is_some()) && !raw.ty.is_numeric() {
        return Err(fail("`min`/`max` are only for integer and decimal".into()));
    }
    if let (Some(min), Some(max)) = (raw.min, raw.max)
        && min > max
    {
        return Err(fail(format!("min {min} is above max {max}")));
    }
    if (raw.unique || raw.indexed) && matches!(raw.ty, FieldType::List | FieldType::Object) {
        return Err(fail("a list or object cannot be unique or indexed".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = raw.values.iter().find(|v| !seen.insert(v.as_str())) {
        return Err(fail(format!("enum value `{dup}` is listed twice")));
    }
    Ok(FieldDef {
        name: name.to_owned(),
        ty: raw.ty,
        description: raw.description,
        values: raw.values,
        items: raw.items,
        required: raw.required,
        unique: raw.unique,
        indexed: raw.indexed || raw.unique,
        pii: raw.pii,
        min: raw.min,
        max: raw.max,
    })
}

/// Parses one definition file's text.
pub fn parse_register(file: &Path, text: &str) -> Result<RegisterDef, DefinitionError> {
    let fail = |message: String| DefinitionError {
        file: file.to_path_buf(),
        message,
    };
    let raw: RawRegister = serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !is_valid_name(&raw.name) {
        return Err(fail(format!(
            "register name `{}` must match [a-z][a-z0-9_]*",
            raw.name
        )));
    }
    if raw.name != stem {
        return Err(fail(format!(
            "register name `{}` must equal the file name `{stem}`",
            raw.name
        )));
    }
    let prefix_ok = raw.prefix.len() >= 2
        && raw.prefix.ends_with('-')
        && raw
            .prefix
            .trim_end_matches('-')
            .chars()
            .all(|c| c.is_ascii_uppercase());
    if !prefix_ok {
        return Err(fail(format!(
            "prefix `{}` must be capital letters followed by `-`",
            raw.prefix
        )));
    }
    if raw.parent_required && raw.parents.is_empty() {
        return Err(fail(
            "parent_required is set but no parents are named".into(),
        ));
    }
    let mut fields: Vec<FieldDef> = Vec::with_capacity(raw.fields.len());
    for (key, value) in raw.fields {
        let Some(name) = key.as_str() else {
            return Err(fail(format!("field names must be strings, found {key:?}")));
        };
        if fields.iter().any(|f| f.name == name) {
            return Err(fail(format!("field `{name}` is defined twice")));
        }
        fields.push(parse_field(file, name, value)?);
    }
    if fields.is_empty() {
        return Err(fail("a register needs at least one field".into()));
    }
    Ok(RegisterDef {
        name: raw.name,
        title: raw.title,
        kind: raw.kind,
        prefix: raw.prefix,
        parents: raw.parents,
        parent_required: raw.parent_required,
        positions: fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect(),
        fields,
        source: file.to_path_buf(),
    })
}

impl Registers {
    /// Loads and checks every `*.yaml` in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, DefinitionError> {
        let entries = std::fs::read_dir(dir).map_err(|e| DefinitionError {
            file: dir.to_path_buf(),
            message: format!("cannot read register definitions: {e}"),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut defs = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| DefinitionError {
                file: file.clone(),
                message: e.to_string(),
            })?;
            defs.push(parse_register(&file, &text)?);
        }
        Self::from_defs(defs, dir)
    }

    /// Checks definitions against each other: unique names and prefixes, known parents.
    pub fn from_defs(defs: Vec<RegisterDef>, dir: &Path) -> Result<Self, DefinitionError> {
        if defs.is_empty() {
            return Err(DefinitionError {
                file: dir.to_path_buf(),
                message: "no register definitions (*.yaml) found".into(),
            });
        }
        let mut by_name = BTreeMap::new();
        for def in defs {
            if let Some(other) = by_name
                .values()
                .find(|o: &&RegisterDef| o.prefix == def.prefix)
            {
                return Err(DefinitionError {
                    file: def.source.clone(),
                    message: format!("prefix `{}` is also used by `{}`", def.prefix, other.name),
                });
            }
            by_name.insert(def.name.clone(), def);
        }
        for def in by_name.values() {
            for parent in &def.parents {
                if !by_name.contains_key(parent) {
                    return Err(DefinitionError {
                        file: def.source.clone(),
                        message: format!("parent register `{parent}` is not defined"),
                    });
                }
            }
        }
        Ok(Self { by_name })
    }

    /// The register called `name`.
    pub fn get(&self, name: &str) -> Option<&RegisterDef> {
        self.by_name.get(name)
    }

    /// All registers: main registers first (households before individuals), then tables.
    pub fn iter(&self) -> impl Iterator<Item = &RegisterDef> {
        let mut all: Vec<&RegisterDef> = self.by_name.values().collect();
        all.sort_by_key(|d| (d.kind == Kind::Table, d.parents.len(), d.name.clone()));
        all.into_iter()
    }

    /// Register names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: pet\ntitle: Pet\nkind: table\nprefix: \"PET-\"\nfields:\n  colour:\n    type: enum\n    description: c\n    values: [RED, BLUE]\n";

    fn parse(text: &str) -> Result<RegisterDef, DefinitionError> {
        parse_register(Path::new("specs/registers/pet.yaml"), text)
    }

    #[test]
    fn a_good_definition_parses() {
        let def = parse(GOOD).unwrap();
        assert_eq!(def.field("colour").unwrap().values, ["RED", "BLUE"]);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let err = parse(&GOOD.replace("type: enum", "type: colourful"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("specs/registers/pet.yaml: field `colour`"),
            "{err}"
        );
        let err = parse(&GOOD.replace("values: [RED, BLUE]", "valuez: [RED]"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `colour`") && err.contains("valuez"),
            "{err}"
        );
        let err = parse(&GOOD.replace("values: [RED, BLUE]", "values: []"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `values`"), "{err}");
        let err = parse(&GOOD.replace("colour:", "Colour:"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `Colour`"), "{err}");
        let err = parse(&GOOD.replace("name: pet", "name: cat"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file name"), "{err}");
    }

    #[test]
    fn unknown_parents_are_refused() {
        let def = parse(&GOOD.replace("kind: table", "kind: table\nparents: [owner]")).unwrap();
        let err = Registers::from_defs(vec![def], Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`owner`"), "{err}");
    }
}
