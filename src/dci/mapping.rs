//! The DCI mapping: `mappings/*.yaml` read and checked against the register definitions, then
//! used both ways — records rendered as DCI JSON-LD (Group, Member, SRPerson, Identifier, Name,
//! Address, DisabilityInfo, and the nsr profile's `nsr:` properties), and the attributes and
//! identifier types partners may search on, each bound to an indexed register field.
//!
//! This module is the only translator between registry records and DCI records
//! (ARCHITECTURE.md). The file format is documented in `mappings/README.md`.

use crate::registry::query::{FieldRef, Target};
use crate::registry::record::Record;
use crate::registry::register::{FieldDef, FieldType, RegisterDef, Registers};
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// A mapping that cannot be used: the file and the key path (`entities.Member.record.sex`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct MappingError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

/// A DCI code list: register enum value → DCI code.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeList {
    name: String,
    codes: Vec<(String, Value)>,
}

impl CodeList {
    /// The DCI code for a register value (`None`: not sent).
    pub fn to_dci(&self, value: &str) -> Option<&Value> {
        self.codes.iter().find(|(n, _)| n == value).map(|(_, c)| c)
    }

    /// The register values a DCI code stands for (several values may share a code).
    pub fn to_register(&self, code: &Value) -> Vec<&str> {
        let loose = |a: &Value, b: &Value| {
            a == b
                || (a.as_str().is_some() && a.as_str() == b.as_str())
                || (a.is_number() && b.as_str().and_then(|s| s.parse::<f64>().ok()) == a.as_f64())
        };
        self.codes
            .iter()
            .filter(|(_, c)| loose(c, code))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A searchable attribute: what it compares, and how DCI values translate.
#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub target: Target,
    /// The register field behind it (types, enum values); `None` for record ids.
    pub field: Option<FieldDef>,
    pub codes: Option<Arc<CodeList>>,
    pub sortable: bool,
}

/// What a record's envelope offers to templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordAttr {
    FunctionalId,
    Id,
    Status,
    Version,
    ValidFrom,
}

/// A compiled record template.
#[derive(Debug, Clone)]
enum Template {
    Literal(Value),
    /// Properties in order; `Null` values are left out. An object whose every non-`@`
    /// property was left out is itself `Null`.
    Object(Vec<(String, Template)>),
    /// Items; `Null` items left out; an empty list is `Null`.
    List(Vec<Template>),
    Field {
        name: String,
        codes: Option<Arc<CodeList>>,
        /// For a list of objects: the member to take from each.
        each: Option<String>,
        prefix: Option<String>,
    },
    Record {
        attr: RecordAttr,
        prefix: Option<String>,
    },
    /// The parent's functional id.
    Parent {
        prefix: Option<String>,
    },
    /// One item per current child row of `register`.
    Rows {
        register: String,
        item: Box<Template>,
    },
    /// The child row of `register` with the greatest `by`, rendered with `item`.
    Latest {
        register: String,
        by: String,
        item: Box<Template>,
    },
    /// The member whose functional id is in field `field`, rendered as the member entity.
    Head {
        field: String,
    },
    /// Every member, rendered as the member entity.
    Members,
}

/// One DCI entity (`response_entity`): a register, its template and its search attributes.
#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub register: String,
    pub reg_record_type: String,
    /// The entity its `member_list` and `group_head_info` are rendered as.
    pub members: Option<String>,
    identifiers: Vec<(String, String)>,
    attributes: BTreeMap<String, Attribute>,
    template: Template,
    /// The registers of the child records rendering reads (rows, members), sorted: the only
    /// children a search reads with its page.
    child_registers: Vec<String>,
}

impl Entity {
    /// The attribute an `idtype-value` type names (case-insensitive).
    pub fn identifier(&self, id_type: &str) -> Option<&Attribute> {
        self.identifiers
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(id_type))
            .and_then(|(_, a)| self.attributes.get(a))
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.get(name)
    }

    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.keys().map(String::as_str)
    }

    pub fn identifier_types(&self) -> impl Iterator<Item = &str> {
        self.identifiers.iter().map(|(t, _)| t.as_str())
    }

    pub fn needs_children(&self) -> bool {
        !self.child_registers.is_empty()
    }

    pub fn child_registers(&self) -> &[String] {
        &self.child_registers
    }
}

/// Child records of the records being rendered, by parent id.
#[derive(Debug, Default)]
pub struct Related {
    children: HashMap<Uuid, Vec<Record>>,
}

impl Related {
    pub fn new(children: Vec<Record>) -> Self {
        let mut by_parent: HashMap<Uuid, Vec<Record>> = HashMap::new();
        for child in children {
            if let Some(parent) = child.parent_id {
                by_parent.entry(parent).or_default().push(child);
            }
        }
        Self {
            children: by_parent,
        }
    }

    pub fn add(&mut self, children: Vec<Record>) {
        for child in children {
            if let Some(parent) = child.parent_id {
                self.children.entry(parent).or_default().push(child);
            }
        }
    }

    fn of<'a>(&'a self, parent: &Record, register: &'a str) -> impl Iterator<Item = &'a Record> {
        self.children
            .get(&parent.id)
            .into_iter()
            .flatten()
            .filter(move |c| c.register == register)
    }
}

/// The whole mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    reg_type: String,
    context: Value,
    entities: BTreeMap<String, Entity>,
}

impl Mapping {
    /// Loads every `*.yaml` in `dir` (one file today: `dci-social.yaml`).
    pub fn load_dir(dir: &Path, registers: &Registers) -> Result<Self, MappingError> {
        let fail = |message: String| MappingError {
            file: dir.to_path_buf(),
            key: "-".into(),
            message,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("cannot read the mappings folder: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let [file] = files.as_slice() else {
            return Err(fail(format!(
                "expected exactly one mapping file (*.yaml), found {}",
                files.len()
            )));
        };
        let text = std::fs::read_to_string(file).map_err(|e| MappingError {
            file: file.clone(),
            key: "-".into(),
            message: e.to_string(),
        })?;
        Self::parse(file, &text, registers)
    }

    /// Parses and checks one mapping file's text.
    pub fn parse(file: &Path, text: &str, registers: &Registers) -> Result<Self, MappingError> {
        let loader = Loader {
            file: file.to_path_buf(),
            registers,
        };
        loader.mapping(text)
    }

    pub fn reg_type(&self) -> &str {
        &self.reg_type
    }

    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.get(name)
    }

    pub fn entity_names(&self) -> impl Iterator<Item = &str> {
        self.entities.keys().map(String::as_str)
    }

    /// The `(register, field)` pairs whose searches need an index beyond the register's own
    /// field indexes (members of list elements).
    pub fn query_indexes(&self) -> Vec<(String, FieldRef)> {
        let mut out = Vec::new();
        for entity in self.entities.values() {
            for attribute in entity.attributes.values() {
                match &attribute.target {
                    Target::Field(field) if field.element_path().is_some() => {
                        out.push((entity.register.clone(), field.clone()));
                    }
                    Target::Child { register, field } if field.element_path().is_some() => {
                        out.push((register.clone(), field.clone()));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Renders `record` as a JSON-LD object of `entity`.
    pub fn render(&self, entity: &Entity, record: &Record, related: &Related) -> Value {
        self.render_with(entity, record, related, false)
    }

    /// [`Mapping::render`], with a [`MARKER`] in the record's object and in each member
    /// object inside it, naming the registry record it was rendered from.
    pub fn render_marked(&self, entity: &Entity, record: &Record, related: &Related) -> Value {
        self.render_with(entity, record, related, true)
    }

    fn render_with(
        &self,
        entity: &Entity,
        record: &Record,
        related: &Related,
        mark: bool,
    ) -> Value {
        let mut value = self.render_entity(entity, record, related, mark);
        if let Value::Object(object) = &mut value {
            let mut with_context = Map::new();
            with_context.insert("@context".into(), self.context.clone());
            with_context.append(object);
            value = Value::Object(with_context);
        }
        value
    }

    /// One entity object: its template, and the marker when asked.
    fn render_entity(
        &self,
        entity: &Entity,
        record: &Record,
        related: &Related,
        mark: bool,
    ) -> Value {
        let mut value = self.render_template(entity, &entity.template, record, related, mark);
        if mark && let Value::Object(object) = &mut value {
            object.insert(
                MARKER.into(),
                serde_json::json!({
                    "id": record.id.to_string(),
                    "functional_id": record.functional_id,
                    "entity": entity.name,
                }),
            );
        }
        value
    }

    fn render_template(
        &self,
        entity: &Entity,
        template: &Template,
        record: &Record,
        related: &Related,
        mark: bool,
    ) -> Value {
        let prefixed = |value: Value, prefix: &Option<String>| match (prefix, value) {
            (Some(prefix), Value::String(text)) => Value::String(format!("{prefix}{text}")),
            (_, value) => value,
        };
        match template {
            Template::Literal(value) => value.clone(),
            Template::Object(properties) => {
                let mut out = Map::new();
                let mut data = false;
                for (name, property) in properties {
                    let value = self.render_template(entity, property, record, related, mark);
                    if !value.is_null() {
                        data |= !name.starts_with('@');
                        out.insert(name.clone(), value);
                    }
                }
                if data || properties.iter().all(|(n, _)| n.starts_with('@')) {
                    Value::Object(out)
                } else {
                    Value::Null
                }
            }
            Template::List(items) => {
                let out: Vec<Value> = items
                    .iter()
                    .map(|item| self.render_template(entity, item, record, related, mark))
                    .filter(|v| !v.is_null())
                    .collect();
                if out.is_empty() {
                    Value::Null
                } else {
                    Value::Array(out)
                }
            }
            Template::Field {
                name,
                codes,
                each,
                prefix,
            } => {
                let Some(value) = record.fields.get(name) else {
                    return Value::Null;
                };
                let value = match (each, value) {
                    (Some(key), Value::Array(items)) => {
                        let picked: Vec<Value> = items
                            .iter()
                            .filter_map(|item| item.get(key).cloned())
                            .collect();
                        if picked.is_empty() {
                            return Value::Null;
                        }
                        Value::Array(picked)
                    }
                    (_, value) => value.clone(),
                };
                let value = match (codes, &value) {
                    (Some(codes), Value::String(text)) => {
                        codes.to_dci(text).cloned().unwrap_or(Value::Null)
                    }
                    _ => value,
                };
                prefixed(value, prefix)
            }
            Template::Record { attr, prefix } => {
                let value = match attr {
                    RecordAttr::FunctionalId => Value::String(record.functional_id.clone()),
                    RecordAttr::Id => Value::String(record.id.to_string()),
                    RecordAttr::Status => Value::String(record.status.as_str().to_owned()),
                    RecordAttr::Version => Value::from(record.version),
                    RecordAttr::ValidFrom => Value::String(
                        record
                            .valid_from
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                };
                prefixed(value, prefix)
            }
            Template::Parent { prefix } => record
                .parent_functional_id
                .clone()
                .map_or(Value::Null, |p| prefixed(Value::String(p), prefix)),
            Template::Rows { register, item } => {
                let out: Vec<Value> = related
                    .of(record, register)
                    .map(|row| self.render_template(entity, item, row, related, mark))
                    .filter(|v| !v.is_null())
                    .collect();
                if out.is_empty() {
                    Value::Null
                } else {
                    Value::Array(out)
                }
            }
            Template::Latest { register, by, item } => {
                let latest = related.of(record, register).max_by(|a, b| {
                    let key = |r: &Record| r.fields.get(by).map(ToString::to_string);
                    key(a)
                        .cmp(&key(b))
                        .then_with(|| a.functional_id.cmp(&b.functional_id))
                });
                latest.map_or(Value::Null, |row| {
                    self.render_template(entity, item, row, related, mark)
                })
            }
            Template::Head { field } => {
                let (Some(member_entity), Some(head)) = (
                    entity.members.as_deref().and_then(|m| self.entities.get(m)),
                    record.fields.get(field).and_then(Value::as_str),
                ) else {
                    return Value::Null;
                };
                related
                    .of(record, &member_entity.register)
                    .find(|m| m.functional_id == head)
                    .map_or(Value::Null, |member| {
                        self.render_entity(member_entity, member, related, mark)
                    })
            }
            Template::Members => {
                let Some(member_entity) =
                    entity.members.as_deref().and_then(|m| self.entities.get(m))
                else {
                    return Value::Null;
                };
                let out: Vec<Value> = related
                    .of(record, &member_entity.register)
                    .map(|member| self.render_entity(member_entity, member, related, mark))
                    .collect();
                if out.is_empty() {
                    Value::Null
                } else {
                    Value::Array(out)
                }
            }
        }
    }
}

/// The registers of the child records `template` renders: its rows, and its members (of
/// `members_register`), sorted, each once.
fn child_registers(template: &Template, members_register: Option<&str>) -> Vec<String> {
    fn walk<'t>(template: &'t Template, members: Option<&'t str>, out: &mut BTreeSet<&'t str>) {
        match template {
            Template::Object(properties) => {
                for (_, property) in properties {
                    walk(property, members, out);
                }
            }
            Template::List(items) => {
                for item in items {
                    walk(item, members, out);
                }
            }
            // Only the page's own children are read, so a row's item renders the row alone.
            Template::Rows { register, .. } | Template::Latest { register, .. } => {
                out.insert(register);
            }
            Template::Head { .. } | Template::Members => out.extend(members),
            Template::Literal(_)
            | Template::Field { .. }
            | Template::Record { .. }
            | Template::Parent { .. } => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(template, members_register, &mut out);
    out.into_iter().map(str::to_owned).collect()
}

/// Reads a mapping file, naming the key of every problem.
struct Loader<'a> {
    file: PathBuf,
    registers: &'a Registers,
}

type Codes = BTreeMap<String, Arc<CodeList>>;

impl Loader<'_> {
    fn fail(&self, key: &str, message: impl Into<String>) -> MappingError {
        MappingError {
            file: self.file.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn mapping(&self, text: &str) -> Result<Mapping, MappingError> {
        let root: Yaml = serde_yaml::from_str(text).map_err(|e| self.fail("-", e.to_string()))?;
        let root = self.map(&root, "-")?;
        self.only_keys(root, "-", &["reg_type", "context", "codes", "entities"])?;
        let reg_type = self.string(root.get("reg_type"), "reg_type")?;
        let context = yaml_to_json(root.get("context").unwrap_or(&Yaml::Null))
            .filter(Value::is_object)
            .ok_or_else(|| self.fail("context", "must be a map of prefixes to IRIs"))?;

        let mut codes = Codes::new();
        if let Some(raw) = root.get("codes") {
            for (name, list) in self.map(raw, "codes")? {
                let name = self.key_name(name, "codes")?;
                let key = format!("codes.{name}");
                let mut entries = Vec::new();
                for (value, code) in self.map(list, &key)? {
                    let value = self.key_name(value, &key)?;
                    let code = yaml_to_json(code)
                        .filter(|c| c.is_string() || c.is_number() || c.is_boolean())
                        .ok_or_else(|| {
                            self.fail(
                                &format!("{key}.{value}"),
                                "a code is a string, number or boolean",
                            )
                        })?;
                    entries.push((value, code));
                }
                codes.insert(
                    name.clone(),
                    Arc::new(CodeList {
                        name,
                        codes: entries,
                    }),
                );
            }
        }

        let raw_entities = self.map(
            root.get("entities")
                .ok_or_else(|| self.fail("entities", "is required"))?,
            "entities",
        )?;
        let names: BTreeSet<String> = raw_entities
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        let mut entities = BTreeMap::new();
        for (name, raw) in raw_entities {
            let name = self.key_name(name, "entities")?;
            if name != "Group" && name != "Member" {
                return Err(self.fail(
                    &format!("entities.{name}"),
                    "DCI response entities are Group and Member",
                ));
            }
            let entity = self.entity(&name, raw, &codes, &names)?;
            entities.insert(name, entity);
        }
        // An entity rendering members needs them to exist, with the register below its own.
        for entity in entities.values() {
            if let Some(members) = &entity.members {
                let key = format!("entities.{}.members", entity.name);
                let member = entities
                    .get(members)
                    .ok_or_else(|| self.fail(&key, format!("no entity `{members}`")))?;
                let member_def = self.register(&member.register, &key)?;
                if !member_def.parents.contains(&entity.register) {
                    return Err(self.fail(
                        &key,
                        format!(
                            "register `{}` is not a child of `{}`",
                            member.register, entity.register
                        ),
                    ));
                }
            }
        }
        let members_registers: BTreeMap<String, String> = entities
            .values()
            .filter_map(|entity| {
                let member = entities.get(entity.members.as_deref()?)?;
                Some((entity.name.clone(), member.register.clone()))
            })
            .collect();
        for entity in entities.values_mut() {
            let members_register = members_registers.get(&entity.name).map(String::as_str);
            entity.child_registers = child_registers(&entity.template, members_register);
        }
        Ok(Mapping {
            reg_type,
            context,
            entities,
        })
    }

    fn entity(
        &self,
        name: &str,
        raw: &Yaml,
        codes: &Codes,
        entity_names: &BTreeSet<String>,
    ) -> Result<Entity, MappingError> {
        let key = format!("entities.{name}");
        let raw = self.map(raw, &key)?;
        self.only_keys(
            raw,
            &key,
            &[
                "register",
                "reg_record_type",
                "members",
                "identifiers",
                "attributes",
                "record",
            ],
        )?;
        let register_name = self.string(raw.get("register"), &format!("{key}.register"))?;
        let def = self.register(&register_name, &format!("{key}.register"))?;
        let members = match raw.get("members") {
            None => None,
            Some(m) => {
                let members = self.string(Some(m), &format!("{key}.members"))?;
                if !entity_names.contains(&members) {
                    return Err(
                        self.fail(&format!("{key}.members"), format!("no entity `{members}`"))
                    );
                }
                Some(members)
            }
        };

        let mut attributes = BTreeMap::new();
        if let Some(raw_attributes) = raw.get("attributes") {
            for (attr_name, spec) in self.map(raw_attributes, &format!("{key}.attributes"))? {
                let attr_name = self.key_name(attr_name, &format!("{key}.attributes"))?;
                let attr_key = format!("{key}.attributes.{attr_name}");
                let attribute = self.attribute(&attr_name, spec, def, codes, &attr_key)?;
                attributes.insert(attr_name, attribute);
            }
        }
        let mut identifiers = Vec::new();
        if let Some(raw_ids) = raw.get("identifiers") {
            for (id_type, attr) in self.map(raw_ids, &format!("{key}.identifiers"))? {
                let id_type = self.key_name(id_type, &format!("{key}.identifiers"))?;
                let id_key = format!("{key}.identifiers.{id_type}");
                let attr = self.string(Some(attr), &id_key)?;
                if !attributes.contains_key(&attr) {
                    return Err(self.fail(
                        &id_key,
                        format!("no attribute `{attr}` in {key}.attributes"),
                    ));
                }
                identifiers.push((id_type, attr));
            }
        }
        let template = self.template(
            raw.get("record")
                .ok_or_else(|| self.fail(&format!("{key}.record"), "is required"))?,
            def,
            codes,
            members.is_some(),
            &format!("{key}.record"),
        )?;
        Ok(Entity {
            name: name.to_owned(),
            register: register_name,
            reg_record_type: self.string(
                raw.get("reg_record_type"),
                &format!("{key}.reg_record_type"),
            )?,
            members,
            identifiers,
            attributes,
            template,
            // Known once every entity is read (a member entity's register): `Mapping::parse`.
            child_registers: Vec::new(),
        })
    }

    fn attribute(
        &self,
        name: &str,
        spec: &Yaml,
        def: &RegisterDef,
        codes: &Codes,
        key: &str,
    ) -> Result<Attribute, MappingError> {
        let spec = self.map(spec, key)?;
        self.only_keys(
            spec,
            key,
            &[
                "field", "record", "parent", "child", "codes", "element", "key", "sortable",
            ],
        )?;
        let sortable = match spec.get("sortable") {
            None => true,
            Some(Yaml::Bool(flag)) => *flag,
            Some(_) => return Err(self.fail(&format!("{key}.sortable"), "must be true or false")),
        };
        let text = |name: &str| {
            spec.get(name)
                .map(|v| self.string(Some(v), &format!("{key}.{name}")))
                .transpose()
        };
        let field_ref = |register: &RegisterDef,
                         field_name: &str|
         -> Result<(FieldDef, FieldRef), MappingError> {
            let field = register.field(field_name).ok_or_else(|| {
                self.fail(
                    &format!("{key}.field"),
                    format!("register `{}` has no field `{field_name}`", register.name),
                )
            })?;
            let element = match (spec.get("element"), text("key")?) {
                (None, None) => None,
                (Some(Yaml::Number(n)), Some(member)) => Some((
                    n.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            self.fail(&format!("{key}.element"), "must be a small whole number")
                        })?,
                    member,
                )),
                _ => {
                    return Err(self.fail(
                        key,
                        "`element` (a list index) and `key` (a member name) go together",
                    ));
                }
            };
            let reference = match &element {
                None => {
                    if !field.indexed {
                        return Err(self.fail(
                            &format!("{key}.field"),
                            format!(
                                "field `{}` of register `{}` has no database index (mark it `indexed` in {}) and cannot be searched",
                                field.name,
                                register.name,
                                register.source.display()
                            ),
                        ));
                    }
                    FieldRef::field(field)
                }
                Some((index, member)) => FieldRef::element(field, *index, member),
            }
            .ok_or_else(|| {
                self.fail(
                    &format!("{key}.field"),
                    format!("field `{}` ({}) cannot be compared", field.name, field.ty.name()),
                )
            })?;
            Ok((field.clone(), reference))
        };
        let codes = match text("codes")? {
            None => None,
            Some(list) => Some(codes.get(&list).cloned().ok_or_else(|| {
                self.fail(&format!("{key}.codes"), format!("no code list `{list}`"))
            })?),
        };
        let (target, field) = match (
            text("field")?,
            text("record")?,
            text("parent")?,
            text("child")?,
        ) {
            (Some(field_name), None, None, None) => {
                let (field, reference) = field_ref(def, &field_name)?;
                (Target::Field(reference), Some(field))
            }
            (None, Some(record), None, None) if record == "functional_id" => {
                (Target::FunctionalId, None)
            }
            (None, None, Some(parent), None) if parent == "functional_id" => {
                (Target::ParentFunctionalId, None)
            }
            (Some(field_name), None, None, Some(child)) => {
                let child_def = self.register(&child, &format!("{key}.child"))?;
                if !child_def.parents.contains(&def.name) {
                    return Err(self.fail(
                        &format!("{key}.child"),
                        format!("register `{child}` is not a child of `{}`", def.name),
                    ));
                }
                let (field, reference) = field_ref(child_def, &field_name)?;
                (
                    Target::Child {
                        register: child,
                        field: reference,
                    },
                    Some(field),
                )
            }
            _ => {
                return Err(self.fail(
                    key,
                    "give `field: F`, `record: functional_id`, `parent: functional_id`, or `child: R` with `field: F`",
                ));
            }
        };
        if let (Some(list), Some(field)) = (&codes, &field) {
            self.check_codes(list, field, &format!("{key}.codes"))?;
        }
        Ok(Attribute {
            name: name.to_owned(),
            target,
            field,
            codes,
            sortable,
        })
    }

    /// A code list's register values must be the field's enum values.
    fn check_codes(
        &self,
        list: &CodeList,
        field: &FieldDef,
        key: &str,
    ) -> Result<(), MappingError> {
        if field.values.is_empty() {
            return Err(self.fail(key, format!("field `{}` is not an enum", field.name)));
        }
        if let Some((value, _)) = list.codes.iter().find(|(v, _)| !field.values.contains(v)) {
            return Err(self.fail(
                key,
                format!(
                    "code list `{}` names `{value}`, which is not a value of `{}`",
                    list.name, field.name
                ),
            ));
        }
        Ok(())
    }

    fn template(
        &self,
        raw: &Yaml,
        def: &RegisterDef,
        codes: &Codes,
        has_members: bool,
        key: &str,
    ) -> Result<Template, MappingError> {
        match raw {
            Yaml::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    self.template(item, def, codes, has_members, &format!("{key}[{i}]"))
                })
                .collect::<Result<_, _>>()
                .map(Template::List),
            Yaml::Mapping(map) => {
                let directive = map
                    .keys()
                    .filter_map(Yaml::as_str)
                    .any(|k| k.starts_with('$'));
                if directive {
                    return self.directive(map, def, codes, has_members, key);
                }
                let mut properties = Vec::new();
                for (name, value) in map {
                    let name = name
                        .as_str()
                        .ok_or_else(|| self.fail(key, "property names are strings"))?;
                    let property =
                        self.template(value, def, codes, has_members, &format!("{key}.{name}"))?;
                    properties.push((name.to_owned(), property));
                }
                Ok(Template::Object(properties))
            }
            other => yaml_to_json(other)
                .map(Template::Literal)
                .ok_or_else(|| self.fail(key, "not a JSON value")),
        }
    }

    fn directive(
        &self,
        map: &serde_yaml::Mapping,
        def: &RegisterDef,
        codes: &Codes,
        has_members: bool,
        key: &str,
    ) -> Result<Template, MappingError> {
        self.only_keys(
            map,
            key,
            &[
                "$field", "$codes", "$each", "$prefix", "$record", "$parent", "$rows", "$latest",
                "$head", "$members",
            ],
        )?;
        let text = |name: &str| {
            map.get(name)
                .map(|v| self.string(Some(v), &format!("{key}.{name}")))
                .transpose()
        };
        let prefix = text("$prefix")?;
        if let Some(field_name) = text("$field")? {
            let field = def.field(&field_name).ok_or_else(|| {
                self.fail(
                    &format!("{key}.$field"),
                    format!("register `{}` has no field `{field_name}`", def.name),
                )
            })?;
            let list = match text("$codes")? {
                None => None,
                Some(list) => {
                    let list = codes.get(&list).cloned().ok_or_else(|| {
                        self.fail(&format!("{key}.$codes"), format!("no code list `{list}`"))
                    })?;
                    self.check_codes(&list, field, &format!("{key}.$codes"))?;
                    Some(list)
                }
            };
            let each = text("$each")?;
            if each.is_some()
                && !(field.ty == FieldType::List && field.items == Some(FieldType::Object))
            {
                return Err(self.fail(
                    &format!("{key}.$each"),
                    format!("field `{field_name}` is not a list of objects"),
                ));
            }
            return Ok(Template::Field {
                name: field_name,
                codes: list,
                each,
                prefix,
            });
        }
        if let Some(attr) = text("$record")? {
            let attr = match attr.as_str() {
                "functional_id" => RecordAttr::FunctionalId,
                "id" => RecordAttr::Id,
                "status" => RecordAttr::Status,
                "version" => RecordAttr::Version,
                "valid_from" => RecordAttr::ValidFrom,
                other => {
                    return Err(self.fail(
                        &format!("{key}.$record"),
                        format!(
                            "`{other}` is not one of functional_id, id, status, version, valid_from"
                        ),
                    ));
                }
            };
            return Ok(Template::Record { attr, prefix });
        }
        if let Some(parent) = text("$parent")? {
            if parent != "functional_id" || def.parents.is_empty() {
                return Err(self.fail(
                    &format!("{key}.$parent"),
                    "only `functional_id`, in a register that has parents",
                ));
            }
            return Ok(Template::Parent { prefix });
        }
        for name in ["$rows", "$latest"] {
            let Some(raw) = map.get(name) else { continue };
            let sub_key = format!("{key}.{name}");
            let spec = self.map(raw, &sub_key)?;
            self.only_keys(spec, &sub_key, &["register", "by", "item"])?;
            let register = self.string(spec.get("register"), &format!("{sub_key}.register"))?;
            let child = self.register(&register, &format!("{sub_key}.register"))?;
            if !child.parents.contains(&def.name) {
                return Err(self.fail(
                    &format!("{sub_key}.register"),
                    format!("register `{register}` is not a child of `{}`", def.name),
                ));
            }
            let item = self.template(
                spec.get("item")
                    .ok_or_else(|| self.fail(&format!("{sub_key}.item"), "is required"))?,
                child,
                codes,
                false,
                &format!("{sub_key}.item"),
            )?;
            if name == "$rows" {
                return Ok(Template::Rows {
                    register,
                    item: Box::new(item),
                });
            }
            let by = self.string(spec.get("by"), &format!("{sub_key}.by"))?;
            if child.field(&by).is_none() {
                return Err(self.fail(
                    &format!("{sub_key}.by"),
                    format!("register `{register}` has no field `{by}`"),
                ));
            }
            return Ok(Template::Latest {
                register,
                by,
                item: Box::new(item),
            });
        }
        if let Some(field) = text("$head")? {
            if !has_members || def.field(&field).is_none() {
                return Err(self.fail(
                    &format!("{key}.$head"),
                    format!(
                        "needs `members:` on the entity and a field `{field}` of `{}`",
                        def.name
                    ),
                ));
            }
            return Ok(Template::Head { field });
        }
        if map.contains_key("$members") {
            if !has_members {
                return Err(self.fail(&format!("{key}.$members"), "needs `members:` on the entity"));
            }
            return Ok(Template::Members);
        }
        Err(self.fail(
            key,
            "`$codes`, `$each` and `$prefix` go with `$field` (or `$record`, `$parent`)",
        ))
    }

    fn register(&self, name: &str, key: &str) -> Result<&RegisterDef, MappingError> {
        self.registers
            .get(name)
            .ok_or_else(|| self.fail(key, format!("no register `{name}`")))
    }

    fn map<'y>(&self, value: &'y Yaml, key: &str) -> Result<&'y serde_yaml::Mapping, MappingError> {
        value
            .as_mapping()
            .ok_or_else(|| self.fail(key, "must be a map"))
    }

    fn string(&self, value: Option<&Yaml>, key: &str) -> Result<String, MappingError> {
        match value {
            Some(Yaml::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(_) => Err(self.fail(key, "must be a non-empty string")),
            None => Err(self.fail(key, "is required")),
        }
    }

    fn key_name(&self, value: &Yaml, key: &str) -> Result<String, MappingError> {
        match value {
            Yaml::String(text) => Ok(text.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            Yaml::Bool(b) => Ok(b.to_string()),
            _ => Err(self.fail(key, "keys must be strings")),
        }
    }

    fn only_keys(
        &self,
        map: &serde_yaml::Mapping,
        key: &str,
        allowed: &[&str],
    ) -> Result<(), MappingError> {
        for name in map.keys() {
            let name = name.as_str().unwrap_or("?");
            if !allowed.contains(&name) {
                return Err(self.fail(
                    &format!("{key}.{name}"),
                    format!("unknown key (known: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// The key under which [`Mapping::render_marked`] notes, in each record object it renders (a
/// record, and each member inside a Group), which registry record it is. Never sent: the
/// release step reads and removes every one before a reply is sealed.
pub const MARKER: &str = "@nsr-record";

/// The property paths a rendered record of one entity may hold, from its template: what the
/// release step keeps of a wire object (everything else is dropped).
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A value from the record: a scalar, or a list of scalars.
    Value,
    /// A constant of the template: kept only when equal.
    Const(Value),
    /// An object: only these properties; a constant that differs means the object is not
    /// this one (dropped whole).
    Object(BTreeMap<String, Shape>),
    /// A list of the template's own items (e.g. identifiers of different sources, told apart
    /// by their constants): an item is kept only when it fits one of them exactly.
    List(Vec<Shape>),
    /// A list of rows or members: each item is cut to this shape.
    Each(Box<Shape>),
}

impl Shape {
    /// What of `value` this shape allows; `None` when nothing (fail closed: anything the
    /// shape does not name is dropped). Takes the value, so what is kept is moved, not copied.
    pub fn retain(&self, value: Value) -> Option<Value> {
        match (self, value) {
            (Shape::Value, Value::Array(items)) => {
                let scalars: Vec<Value> = items.into_iter().filter(is_scalar).collect();
                (!scalars.is_empty()).then_some(Value::Array(scalars))
            }
            (Shape::Value, Value::Object(_) | Value::Null) => None,
            (Shape::Value, scalar) => Some(scalar),
            (Shape::Const(expected), value) => (*expected == value).then_some(value),
            (Shape::Object(properties), Value::Object(object)) => {
                if Self::mismatched(properties, &object) {
                    return None;
                }
                let mut out = Map::new();
                for (name, property) in object {
                    if name == MARKER {
                        // The release step's own note of which record this is; it reads and
                        // removes it before sealing.
                        out.insert(name, property);
                    } else if let Some(kept) =
                        properties.get(&name).and_then(|s| s.retain(property))
                    {
                        out.insert(name, kept);
                    }
                }
                let data = out.keys().any(|k| !k.starts_with('@'));
                data.then_some(Value::Object(out))
            }
            (Shape::List(alternatives), Value::Array(items)) => {
                let kept: Vec<Value> = items
                    .into_iter()
                    .filter(|item| alternatives.iter().any(|alt| alt.fits(item)))
                    .collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            (Shape::Each(shape), Value::Array(items)) => {
                let kept: Vec<Value> = items
                    .into_iter()
                    .filter_map(|item| shape.retain(item))
                    .collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            _ => None,
        }
    }

    /// Whether this shape keeps all of `value`: `retain(value)` would give `value` back
    /// unchanged. Decided without building anything.
    pub fn fits(&self, value: &Value) -> bool {
        match (self, value) {
            (Shape::Value, Value::Array(items)) => !items.is_empty() && items.iter().all(is_scalar),
            (Shape::Value, Value::Object(_) | Value::Null) => false,
            (Shape::Value, _) => true,
            (Shape::Const(expected), value) => expected == value,
            (Shape::Object(properties), Value::Object(object)) => {
                !Self::mismatched(properties, object)
                    && object.iter().all(|(name, property)| {
                        name == MARKER || properties.get(name).is_some_and(|s| s.fits(property))
                    })
                    && object.keys().any(|k| !k.starts_with('@'))
            }
            (Shape::List(alternatives), Value::Array(items)) => {
                !items.is_empty()
                    && items
                        .iter()
                        .all(|item| alternatives.iter().any(|alt| alt.fits(item)))
            }
            (Shape::Each(shape), Value::Array(items)) => {
                !items.is_empty() && items.iter().all(|item| shape.fits(item))
            }
            _ => false,
        }
    }

    /// A constant of the shape that the object holds with another value: the object is not
    /// this one.
    fn mismatched(properties: &BTreeMap<String, Shape>, object: &Map<String, Value>) -> bool {
        properties.iter().any(|(name, shape)| {
            matches!(shape, Shape::Const(expected)
                if object.get(name).is_some_and(|v| v != expected))
        })
    }
}

/// A value a [`Shape::Value`] list keeps: neither an object, a list nor null.
fn is_scalar(value: &Value) -> bool {
    !(value.is_object() || value.is_array() || value.is_null())
}

/// What a consent grant lets an entity's records carry: `reads(register)` says whether the
/// register may be read at all; `allows(register, field)` whether a field (or a record
/// attribute: `$functional_id`, `$uuid`, `$status`, `$version`, `$valid_from`, `$parent`)
/// may be sent.
pub trait FieldGate {
    fn reads(&self, register: &str) -> bool;
    fn allows(&self, register: &str, field: &str) -> bool;
}

fn record_attr_name(attr: RecordAttr) -> &'static str {
    match attr {
        RecordAttr::FunctionalId => "$functional_id",
        RecordAttr::Id => "$uuid",
        RecordAttr::Status => "$status",
        RecordAttr::Version => "$version",
        RecordAttr::ValidFrom => "$valid_from",
    }
}

impl Mapping {
    /// A copy of the mapping that renders only what `gate` allows and searches only on
    /// attributes whose fields it allows. Entities of registers it does not read are left
    /// out. A property whose source is not allowed is removed from the template; an object
    /// or list left with nothing drawn from the record is removed too (its constants alone
    /// say nothing).
    pub fn restricted(&self, gate: &dyn FieldGate) -> Mapping {
        let mut entities = BTreeMap::new();
        // Member entities first: a Group's members render as them.
        let mut names: Vec<&String> = self.entities.keys().collect();
        names.sort_by_key(|n| self.entities.get(*n).is_some_and(|e| e.members.is_some()));
        for name in names {
            let Some(entity) = self.entities.get(name) else {
                continue;
            };
            if !gate.reads(&entity.register) {
                continue;
            }
            let members_ok = entity
                .members
                .as_deref()
                .is_some_and(|m| entities.contains_key(m));
            let Some(template) = prune(&entity.template, &entity.register, gate, members_ok) else {
                continue;
            };
            let members_register = entity
                .members
                .as_deref()
                .and_then(|m| entities.get(m))
                .map(|member: &Entity| member.register.clone());
            let attributes: BTreeMap<String, Attribute> = entity
                .attributes
                .iter()
                .filter(|(_, a)| attribute_allowed(a, &entity.register, gate))
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect();
            let identifiers = entity
                .identifiers
                .iter()
                .filter(|(_, a)| attributes.contains_key(a))
                .cloned()
                .collect();
            entities.insert(
                name.clone(),
                Entity {
                    name: entity.name.clone(),
                    register: entity.register.clone(),
                    reg_record_type: entity.reg_record_type.clone(),
                    members: entity.members.clone().filter(|_| members_ok),
                    identifiers,
                    attributes,
                    child_registers: child_registers(&template, members_register.as_deref()),
                    template,
                },
            );
        }
        Mapping {
            reg_type: self.reg_type.clone(),
            context: self.context.clone(),
            entities,
        }
    }

    /// The shape of a rendered record of `entity` (with its `@context`).
    pub fn shape(&self, entity: &str) -> Option<Shape> {
        let entity = self.entities.get(entity)?;
        let mut shape = self.template_shape(entity, &entity.template);
        if let Shape::Object(properties) = &mut shape {
            properties.insert("@context".into(), Shape::Const(self.context.clone()));
        }
        Some(shape)
    }

    fn template_shape(&self, entity: &Entity, template: &Template) -> Shape {
        let member = || {
            entity
                .members
                .as_deref()
                .and_then(|m| self.entities.get(m))
                .map_or(Shape::Object(BTreeMap::new()), |m| {
                    self.template_shape(m, &m.template)
                })
        };
        match template {
            Template::Literal(value) => Shape::Const(value.clone()),
            Template::Object(properties) => Shape::Object(
                properties
                    .iter()
                    .map(|(n, t)| (n.clone(), self.template_shape(entity, t)))
                    .collect(),
            ),
            Template::List(items) => Shape::List(
                items
                    .iter()
                    .map(|t| self.template_shape(entity, t))
                    .collect(),
            ),
            Template::Field { .. } | Template::Record { .. } | Template::Parent { .. } => {
                Shape::Value
            }
            Template::Rows { item, .. } => Shape::Each(Box::new(self.template_shape(entity, item))),
            Template::Latest { item, .. } => self.template_shape(entity, item),
            Template::Head { .. } => member(),
            Template::Members => Shape::Each(Box::new(member())),
        }
    }
}

fn attribute_allowed(attribute: &Attribute, register: &str, gate: &dyn FieldGate) -> bool {
    match &attribute.target {
        Target::FunctionalId => gate.allows(register, "$functional_id"),
        Target::ParentFunctionalId => gate.allows(register, "$parent"),
        Target::Status => gate.allows(register, "$status"),
        Target::Field(field) => gate.allows(register, field.name()),
        Target::Child { register, field } => gate.allows(register, field.name()),
    }
}

/// `template` (of a record of `register`) without what `gate` does not allow; `None` when
/// nothing drawn from the record is left.
fn prune(
    template: &Template,
    register: &str,
    gate: &dyn FieldGate,
    members_ok: bool,
) -> Option<Template> {
    let from_record = |t: &Template| !matches!(t, Template::Literal(_));
    match template {
        Template::Literal(_) => Some(template.clone()),
        Template::Object(properties) => {
            let had_data = properties.iter().any(|(_, t)| from_record(t));
            let kept: Vec<(String, Template)> = properties
                .iter()
                .filter_map(|(n, t)| prune(t, register, gate, members_ok).map(|t| (n.clone(), t)))
                .collect();
            let has_data = kept.iter().any(|(_, t)| from_record(t));
            (has_data || !had_data).then_some(Template::Object(kept))
        }
        Template::List(items) => {
            let kept: Vec<Template> = items
                .iter()
                .filter(|t| from_record(t))
                .filter_map(|t| prune(t, register, gate, members_ok))
                .collect();
            let had_data = items.iter().any(from_record);
            if had_data {
                (!kept.is_empty()).then_some(Template::List(kept))
            } else {
                Some(template.clone())
            }
        }
        Template::Field { name, .. } => gate.allows(register, name).then(|| template.clone()),
        Template::Record { attr, .. } => gate
            .allows(register, record_attr_name(*attr))
            .then(|| template.clone()),
        Template::Parent { .. } => gate.allows(register, "$parent").then(|| template.clone()),
        Template::Rows {
            register: rows,
            item,
        } => {
            let item = prune(item, rows, gate, members_ok)?;
            Some(Template::Rows {
                register: rows.clone(),
                item: Box::new(item),
            })
        }
        Template::Latest {
            register: rows,
            by,
            item,
        } => {
            let item = prune(item, rows, gate, members_ok)?;
            Some(Template::Latest {
                register: rows.clone(),
                by: by.clone(),
                item: Box::new(item),
            })
        }
        Template::Head { field } => {
            (members_ok && gate.allows(register, field)).then(|| template.clone())
        }
        Template::Members => members_ok.then(|| template.clone()),
    }
}

fn yaml_to_json(value: &Yaml) -> Option<Value> {
    serde_json::to_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shape_fits_exactly_what_it_keeps_whole() {
        use serde_json::json;
        let identifier = |source: &str| {
            Shape::Object(BTreeMap::from([
                ("@type".to_owned(), Shape::Const(json!("Identifier"))),
                ("identifier_type".to_owned(), Shape::Const(json!(source))),
                ("identifier_value".to_owned(), Shape::Value),
            ]))
        };
        let shape = Shape::Object(BTreeMap::from([
            ("@type".to_owned(), Shape::Const(json!("Member"))),
            ("name".to_owned(), Shape::Value),
            ("phones".to_owned(), Shape::Value),
            (
                "ids".to_owned(),
                Shape::List(vec![identifier("NSR_ID"), identifier("UIN")]),
            ),
            (
                "rows".to_owned(),
                Shape::Each(Box::new(Shape::Object(BTreeMap::from([(
                    "kind".to_owned(),
                    Shape::Value,
                )])))),
            ),
        ]));
        let id = |source: &str| json!({"@type": "Identifier", "identifier_type": source, "identifier_value": "1"});
        let whole = json!({
            "@type": "Member", MARKER: {"id": "x"}, "name": "Ada", "phones": ["1", "2"],
            "ids": [id("NSR_ID"), id("UIN")], "rows": [{"kind": "a"}, {"kind": "b"}],
        });
        let mut values = vec![whole.clone()];
        for (pointer, replacement) in [
            ("/@type", json!("Group")),
            ("/name", json!({"given": "Ada"})),
            ("/name", Value::Null),
            ("/phones", json!(["1", null])),
            ("/phones", json!([])),
            ("/phones", json!([["1"]])),
            ("/ids/1", id("PASSPORT")),
            ("/ids/1/extra", json!(1)),
            ("/rows/1", json!({"kind": "b", "secret": 1})),
            ("/rows/1", json!({"secret": 1})),
            ("/rows", json!([])),
            ("/extra", json!("dropped")),
        ] {
            let mut changed = whole.clone();
            match changed.pointer_mut(pointer) {
                Some(slot) => *slot = replacement,
                None => {
                    let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
                    if let Some(Value::Object(object)) = changed.pointer_mut(parent) {
                        object.insert(key.to_owned(), replacement);
                    }
                }
            }
            assert_ne!(changed, whole, "{pointer}");
            values.push(changed);
        }
        values.push(json!({"@type": "Member", MARKER: {"id": "x"}}));
        values.push(json!("Ada"));
        for value in &values {
            let kept = shape.retain(value.clone());
            assert_eq!(shape.fits(value), kept.as_ref() == Some(value), "{value}");
        }
        // Every change above makes the value one the shape cuts.
        let fitting: Vec<&Value> = values.iter().filter(|v| shape.fits(v)).collect();
        assert_eq!(fitting, [&whole]);
    }

    fn registers() -> Registers {
        Registers::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/registers")).unwrap()
    }

    fn shipped() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/dci-social.yaml"),
        )
        .unwrap()
    }

    fn error(text: &str) -> String {
        Mapping::parse(Path::new("mappings/dci-social.yaml"), text, &registers())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_shipped_mapping_loads_with_both_entities() {
        let mapping =
            Mapping::parse(Path::new("dci-social.yaml"), &shipped(), &registers()).unwrap();
        let member = mapping.entity("Member").unwrap();
        assert_eq!(member.register, "individual");
        assert!(member.identifier("uin").is_some(), "case-insensitive types");
        assert!(matches!(
            member.attribute("national_id").unwrap().target,
            Target::Field(_)
        ));
        assert_eq!(
            mapping.entity("Group").unwrap().members.as_deref(),
            Some("Member")
        );
        assert_eq!(mapping.query_indexes().len(), 1, "the phone number element");
    }

    #[test]
    fn problems_name_the_file_and_the_key() {
        let text = shipped();
        let err = error(&text.replace(
            "surname: {$field: last_name}",
            "surname: {$field: lastname}",
        ));
        assert!(
            err.starts_with("mappings/dci-social.yaml: entities.Member.record.demographic_info.name.surname.$field:"),
            "{err}"
        );
        assert!(err.contains("no field `lastname`"), "{err}");
        let err = error(&text.replace("register: individual", "register: person"));
        assert!(
            err.contains("entities.Member.register: no register `person`"),
            "{err}"
        );
        // A field without a database index cannot be made searchable.
        let err = error(&text.replace(
            "national_id: {field: foundational_id}",
            "national_id: {field: occupation}",
        ));
        assert!(
            err.contains("entities.Member.attributes.national_id.field")
                && err.contains("no database index"),
            "{err}"
        );
        let err = error(&text.replace(
            "sex: {$field: gender, $codes: sex}",
            "sex: {$field: gender, $codes: gender}",
        ));
        assert!(err.contains("no code list `gender`"), "{err}");
        let err = error(&text.replace("    MALE: male\n", "    MAN: male\n"));
        assert!(
            err.contains("`MAN`, which is not a value of `gender`"),
            "{err}"
        );
        let err = error(&text.replace("reg_type:", "registry_type:"));
        assert!(err.contains("-.registry_type: unknown key"), "{err}");
    }

    #[test]
    fn a_search_reads_only_the_children_its_entity_renders() {
        let mapping =
            Mapping::parse(Path::new("dci-social.yaml"), &shipped(), &registers()).unwrap();
        // Consent rows and the rest are children of individuals too, but no template reads them.
        assert_eq!(
            mapping.entity("Member").unwrap().child_registers(),
            ["disability"]
        );
        assert_eq!(
            mapping.entity("Group").unwrap().child_registers(),
            ["individual", "poverty_score"]
        );
        // A policy that cuts the disability rows and the poverty score cuts their reads.
        let restricted = mapping.restricted(&Names);
        let member = restricted.entity("Member").unwrap();
        assert!(!member.needs_children(), "{:?}", member.child_registers());
        assert_eq!(
            restricted.entity("Group").unwrap().child_registers(),
            ["individual"]
        );
    }

    /// Grants only first and last name, the record id and members.
    struct Names;

    impl FieldGate for Names {
        fn reads(&self, register: &str) -> bool {
            register == "individual" || register == "household"
        }
        fn allows(&self, register: &str, field: &str) -> bool {
            match register {
                "individual" => ["first_name", "last_name", "$functional_id"].contains(&field),
                "household" => field == "$functional_id",
                _ => false,
            }
        }
    }

    #[test]
    fn a_restricted_shape_drops_what_it_does_not_name_at_any_depth() {
        let mapping =
            Mapping::parse(Path::new("dci-social.yaml"), &shipped(), &registers()).unwrap();
        let restricted = mapping.restricted(&Names);
        let group = restricted.shape("Group").unwrap();
        let sent = serde_json::json!({
            "@type": "spdci:Group",
            "@id": "urn:nsr:HH-1",
            "group_size": 4,
            "secret": "x",
            "member_list": [{
                "@type": "spdci:Member",
                "@id": "urn:nsr:IND-1",
                "demographic_info": {
                    "@type": "SRPerson",
                    "name": {"@type": "Name", "given_name": "Ada", "surname": "Okafor", "prefix": "Dr"},
                    "birth_date": "1990-01-01",
                },
                "member_identifier": [
                    {"@type": "Identifier", "identifier_type": "NSR_ID", "identifier_value": "IND-1"},
                    {"@type": "Identifier", "identifier_type": "UIN", "identifier_value": "FID-1"},
                ],
                "nsr:occupation": "Weaver",
            }],
        });
        assert!(!group.fits(&sent));
        let kept = group.retain(sent).unwrap();
        assert!(group.fits(&kept));
        assert_eq!(
            kept,
            serde_json::json!({
                "@type": "spdci:Group",
                "@id": "urn:nsr:HH-1",
                "member_list": [{
                    "@type": "spdci:Member",
                    "@id": "urn:nsr:IND-1",
                    "demographic_info": {
                        "@type": "SRPerson",
                        "name": {"@type": "Name", "given_name": "Ada", "surname": "Okafor"},
                    },
                    "member_identifier": [
                        {"@type": "Identifier", "identifier_type": "NSR_ID", "identifier_value": "IND-1"},
                    ],
                }],
            })
        );
        // Searching is limited the same way: no attribute on an ungranted field.
        let member = restricted.entity("Member").unwrap();
        assert!(member.attribute("member_id").is_some());
        assert!(member.attribute("national_id").is_none());
        assert!(member.identifier("UIN").is_none());
    }
}
