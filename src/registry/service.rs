//! Registry use cases: validate drafts and turn them into change sets, read records with their
//! household, members and supporting rows (now, as of an instant, or by label), history, labels
//! and audit verification.

use super::audit::{
    ANCHOR_ACTION, AuditChain, AuditDraft, AuditEntry, ChainBreak, ChainVerifier, anchor_of,
};
use super::change_set::{
    ChangeLogEntry, ChangeSet, FieldChange, PARENT_FIELD, RecordWrite, STATUS_FIELD,
};
use super::ids;
use super::record::{
    Fields, Problem, ProblemCode, Record, RecordStatus, format_cell, validate_fields, without_nulls,
};
use super::register::{Kind, RegisterDef, Registers};
use crate::clock::Clock;
use crate::store::{At, Store, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// Entry point to the registry's use cases.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    registers: Arc<Registers>,
    clock: Arc<dyn Clock>,
    /// Change-request sources applied without a second person (see `change_request.rs`).
    auto_approve: Arc<Vec<String>>,
}

/// Who writes, from where and why; recorded on the change set and in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub actor: String,
    pub source: String,
    pub reason: Option<String>,
}

/// How a draft's fields apply to an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftMode {
    /// The fields are the record's whole content (a CSV row, a new record).
    Replace,
    /// The fields are merged into the current ones; a `null` removes a field. The record must
    /// exist.
    Patch,
}

/// A proposed write to one record, before validation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Draft {
    pub register: String,
    /// Given for updates and for supporting rows; generated for new individuals and households.
    pub functional_id: Option<String>,
    /// The parent's functional id. With [`DraftMode::Patch`], `None` keeps the current parent.
    pub parent: Option<String>,
    /// `None` keeps the current status (ACTIVE for a new record).
    pub status: Option<RecordStatus>,
    pub fields: Fields,
    pub mode: DraftMode,
}

/// Drafts checked and turned into a change set; the rejected ones are listed with every
/// problem they have.
#[derive(Debug)]
pub struct Prepared {
    pub change_set: ChangeSet,
    /// `(index of the draft, its problems)`.
    pub rejected: Vec<Rejection>,
    /// Drafts identical to the current record: nothing to write.
    pub unchanged: usize,
    /// What the change set will have written once it commits, for preparing the next batch
    /// of a pipelined import before it does.
    pub pending: Pending,
}

/// One rejected draft.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub index: usize,
    pub functional_id: Option<String>,
    pub problems: Vec<Problem>,
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// `None` when nothing changed (no change set was written).
    pub change_set_id: Option<Uuid>,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Functional ids of the records written, in draft order.
    pub functional_ids: Vec<String>,
}

/// Why a write did not happen. Nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the write was rejected: {}", describe(.0))]
    Rejected(Vec<Rejection>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(rejections: &[Rejection]) -> String {
    rejections
        .iter()
        .flat_map(|r| {
            r.problems.iter().map(move |p| {
                format!(
                    "{}{p}",
                    r.functional_id
                        .as_deref()
                        .map(|id| format!("{id}: "))
                        .unwrap_or_default()
                )
            })
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A record with what surrounds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub record: Record,
    /// The household: the record's parent for an individual, the record itself for a household.
    pub household: Option<Record>,
    /// The household's individuals.
    pub members: Vec<Record>,
    /// Supporting-table rows linked to the record.
    pub supporting: Vec<Record>,
}

/// Every version of a record and its field-level change log.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub versions: Vec<Record>,
    pub changes: Vec<ChangeLogEntry>,
}

/// A change set prepared but not yet committed: in a pipelined import, the batches queued or
/// being written while the next is prepared. The next batch sees its records as existing parents,
/// its ids as taken (a repeat is a duplicate row) and its unique values as held.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    records: HashMap<String, (Uuid, String)>,
    unique: HashMap<(String, String, String), String>,
}

impl Pending {
    /// What `writes` will have written once they commit.
    fn of(writes: &[RecordWrite], registers: &Registers) -> Self {
        let mut pending = Self::default();
        for write in writes {
            let r = write.envelope();
            pending
                .records
                .insert(r.functional_id.clone(), (r.id, r.register.clone()));
            let Some(def) = registers.get(&r.register) else {
                continue;
            };
            for field in def.fields.iter().filter(|f| f.unique) {
                if let Some(value) = write.fields().get(&field.name) {
                    pending.unique.insert(
                        (def.name.clone(), field.name.clone(), format_cell(value)),
                        r.functional_id.clone(),
                    );
                }
            }
        }
        pending
    }

    /// Both `self` and `later` (the later one wins where they disagree).
    pub fn and(mut self, later: Pending) -> Self {
        self.records.extend(later.records);
        self.unique.extend(later.unique);
        self
    }
}

/// Per-draft working state while a batch is prepared.
struct Target<'a> {
    def: &'a RegisterDef,
    existing: Option<&'a Record>,
    fields: Fields,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, registers: Arc<Registers>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            registers,
            clock,
            auto_approve: Arc::new(super::change_request::default_auto_approve_sources()),
        }
    }

    /// Sets the change-request sources that are applied without a second person's approval.
    pub fn with_auto_approve_sources(mut self, sources: Vec<String>) -> Self {
        self.auto_approve = Arc::new(sources);
        self
    }

    /// Whether change requests from `source` are applied without a second person.
    pub fn auto_approves(&self, source: &str) -> bool {
        self.auto_approve.iter().any(|s| s == source)
    }

    /// The registry clock's current instant.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The registry's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn registers(&self) -> &Registers {
        &self.registers
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates `drafts` against the definitions and the current data and builds one change
    /// set of the acceptable ones. Writes nothing.
    pub async fn prepare(&self, author: &Author, drafts: &[Draft]) -> Result<Prepared, StoreError> {
        self.prepare_following(author, drafts.to_vec(), Pending::default())
            .await
    }

    /// [`Registry::prepare`] for a batch that follows `pending`, a change set that is being
    /// written and is not yet visible in the store.
    pub async fn prepare_following(
        &self,
        author: &Author,
        mut drafts: Vec<Draft>,
        pending: Pending,
    ) -> Result<Prepared, StoreError> {
        let at = self.clock.now();
        // The drafts' own records are read whole (an update is diffed against them); parents
        // only need to be known, not read.
        let own: BTreeSet<&String> = drafts.iter().flat_map(|d| &d.functional_id).collect();
        let parents: BTreeSet<&String> = drafts
            .iter()
            .flat_map(|d| &d.parent)
            .filter(|p| !p.is_empty() && !own.contains(p))
            .collect();
        let own: Vec<String> = own.into_iter().cloned().collect();
        let parents: Vec<String> = parents.into_iter().cloned().collect();
        let known: HashMap<String, Record> = self
            .store
            .records_by_functional_ids(&own)
            .await?
            .into_iter()
            .map(|r| (r.functional_id.clone(), r))
            .collect();
        let known_parents: HashMap<String, (Uuid, String)> = self
            .store
            .record_refs_by_functional_ids(&parents)
            .await?
            .into_iter()
            .map(|r| (r.functional_id, (r.id, r.register)))
            .collect();

        // First pass: the fields each draft would leave the record with (taken out of the
        // drafts, which keep their envelope).
        let targets: Vec<Option<Target<'_>>> = drafts
            .iter_mut()
            .map(|draft| {
                let def = self.registers.get(&draft.register)?;
                let existing = draft.functional_id.as_ref().and_then(|id| known.get(id));
                let given = std::mem::take(&mut draft.fields);
                let fields = match (draft.mode, existing) {
                    (DraftMode::Patch, Some(current)) => {
                        let mut merged = current.fields.clone();
                        for (name, value) in given {
                            if value.is_null() {
                                merged.remove(&name);
                            } else {
                                merged.insert(name, value);
                            }
                        }
                        merged
                    }
                    _ => without_nulls(given),
                };
                Some(Target {
                    def,
                    existing,
                    fields,
                })
            })
            .collect();

        // Who already holds each unique value (one indexed query per unique field).
        let mut holders: HashMap<(String, String, String), String> = HashMap::new();
        let mut unique_values: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
        for target in targets.iter().flatten() {
            for field in target.def.fields.iter().filter(|f| f.unique) {
                if let Some(value) = target.fields.get(&field.name) {
                    unique_values
                        .entry((&target.def.name, &field.name))
                        .or_default()
                        .insert(format_cell(value));
                }
            }
        }
        for ((register, field_name), values) in unique_values {
            let Some(field) = self
                .registers
                .get(register)
                .and_then(|d| d.field(field_name))
            else {
                continue;
            };
            let values: Vec<String> = values.into_iter().collect();
            for record in self
                .store
                .records_by_field(register, field, &values)
                .await?
            {
                if let Some(value) = record.fields.get(field_name) {
                    holders.insert(
                        (
                            register.to_owned(),
                            field_name.to_owned(),
                            format_cell(value),
                        ),
                        record.functional_id.clone(),
                    );
                }
            }
        }

        // Second pass, in order, so a child can name a parent created earlier in the batch and
        // is rejected with it if that parent is rejected.
        let change_set_id = time_ordered_id(at);
        let mut batch_records: HashMap<String, (Uuid, String)> = pending.records;
        let mut batch_unique: HashMap<(String, String, String), String> = pending.unique;
        let mut writes = Vec::new();
        let mut rejected = Vec::new();
        let mut unchanged = 0;
        for (index, (draft, target)) in drafts.iter().zip(targets).enumerate() {
            let Some(target) = target else {
                rejected.push(Rejection {
                    index,
                    functional_id: draft.functional_id.clone(),
                    problems: vec![Problem::new(
                        "register",
                        ProblemCode::UnknownRegister,
                        format!("no register `{}`", draft.register),
                    )],
                });
                continue;
            };
            let def = target.def;
            let mut problems = Vec::new();

            if let Some(current) = target.existing.filter(|r| r.register != def.name) {
                problems.push(Problem::new(
                    "id",
                    ProblemCode::InvalidId,
                    format!(
                        "`{}` is a record of register `{}`",
                        current.functional_id, current.register
                    ),
                ));
            }
            let functional_id = match (&draft.functional_id, target.existing) {
                (Some(id), Some(_)) => id.clone(),
                (Some(id), None) => {
                    if draft.mode == DraftMode::Patch {
                        problems.push(Problem::new(
                            "id",
                            ProblemCode::NotFound,
                            format!("no record `{id}`"),
                        ));
                    } else if let Err(message) = ids::check_supplied(def, id) {
                        problems.push(Problem::new("id", ProblemCode::InvalidId, message));
                    }
                    id.clone()
                }
                (None, _) if def.kind == Kind::Register => {
                    ids::generate(&def.prefix, rand::random())
                }
                (None, _) => {
                    problems.push(Problem::new(
                        "id",
                        ProblemCode::InvalidId,
                        format!(
                            "records of `{}` need an id starting with `{}`",
                            def.name, def.prefix
                        ),
                    ));
                    String::new()
                }
            };
            if !functional_id.is_empty() && batch_records.contains_key(&functional_id) {
                problems.push(Problem::new(
                    "id",
                    ProblemCode::InvalidId,
                    format!("`{functional_id}` appears twice"),
                ));
            }

            problems.extend(validate_fields(def, &target.fields));

            let parent_id = match (&draft.parent, draft.mode, target.existing) {
                (None, DraftMode::Patch, Some(current)) => current.parent_id,
                (Some(parent), _, _) if !parent.is_empty() => {
                    let found = known
                        .get(parent)
                        .map(|r| (r.id, r.register.clone()))
                        .or_else(|| known_parents.get(parent).cloned())
                        .or_else(|| batch_records.get(parent).cloned());
                    match found {
                        None => {
                            problems.push(Problem::new(
                                "parent_id",
                                ProblemCode::MissingParent,
                                format!("no record `{parent}`"),
                            ));
                            None
                        }
                        Some((_, register)) if !def.parents.contains(&register) => {
                            problems.push(Problem::new(
                                "parent_id",
                                ProblemCode::InvalidParent,
                                format!(
                                    "a `{}` record cannot belong to a `{register}` record",
                                    def.name
                                ),
                            ));
                            None
                        }
                        Some((id, _)) => Some(id),
                    }
                }
                _ => None,
            };
            if parent_id.is_none()
                && def.parent_required
                && !problems.iter().any(|p| p.field == "parent_id")
            {
                problems.push(Problem::new(
                    "parent_id",
                    ProblemCode::MissingParent,
                    format!(
                        "a `{}` record needs a parent ({})",
                        def.name,
                        def.parents.join(" or ")
                    ),
                ));
            }

            for field in def.fields.iter().filter(|f| f.unique) {
                let Some(value) = target.fields.get(&field.name) else {
                    continue;
                };
                let key = (def.name.clone(), field.name.clone(), format_cell(value));
                let holder = holders.get(&key).filter(|h| **h != functional_id);
                let batch_holder = batch_unique.get(&key).filter(|h| **h != functional_id);
                if let Some(other) = holder.or(batch_holder) {
                    problems.push(Problem::new(
                        &field.name,
                        ProblemCode::Unique,
                        format!("the value is already held by `{other}`"),
                    ));
                }
            }

            if !problems.is_empty() {
                rejected.push(Rejection {
                    index,
                    functional_id: draft.functional_id.clone(),
                    problems,
                });
                continue;
            }
            for field in def.fields.iter().filter(|f| f.unique) {
                if let Some(value) = target.fields.get(&field.name) {
                    batch_unique.insert(
                        (def.name.clone(), field.name.clone(), format_cell(value)),
                        functional_id.clone(),
                    );
                }
            }

            let status = draft
                .status
                .or(target.existing.map(|r| r.status))
                .unwrap_or(RecordStatus::Active);
            let record_id = target
                .existing
                .map_or_else(|| time_ordered_id(at), |r| r.id);
            batch_records.insert(functional_id.clone(), (record_id, def.name.clone()));
            let (version, previous_version, changes) = match target.existing {
                None => (1, None, Vec::new()),
                Some(current) => {
                    let changes = diff(
                        def,
                        current,
                        (parent_id, draft.parent.as_deref()),
                        status,
                        &target.fields,
                    );
                    if changes.is_empty() {
                        unchanged += 1;
                        continue;
                    }
                    (current.version + 1, Some(current.version), changes)
                }
            };
            writes.push(RecordWrite::new(
                Record {
                    id: record_id,
                    register: def.name.clone(),
                    functional_id,
                    parent_id,
                    parent_functional_id: None,
                    status,
                    version,
                    fields: target.fields,
                    change_set_id,
                    valid_from: at,
                    valid_to: None,
                },
                previous_version,
                changes,
            ));
        }

        let pending = Pending::of(&writes, &self.registers);
        Ok(Prepared {
            pending,
            change_set: ChangeSet::new(
                change_set_id,
                author.actor.clone(),
                author.source.clone(),
                author.reason.clone(),
                at,
                writes,
            ),
            rejected,
            unchanged,
        })
    }

    /// Validates and writes `drafts` as one change set: all of them, or (if any draft has a
    /// problem) none, with every problem of every draft reported.
    pub async fn write(
        &self,
        author: &Author,
        drafts: &[Draft],
    ) -> Result<WriteOutcome, WriteError> {
        let prepared = self.prepare(author, drafts).await?;
        if !prepared.rejected.is_empty() {
            return Err(WriteError::Rejected(prepared.rejected));
        }
        self.apply(prepared).await
    }

    /// Writes the accepted part of a prepared batch.
    pub async fn apply(&self, prepared: Prepared) -> Result<WriteOutcome, WriteError> {
        let (change_set, outcome) = outcome_of(prepared);
        if change_set.writes().is_empty() {
            return Ok(outcome);
        }
        self.store
            .apply_change_set(&change_set)
            .await
            .map_err(write_error)?;
        Ok(outcome)
    }

    /// [`Registry::apply`] for a source whose change requests are auto-approved (bulk import):
    /// the change set and one approved change-request row referencing it are written in one
    /// transaction, so bulk writes go through the change-request path at the cost of one row
    /// per batch.
    pub async fn apply_auto_approved(
        &self,
        prepared: Prepared,
    ) -> Result<WriteOutcome, WriteError> {
        let (change_set, outcome) = outcome_of(prepared);
        if change_set.writes().is_empty() {
            return Ok(outcome);
        }
        let request = super::change_request::ChangeRequest::bulk(&change_set);
        self.store
            .insert_change_request(&request, None, Some(&change_set))
            .await
            .map_err(write_error)?;
        Ok(outcome)
    }

    /// Finds a record by functional id or internal UUID.
    pub async fn find(&self, id: &str, at: At<'_>) -> Result<Option<Record>, StoreError> {
        match Uuid::parse_str(id) {
            Ok(uuid) => self.store.record_by_id(uuid, at).await,
            Err(_) => self.store.record_by_functional_id(id, at).await,
        }
    }

    /// A record with its household, the household's members and its supporting rows, all as
    /// of the same point (now, an instant, or a label).
    pub async fn show(&self, id: &str, at: At<'_>) -> Result<Option<RecordView>, StoreError> {
        let Some(record) = self.find(id, at).await? else {
            return Ok(None);
        };
        let household = match record.register.as_str() {
            "household" => Some(record.clone()),
            _ => match record.parent_id {
                Some(parent) => self
                    .store
                    .record_by_id(parent, at)
                    .await?
                    .filter(|p| p.register == "household"),
                None => None,
            },
        };
        let members = match &household {
            Some(h) => self
                .store
                .children(h.id, at)
                .await?
                .into_iter()
                .filter(|r| r.register == "individual")
                .collect(),
            None => Vec::new(),
        };
        let supporting = self
            .store
            .children(record.id, at)
            .await?
            .into_iter()
            .filter(|r| {
                self.registers
                    .get(&r.register)
                    .is_some_and(|d| d.kind == Kind::Table)
            })
            .collect();
        Ok(Some(RecordView {
            record,
            household,
            members,
            supporting,
        }))
    }

    /// Every version and the change log of a record.
    pub async fn history(&self, id: &str) -> Result<Option<History>, StoreError> {
        let Some(record) = self.find(id, At::Current).await? else {
            return Ok(None);
        };
        Ok(Some(History {
            versions: self.store.versions(record.id).await?,
            changes: self.store.change_log(record.id).await?,
        }))
    }

    /// Labels the current versions of the given records (functional ids or UUIDs). Returns
    /// the number labelled and the ids that were not found.
    pub async fn label(
        &self,
        label: &str,
        ids: &[String],
        actor: &str,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match self.find(id, At::Current).await? {
                Some(record) => found.push(record.id),
                None => missing.push(id.clone()),
            }
        }
        let labelled = self
            .store
            .label_current_versions(label, &found, actor, self.clock.now())
            .await?;
        Ok((labelled, missing))
    }

    /// Labels the current version of every record of a register.
    pub async fn label_register(
        &self,
        label: &str,
        register: &str,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let mut after: Option<Uuid> = None;
        let mut labelled = 0;
        loop {
            let page = self.store.records_page(register, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let ids: Vec<Uuid> = page.iter().map(|r| r.id).collect();
            labelled += self
                .store
                .label_current_versions(label, &ids, actor, self.clock.now())
                .await?;
        }
        Ok(labelled)
    }

    /// Walks both audit chains (`registry::audit`): the registry's, then the disclosure chain,
    /// checking it against every anchor the first holds. `Ok(Ok(n))`: both intact, n entries in
    /// the registry's chain; `Ok(Err(break))`: the first entry edited, removed or reordered, or
    /// the first anchor the disclosure chain no longer matches.
    pub async fn verify_audit(&self) -> Result<Result<i64, ChainBreak>, StoreError> {
        // Disclosure-chain seq → the anchors naming it (registry seq, hash).
        let mut anchors: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
        let registry = self
            .walk_chain(AuditChain::Registry, |entry| {
                if let Some((seq, hash)) = anchor_of(entry) {
                    anchors.entry(seq).or_default().push((entry.seq, hash));
                }
                Ok(())
            })
            .await?;
        let entries = match registry {
            Ok(entries) => entries,
            Err(broken) => return Ok(Err(broken)),
        };
        let disclosures = self
            .walk_chain(AuditChain::Disclosures, |entry| {
                match anchors
                    .remove(&entry.seq)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(_, hash)| *hash != entry.hash)
                {
                    Some((anchor, _)) => Err(ChainBreak::Anchor {
                        anchor,
                        seq: entry.seq,
                    }),
                    None => Ok(()),
                }
            })
            .await?;
        if let Err(broken) = disclosures {
            return Ok(Err(match broken {
                anchor @ ChainBreak::Anchor { .. } => anchor,
                other => ChainBreak::Disclosures(Box::new(other)),
            }));
        }
        // An anchor past the chain's end: entries were removed and the head rewound.
        if let Some((seq, named)) = anchors.into_iter().next() {
            let anchor = named.first().map_or(0, |(anchor, _)| *anchor);
            return Ok(Err(ChainBreak::Anchor { anchor, seq }));
        }
        Ok(Ok(entries))
    }

    /// Walks one chain in order, each entry checked by the chain's rules, then by `also`.
    async fn walk_chain(
        &self,
        chain: AuditChain,
        mut also: impl FnMut(&AuditEntry) -> Result<(), ChainBreak>,
    ) -> Result<Result<i64, ChainBreak>, StoreError> {
        let head = match chain {
            AuditChain::Registry => self.store.audit_head().await?,
            AuditChain::Disclosures => self.store.disclosure_audit_head().await?,
        };
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = match chain {
                AuditChain::Registry => self.store.audit_entries(after, 1000).await?,
                AuditChain::Disclosures => self.store.disclosure_audit_entries(after, 1000).await?,
            };
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in &page {
                if let Err(broken) = verifier.check(entry).and_then(|()| also(entry)) {
                    return Ok(Err(broken));
                }
            }
        }
        Ok(verifier.finish(head))
    }

    /// Anchors the disclosure chain in the registry's: appends an entry naming the disclosure
    /// chain's last entry and its hash. Nothing is written when there is nothing new: no
    /// disclosure since `anchored`, or the registry chain ends with that very anchor. Returns
    /// the disclosure-chain entry now anchored.
    pub async fn anchor_disclosures(&self, anchored: i64) -> Result<i64, StoreError> {
        let head = self.store.disclosure_audit_head().await?;
        if head == 0 || head == anchored {
            return Ok(anchored);
        }
        let Some(last) = self
            .store
            .disclosure_audit_entries(head - 1, 1)
            .await?
            .into_iter()
            .next()
        else {
            return Err(StoreError::Other(format!(
                "the disclosure chain's head names entry {head}, which is missing"
            )));
        };
        let registry_head = self.store.audit_head().await?;
        let latest = self.store.audit_entries(registry_head - 1, 1).await?;
        if latest
            .first()
            .and_then(anchor_of)
            .is_some_and(|(seq, hash)| seq == last.seq && hash == last.hash)
        {
            return Ok(last.seq);
        }
        self.store
            .append_audit_entry(&AuditDraft {
                at: self.clock.now(),
                actor: "nsr".to_owned(),
                action: ANCHOR_ACTION.to_owned(),
                subject: "disclosure_chain".to_owned(),
                detail: serde_json::json!({"seq": last.seq, "hash": last.hash}).to_string(),
            })
            .await?;
        Ok(last.seq)
    }
}

/// A UUIDv7 from the registry's clock: new rows land at the end of every index keyed by id,
/// instead of at random places (which would dirty pages all over the index on every batch).
pub(crate) fn time_ordered_id(at: chrono::DateTime<chrono::Utc>) -> Uuid {
    let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        at.timestamp_subsec_nanos(),
    ))
}

/// Field-level differences between the current record and its next state, in field order, plus
/// the envelope (status, parent) as pseudo-fields.
fn diff(
    def: &RegisterDef,
    current: &Record,
    (parent_id, parent_name): (Option<Uuid>, Option<&str>),
    status: RecordStatus,
    fields: &Fields,
) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    if current.status != status {
        changes.push(FieldChange {
            field: STATUS_FIELD.to_owned(),
            old: Value::from(current.status.as_str()),
            new: Value::from(status.as_str()),
        });
    }
    if current.parent_id != parent_id {
        let old = current
            .parent_functional_id
            .clone()
            .map_or(Value::Null, Value::from);
        let new = parent_id.map_or(Value::Null, |_| {
            parent_name.map_or(Value::Null, Value::from)
        });
        changes.push(FieldChange {
            field: PARENT_FIELD.to_owned(),
            old,
            new,
        });
    }
    let mut names: Vec<&String> = current.fields.keys().chain(fields.keys()).collect();
    names.sort_by_key(|n| {
        (
            def.fields
                .iter()
                .position(|f| &f.name == *n)
                .unwrap_or(usize::MAX),
            (*n).clone(),
        )
    });
    names.dedup();
    for name in names {
        let old = current.fields.get(name).cloned().unwrap_or(Value::Null);
        let new = fields.get(name).cloned().unwrap_or(Value::Null);
        if old != new {
            changes.push(FieldChange {
                field: name.clone(),
                old,
                new,
            });
        }
    }
    changes
}

/// What applying a prepared batch will report, and its change set.
fn outcome_of(prepared: Prepared) -> (ChangeSet, WriteOutcome) {
    let change_set = prepared.change_set;
    let created = change_set
        .writes()
        .iter()
        .filter(|w| w.previous_version().is_none())
        .count();
    let outcome = WriteOutcome {
        change_set_id: (!change_set.writes().is_empty()).then_some(change_set.id()),
        created,
        updated: change_set.writes().len() - created,
        unchanged: prepared.unchanged,
        functional_ids: change_set
            .writes()
            .iter()
            .map(|w| w.envelope().functional_id.clone())
            .collect(),
    };
    (change_set, outcome)
}

/// A store error from writing a change set, as the write's outcome.
pub(crate) fn write_error(error: StoreError) -> WriteError {
    match error {
        // A racing writer took a unique value after our check: the database's index is
        // the final word, reported like any other problem.
        StoreError::Unique { field, .. } => WriteError::Rejected(vec![Rejection {
            index: 0,
            functional_id: None,
            problems: vec![Problem::new(
                field,
                ProblemCode::Unique,
                "the value is already held by another record",
            )],
        }]),
        other => other.into(),
    }
}
