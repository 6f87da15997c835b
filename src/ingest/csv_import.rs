//! `nsr import csv`: streams a CSV file into a register. Every row is validated; rejected rows
//! go to an error CSV (row, id, field, code, reason) and are not applied; good rows are
//! committed in batches, one change set each. Re-importing the same file writes nothing.
//!
//! File format: a header row; `id` (functional id; optional for individuals and households,
//! which then get a generated one), `parent_id` (the parent's functional id), `status`
//! (ACTIVE, INACTIVE, ARCHIVED; default ACTIVE), then any of the register's fields. Empty cells
//! are absent values; lists and objects are JSON.
//!
//! An import goes through the change-request path: its source must be auto-approved
//! (configuration `auto_approve_sources`), and each batch is recorded as one approved change
//! request referencing its change set, written in the same transaction.

use crate::registry::record::{
    Fields, Problem, ProblemCode, RecordStatus, parse_cell, validate_fields,
};
use crate::registry::register::{RegisterDef, Registers};
use crate::registry::{Author, Draft, DraftMode, Pending, Prepared, Registry, WriteError};
use anyhow::{Context, bail};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::path::PathBuf;

const ENVELOPE_COLUMNS: [&str; 3] = ["id", "parent_id", "status"];

/// Prepared batches that may wait for the writer while it writes another.
const WRITER_QUEUE: usize = 1;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub register: String,
    /// Rows per change set (and per transaction).
    pub batch_size: usize,
    /// Where rejected rows are written (created only if a row is rejected).
    pub errors_path: PathBuf,
    pub author: Author,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub batches: u64,
    /// Set when rows were rejected.
    pub errors_path: Option<PathBuf>,
}

/// Reads drafts from a CSV stream, checking the header against the register first.
pub struct DraftReader<'a, R: Read> {
    def: &'a RegisterDef,
    reader: csv::Reader<R>,
    header: Vec<String>,
    record: csv::StringRecord,
}

/// One data row: its line number and either a draft or the problems that stop it being one.
pub type Row = (u64, Result<Draft, (Option<String>, Vec<Problem>)>);

impl<'a, R: Read> DraftReader<'a, R> {
    /// Opens the stream; fails (before any row is read) on a header that names unknown or
    /// repeated columns.
    pub fn new(registers: &'a Registers, register: &str, input: R) -> anyhow::Result<Self> {
        let Some(def) = registers.get(register) else {
            bail!(
                "no register `{register}` (known: {})",
                registers.names().collect::<Vec<_>>().join(", ")
            );
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(input);
        let header: Vec<String> = reader
            .headers()
            .context("cannot read the CSV header")?
            .iter()
            .map(str::to_owned)
            .collect();
        let unknown: Vec<&str> = header
            .iter()
            .map(String::as_str)
            .filter(|c| !ENVELOPE_COLUMNS.contains(c) && def.field(c).is_none())
            .collect();
        if !unknown.is_empty() {
            bail!(
                "register `{register}` has no field(s) {} (columns must be id, parent_id, status or field names)",
                unknown.join(", ")
            );
        }
        for (i, column) in header.iter().enumerate() {
            if header.iter().skip(i + 1).any(|c| c == column) {
                bail!("column `{column}` appears twice in the header");
            }
        }
        Ok(Self {
            def,
            reader,
            header,
            record: csv::StringRecord::new(),
        })
    }

    /// Bytes read so far (for progress).
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    /// The next row, or `None` at the end.
    pub fn next_row(&mut self) -> anyhow::Result<Option<Row>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => return Ok(None),
            Ok(true) => {}
            Err(error) => {
                let line = error.position().map_or(0, csv::Position::line);
                if let csv::ErrorKind::UnequalLengths { .. } = error.kind() {
                    let problem = Problem::new(
                        "row",
                        ProblemCode::WrongType,
                        "the row has a different number of cells than the header",
                    );
                    return Ok(Some((line, Err((None, vec![problem])))));
                }
                return Err(error).with_context(|| format!("cannot read CSV at line {line}"));
            }
        }
        let line = self.record.position().map_or(0, csv::Position::line);
        Ok(Some((line, self.row_to_draft())))
    }

    fn row_to_draft(&self) -> Result<Draft, (Option<String>, Vec<Problem>)> {
        let mut draft = Draft {
            register: self.def.name.clone(),
            functional_id: None,
            parent: None,
            status: None,
            fields: Fields::new(),
            mode: DraftMode::Replace,
        };
        let mut problems = Vec::new();
        let mut unparsed = Vec::new();
        for (column, cell) in self.header.iter().zip(self.record.iter()) {
            if cell.is_empty() {
                continue;
            }
            match column.as_str() {
                "id" => draft.functional_id = Some(cell.trim().to_owned()),
                "parent_id" => draft.parent = Some(cell.trim().to_owned()),
                "status" => match RecordStatus::parse(cell.trim()) {
                    Some(status) => draft.status = Some(status),
                    None => problems.push(Problem::new(
                        "status",
                        ProblemCode::InvalidStatus,
                        format!("`{cell}` is not ACTIVE, INACTIVE or ARCHIVED"),
                    )),
                },
                name => match self.def.field(name).map(|f| parse_cell(f, cell)) {
                    Some(Ok(value)) => {
                        draft.fields.insert(name.to_owned(), value);
                    }
                    Some(Err(problem)) => {
                        unparsed.push(name.to_owned());
                        problems.push(problem);
                    }
                    None => {}
                },
            }
        }
        if problems.is_empty() {
            return Ok(draft);
        }
        // Report the rest of the row's problems too, except "required" for cells that were
        // present but unreadable.
        problems.extend(
            validate_fields(self.def, &draft.fields)
                .into_iter()
                .filter(|p| !(p.code == ProblemCode::Required && unparsed.contains(&p.field))),
        );
        Err((draft.functional_id, problems))
    }
}

/// Writes rejected rows, creating the file on the first one.
struct ErrorFile {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
}

impl ErrorFile {
    fn write(&mut self, line: u64, id: Option<&str>, problems: &[Problem]) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let mut writer = csv::Writer::from_path(&self.path)
                .with_context(|| format!("cannot create the error file {}", self.path.display()))?;
            writer.write_record(["row", "id", "field", "code", "reason"])?;
            self.writer = Some(writer);
        }
        if let Some(writer) = self.writer.as_mut() {
            let row = line.to_string();
            for problem in problems {
                writer.write_record([
                    row.as_str(),
                    id.unwrap_or_default(),
                    &problem.field,
                    problem.code.as_str(),
                    &problem.message,
                ])?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<Option<PathBuf>> {
        match self.writer.take() {
            Some(mut writer) => {
                writer.flush()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

/// The import's writer: applies prepared batches one at a time, in file order, and totals
/// what they did. It stops at the first batch that fails, naming that batch's first line.
async fn write_batches(
    registry: Registry,
    mut batches: tokio::sync::mpsc::Receiver<(u64, Prepared)>,
) -> anyhow::Result<ImportReport> {
    let mut totals = ImportReport::default();
    while let Some((first_line, prepared)) = batches.recv().await {
        match registry.apply_auto_approved(prepared).await {
            Ok(outcome) => {
                totals.created += outcome.created as u64;
                totals.updated += outcome.updated as u64;
                totals.unchanged += outcome.unchanged as u64;
                totals.batches += u64::from(outcome.change_set_id.is_some());
            }
            Err(WriteError::Rejected(rejections)) => bail!(
                "the batch starting at line {first_line} was refused by the database ({}); earlier batches are committed, this one and later ones are not",
                rejections
                    .iter()
                    .flat_map(|r| r.problems.iter().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Err(WriteError::Store(error)) => {
                return Err(error).with_context(|| {
                    format!("the batch starting at line {first_line} failed; earlier batches are committed, this one and later ones are not")
                });
            }
        }
    }
    Ok(totals)
}

/// Waits for the writer to finish and adds its totals to `report`.
async fn finish_writing(
    writer: tokio::task::JoinHandle<anyhow::Result<ImportReport>>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    let totals = writer.await.context("the batch writer stopped")??;
    report.created += totals.created;
    report.updated += totals.updated;
    report.unchanged += totals.unchanged;
    report.batches += totals.batches;
    Ok(())
}

/// Imports `input` into a register. `progress` is called after each batch with the rows and
/// bytes read so far.
///
/// Batches are pipelined: a writer task applies them one at a time, in file order, while the
/// next ones are read, validated and checked against the store and against the batches not
/// yet written ([`Pending`]). One batch may wait for the writer while another is written, so
/// the writer never waits for validation unless validation is the slower side.
pub async fn import_csv<R: Read>(
    registry: &Registry,
    input: R,
    options: &ImportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<ImportReport> {
    if !registry.auto_approves(&options.author.source) {
        bail!(
            "bulk imports are applied as auto-approved change requests, but source `{}` is not in auto_approve_sources",
            options.author.source
        );
    }
    let mut reader = DraftReader::new(registry.registers(), &options.register, input)?;
    // An error file left by an earlier run would describe rows this run may have accepted.
    if options.errors_path.exists() {
        std::fs::remove_file(&options.errors_path).with_context(|| {
            format!(
                "cannot remove the old error file {}",
                options.errors_path.display()
            )
        })?;
    }
    let mut errors = ErrorFile {
        path: options.errors_path.clone(),
        writer: None,
    };
    let mut report = ImportReport::default();
    let batch_size = options.batch_size.max(1);
    let mut lines: Vec<u64> = Vec::with_capacity(batch_size);
    let mut drafts: Vec<Draft> = Vec::with_capacity(batch_size);
    let mut processed_batches: u64 = 0;
    // What the writer has been given and may not have committed: the batch it is writing
    // and the one waiting for it.
    let mut unwritten: VecDeque<Pending> = VecDeque::with_capacity(WRITER_QUEUE + 1);
    let (queue, batches) = tokio::sync::mpsc::channel(WRITER_QUEUE);
    let writer = tokio::spawn(write_batches(registry.clone(), batches));
    // Each id seen so far, as a 96-bit keyed hash, with its line (16 bytes an entry: a million
    // ids take ~36 MB, against ~80 MB as strings). A false "repeated id" would need two of
    // a million 96-bit hashes to collide: about 1e-17.
    let mut seen_ids: HashMap<[u32; 3], u32> = HashMap::new();
    let hashers = (RandomState::new(), RandomState::new());
    let seen_key = |id: &str| {
        let (a, b) = (hashers.0.hash_one(id), hashers.1.hash_one(id));
        [(a >> 32) as u32, a as u32, b as u32]
    };
    loop {
        let row = reader.next_row()?;
        let at_end = row.is_none();
        if let Some((line, parsed)) = row {
            report.rows += 1;
            match parsed {
                Ok(draft) => {
                    // A second row for the same id is a mistake in the file, wherever the
                    // batch boundaries fall.
                    if let Some(id) = &draft.functional_id {
                        if let Some(first) = seen_ids.get(&seen_key(id)) {
                            report.rejected += 1;
                            let problem = Problem::new(
                                "id",
                                ProblemCode::InvalidId,
                                format!("`{id}` already appears on row {first}"),
                            );
                            errors.write(line, Some(id), &[problem])?;
                            continue;
                        }
                        seen_ids.insert(seen_key(id), u32::try_from(line).unwrap_or(u32::MAX));
                    }
                    lines.push(line);
                    drafts.push(draft);
                }
                Err((id, problems)) => {
                    report.rejected += 1;
                    errors.write(line, id.as_deref(), &problems)?;
                }
            }
        }
        if drafts.len() >= batch_size || (at_end && !drafts.is_empty()) {
            let first_line = lines.first().copied().unwrap_or_default();
            let pending = unwritten
                .iter()
                .cloned()
                .fold(Pending::default(), Pending::and);
            let mut prepared = registry
                .prepare_following(&options.author, std::mem::take(&mut drafts), pending)
                .await?;
            for rejection in &prepared.rejected {
                report.rejected += 1;
                let line = lines.get(rejection.index).copied().unwrap_or_default();
                errors.write(
                    line,
                    rejection.functional_id.as_deref(),
                    &rejection.problems,
                )?;
            }
            processed_batches += 1;
            // Planner statistics go stale while a table grows from empty; refresh them after
            // batches 1, 2, 4, 8, … (a logarithmic number of times) and at the end.
            if processed_batches.is_power_of_two() {
                registry.store().refresh_statistics().await?;
            }
            progress(report.rows, reader.bytes_read());
            if unwritten.len() > WRITER_QUEUE {
                unwritten.pop_front();
            }
            unwritten.push_back(std::mem::take(&mut prepared.pending));
            if queue.send((first_line, prepared)).await.is_err() {
                // The writer stopped at a failed batch; its error says which.
                break;
            }
            drafts.clear();
            lines.clear();
        }
        if at_end {
            break;
        }
    }
    drop(queue);
    finish_writing(writer, &mut report).await?;
    registry.store().refresh_statistics().await?;
    report.errors_path = errors.finish()?;
    progress(report.rows, reader.bytes_read());
    Ok(report)
}
