//! Consent policies as data (`consent-policies/*.yaml`, format in `consent-policies/README.md`):
//! for a group of partners and a set of purposes, the registers and fields they may receive,
//! the query types they may use, whether registrant consent is required (and which
//! `consent_scope` values satisfy it) or the documented legal basis that stands in for it, and
//! the largest page. Every file is checked against the register definitions at start; a
//! problem stops nsr naming the file and the line.
//!
//! At most one policy may cover a given (partner, purpose): two policies that overlap are a
//! start-up error, so a grant is always exactly one policy and one policy never widens what
//! another allows. No policy for a (partner, purpose) means nothing is shared with it.

use crate::registry::register::Registers;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The DCI query types a policy may allow (`idtype` of the G2P Connect dialect counts as
/// `idtype-value`).
pub const QUERY_TYPES: &[&str] = &["idtype-value", "expression", "predicate"];

/// Record attributes a policy may grant beside register fields: what the mapping's
/// `$record` and `$parent` directives send.
pub const RECORD_ATTRIBUTES: &[&str] = &[
    "$functional_id",
    "$uuid",
    "$status",
    "$version",
    "$valid_from",
    "$parent",
];

/// A policy file that cannot be used: the file, the line (1-based; 0 when unknown) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// How registrant consent figures in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// A current Consent row is required: captured, with one of these scopes, not withdrawn,
    /// not expired.
    Consent { scopes: BTreeSet<String> },
    /// The documented legal basis that stands in for consent (data-sharing restrictions
    /// still apply).
    LegalBasis(String),
}

/// Fields of one register a policy grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldGrant {
    /// Every field of the register and every record attribute (`"*"`).
    All,
    Some(BTreeSet<String>),
}

impl FieldGrant {
    pub fn allows(&self, field: &str) -> bool {
        match self {
            FieldGrant::All => true,
            FieldGrant::Some(fields) => fields.contains(field),
        }
    }
}

/// One checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub file: PathBuf,
    /// SHA-256 (hex) of the file's bytes, for the audit of policy changes.
    pub digest: String,
    pub partners: BTreeSet<String>,
    pub purposes: BTreeSet<String>,
    pub query_types: BTreeSet<String>,
    pub basis: Basis,
    pub max_page_size: u32,
    pub registers: BTreeMap<String, FieldGrant>,
}

impl Policy {
    /// Whether this policy may hand `field` (a register field or a [`RECORD_ATTRIBUTES`]
    /// name) of `register` to its partners.
    pub fn allows_field(&self, register: &str, field: &str) -> bool {
        self.registers
            .get(register)
            .is_some_and(|grant| grant.allows(field))
    }

    pub fn reads_register(&self, register: &str) -> bool {
        self.registers.contains_key(register)
    }

    pub fn allows_query_type(&self, query_type: &str) -> bool {
        let query_type = if query_type == "idtype" {
            "idtype-value"
        } else {
            query_type
        };
        self.query_types.contains(query_type)
    }
}

/// Every policy in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    partners: Vec<String>,
    purposes: Vec<String>,
    query_types: Vec<String>,
    consent: RawConsent,
    max_page_size: u32,
    registers: BTreeMap<String, RawFields>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    required: bool,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    legal_basis: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFields {
    Star(String),
    List(Vec<String>),
}

impl PolicySet {
    /// No policy: nothing is shared with anyone.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Checks policies against each other: at most one per (partner, purpose).
    pub fn new(policies: Vec<Policy>) -> Result<Self, PolicyError> {
        let mut seen: BTreeMap<(String, String), &Policy> = BTreeMap::new();
        for policy in &policies {
            for partner in &policy.partners {
                for purpose in &policy.purposes {
                    if let Some(other) = seen.insert((partner.clone(), purpose.clone()), policy) {
                        return Err(PolicyError {
                            file: policy.file.clone(),
                            line: 0,
                            message: format!(
                                "partner `{partner}` and purpose `{purpose}` are also covered by policy `{}` ({}): at most one policy may cover a partner and purpose",
                                other.name,
                                other.file.display()
                            ),
                        });
                    }
                }
            }
        }
        let mut policies = policies;
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { policies })
    }

    /// Loads every `*.yaml` of `dir`. A folder that does not exist holds no policy (nothing
    /// is shared); one that cannot be read is an error.
    pub fn load_dir(dir: &Path, registers: &Registers) -> Result<Self, PolicyError> {
        let fail = |message: String| PolicyError {
            file: dir.to_path_buf(),
            line: 0,
            message,
        };
        if !dir.exists() {
            return Ok(Self::empty());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("cannot read the consent policies folder: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut policies = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| PolicyError {
                file: file.clone(),
                line: 0,
                message: e.to_string(),
            })?;
            policies.push(parse_policy(&file, &text, registers)?);
        }
        let mut names = BTreeSet::new();
        for policy in &policies {
            if !names.insert(policy.name.clone()) {
                return Err(PolicyError {
                    file: policy.file.clone(),
                    line: line_of_key(&fs_text(&policy.file), &[], "name"),
                    message: format!("another policy is also named `{}`", policy.name),
                });
            }
        }
        Self::new(policies)
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy covering `partner` and `purpose`, if any.
    pub fn grant(&self, partner: &str, purpose: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.partners.contains(partner) && p.purposes.contains(purpose))
    }

    /// `name → digest` of every policy: what the audit of policy changes compares.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.policies
            .iter()
            .map(|p| (p.name.clone(), p.digest.clone()))
            .collect()
    }
}

fn fs_text(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

/// Parses and checks one policy file's text.
pub fn parse_policy(file: &Path, text: &str, registers: &Registers) -> Result<Policy, PolicyError> {
    let fail = |line: usize, message: String| PolicyError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let raw: RawPolicy = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        fail(line, e.to_string())
    })?;
    let _ = raw.description;
    let name = raw.name.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let key_line = |key: &str| line_of_key(text, &[], key);
    if name.trim().is_empty() {
        return Err(fail(key_line("name"), "name must not be empty".into()));
    }
    let non_empty = |values: &[String], key: &str| -> Result<BTreeSet<String>, PolicyError> {
        if values.is_empty() {
            return Err(fail(key_line(key), format!("{key} must list at least one")));
        }
        if let Some(bad) = values
            .iter()
            .find(|v| v.trim().is_empty() || v.contains('*'))
        {
            return Err(fail(
                line_of_item(text, key, bad),
                format!("{key}: `{bad}` is not a name (no wildcards)"),
            ));
        }
        Ok(values.iter().cloned().collect())
    };
    let partners = non_empty(&raw.partners, "partners")?;
    let purposes = non_empty(&raw.purposes, "purposes")?;
    let query_types = non_empty(&raw.query_types, "query_types")?;
    if let Some(bad) = query_types
        .iter()
        .find(|q| !QUERY_TYPES.contains(&q.as_str()))
    {
        return Err(fail(
            line_of_item(text, "query_types", bad),
            format!(
                "query_types: `{bad}` is not one of {}",
                QUERY_TYPES.join(", ")
            ),
        ));
    }
    if raw.max_page_size == 0 {
        return Err(fail(
            key_line("max_page_size"),
            "max_page_size must be at least 1".into(),
        ));
    }
    let consent_line = key_line("consent");
    let basis = match (raw.consent.required, raw.consent.legal_basis) {
        (true, None) => {
            let scopes: BTreeSet<String> = raw.consent.scopes.iter().cloned().collect();
            if scopes.is_empty() || scopes.iter().any(|s| s.trim().is_empty()) {
                return Err(fail(
                    consent_line,
                    "consent.required is true: consent.scopes must list the consent_scope values that satisfy it".into(),
                ));
            }
            Basis::Consent { scopes }
        }
        (false, Some(basis)) if !basis.trim().is_empty() && raw.consent.scopes.is_empty() => {
            Basis::LegalBasis(basis)
        }
        (true, Some(_)) => {
            return Err(fail(
                consent_line,
                "consent: give either required: true with scopes, or required: false with the legal_basis that stands in for consent, not both".into(),
            ));
        }
        _ => {
            return Err(fail(
                consent_line,
                "consent.required is false: consent.legal_basis must document the legal basis that stands in for consent (and scopes must be empty)".into(),
            ));
        }
    };
    if raw.registers.is_empty() {
        return Err(fail(
            key_line("registers"),
            "registers must name at least one register".into(),
        ));
    }
    let mut grants = BTreeMap::new();
    for (register, fields) in raw.registers {
        let Some(def) = registers.get(&register) else {
            return Err(fail(
                line_of_key(text, &["registers"], &register),
                format!("registers: `{register}` is not a register or table"),
            ));
        };
        let grant = match fields {
            RawFields::Star(star) if star == "*" => FieldGrant::All,
            RawFields::Star(other) => {
                return Err(fail(
                    line_of_key(text, &["registers"], &register),
                    format!(
                        "registers.{register}: `{other}`: give a list of fields, or \"*\" for all"
                    ),
                ));
            }
            RawFields::List(list) => {
                if list.is_empty() {
                    return Err(fail(
                        line_of_key(text, &["registers"], &register),
                        format!(
                            "registers.{register}: list at least one field (or leave the register out)"
                        ),
                    ));
                }
                let mut fields = BTreeSet::new();
                for field in list {
                    let known =
                        def.field(&field).is_some() || RECORD_ATTRIBUTES.contains(&field.as_str());
                    if !known {
                        return Err(fail(
                            line_of_item_in(text, Some("registers"), &register, &field),
                            format!(
                                "registers.{register}: `{field}` is not a field of {register} (nor one of {})",
                                RECORD_ATTRIBUTES.join(", ")
                            ),
                        ));
                    }
                    fields.insert(field);
                }
                FieldGrant::Some(fields)
            }
        };
        grants.insert(register, grant);
    }
    Ok(Policy {
        name,
        file: file.to_path_buf(),
        digest: hex::encode(Sha256::digest(text.as_bytes())),
        partners,
        purposes,
        query_types,
        basis,
        max_page_size: raw.max_page_size,
        registers: grants,
    })
}

/// The 1-based line of `key:` (nested under each of `parents` in turn, by indentation-free
/// search after the parent's line); 0 if not found.
fn line_of_key(text: &str, parents: &[&str], key: &str) -> usize {
    let mut from = 0;
    let mut top = true;
    for parent in parents {
        match find_key(text, from, parent, top) {
            Some(line) => from = line,
            None => return 0,
        }
        top = false;
    }
    find_key(text, from, key, top).map_or(0, |l| l + 1)
}

/// Index (0-based) of the first line at or after `from` whose content starts with `key:`
/// (or `"key":` / `- key:`); with `top`, only unindented lines (top-level keys).
fn find_key(text: &str, from: usize, key: &str, top: bool) -> Option<usize> {
    text.lines().enumerate().skip(from).find_map(|(i, line)| {
        if top && line.starts_with(char::is_whitespace) {
            return None;
        }
        let trimmed = line.trim_start().trim_start_matches("- ");
        let bare = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| trimmed.strip_prefix(&format!("'{key}'")));
        bare.filter(|rest| rest.trim_start().starts_with(':'))
            .map(|_| i)
    })
}

/// The 1-based line where `item` appears as a word after the line of `key:`; 0 if not found.
fn line_of_item(text: &str, key: &str, item: &str) -> usize {
    line_of_item_in(text, None, key, item)
}

/// [`line_of_item`] for a list under `parent:` (a register's fields under `registers:`).
fn line_of_item_in(text: &str, parent: Option<&str>, key: &str, item: &str) -> usize {
    let (from, top) = match parent {
        None => (0, true),
        Some(parent) => match find_key(text, 0, parent, true) {
            Some(line) => (line, false),
            None => return 0,
        },
    };
    let Some(start) = find_key(text, from, key, top) else {
        return 0;
    };
    text.lines()
        .enumerate()
        .skip(start)
        .find(|(_, line)| {
            let content = line.split('#').next().unwrap_or_default();
            content
                .split(|c: char| !(c.is_alphanumeric() || "_-.$*".contains(c)))
                .any(|word| word == item)
        })
        .map_or(start + 1, |(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers() -> Registers {
        Registers::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/registers"))
            .expect("registers")
    }

    const GOOD: &str = "\
partners: [spmis.example.org]
purposes: [social_protection]
query_types: [idtype-value]
consent:
  required: true
  scopes: [dci_sharing]
max_page_size: 10
registers:
  individual: [first_name, last_name, $functional_id]
";

    fn error(text: &str) -> PolicyError {
        parse_policy(Path::new("p.yaml"), text, &registers()).expect_err("refused")
    }

    #[test]
    fn a_good_policy_parses() {
        let policy = parse_policy(Path::new("p.yaml"), GOOD, &registers()).expect("parses");
        assert_eq!(policy.name, "p");
        assert!(policy.allows_field("individual", "first_name"));
        assert!(!policy.allows_field("individual", "foundational_id"));
        assert!(!policy.allows_field("household", "size_total"));
        assert!(policy.allows_query_type("idtype"));
        assert!(!policy.allows_query_type("expression"));
    }

    #[test]
    fn an_unknown_field_names_its_line() {
        let e = error(&GOOD.replace("last_name,", "last_nam,"));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.message.contains("last_nam"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:9: "), "{e}");
    }

    #[test]
    fn a_field_of_a_register_named_like_a_top_level_key_is_found_under_registers() {
        let e = error(&format!("{GOOD}  consent: [consent_captured, scopes]\n"));
        assert_eq!(e.line, 10, "{e}");
        assert!(
            e.message.contains("`scopes` is not a field of consent"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_register_names_its_line() {
        let e = error(&format!("{GOOD}  housing: [size_total]\n"));
        assert_eq!(e.line, 10, "{e}");
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let e = error(&GOOD.replace(
            "max_page_size: 10",
            "max_page_size: 10\nshare_everything: true",
        ));
        assert_eq!(e.line, 8, "{e}");
    }

    #[test]
    fn no_consent_needs_a_legal_basis() {
        let e = error(&GOOD.replace("required: true", "required: false"));
        assert_eq!(e.line, 4, "{e}");
        let text = GOOD.replace(
            "  required: true\n  scopes: [dci_sharing]",
            "  required: false\n  legal_basis: Social Assistance Act s. 12",
        );
        let policy = parse_policy(Path::new("p.yaml"), &text, &registers()).expect("parses");
        assert_eq!(
            policy.basis,
            Basis::LegalBasis("Social Assistance Act s. 12".into())
        );
    }

    #[test]
    fn overlapping_policies_are_refused() {
        let a = parse_policy(Path::new("a.yaml"), GOOD, &registers()).expect("a");
        let b = parse_policy(Path::new("b.yaml"), GOOD, &registers()).expect("b");
        let e = PolicySet::new(vec![a, b]).expect_err("overlap");
        assert!(e.message.contains("at most one policy"), "{e}");
    }
}
