//! The `nsr` command line. `main.rs` parses arguments and calls [`run`]; every command is a
//! thin call into the library.

use crate::auth::{Auth, AuthSettings, Role, UserError, Users};
use crate::clock::{Clock, to_text};
use crate::config::{Config, LogFormat, Secret};
use crate::crypto::{Alg, KeyInfo, KeyStore, KeyUse, SignatureProfile};
use crate::dci::{EnvelopePolicy, Envelopes, Gateway, GatewayPolicy, Mapping, Tokens, Worker};
use crate::http::{AppState, Metrics};
use crate::ingest::csv_export::export_csv;
use crate::ingest::csv_import::{ImportOptions, import_csv};
use crate::ingest::generate::{GenerateOptions, PopulationSize, generate};
use crate::ingest::sample::seed_sample;
use crate::partners::{NewPartner, PartnerError, PartnerKeys, Partners, RemoteJwks};
use crate::registry::change_request::{Change, RequestError, RequestStatus};
use crate::registry::record::ProblemCode;
use crate::registry::record::{Fields, Record, RecordStatus, format_cell, parse_cell};
use crate::registry::register::Registers;
use crate::registry::{Author, RecordView, Registry};
use crate::store::{self, At, Backend};
use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// nsr: national social registry and DCI gateway.
#[derive(Debug, Parser)]
#[command(name = "nsr", version, about)]
pub struct Cli {
    /// Config file (default: ./nsr.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://PATH (default sqlite://nsr-data/nsr.sqlite3) or postgres://…
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations and serve HTTP (the staff API under /api/v1, docs at /api/docs/,
    /// /healthz, /readyz, /metrics, /.well-known/jwks.json). A new, empty embedded database is
    /// seeded with the NSR sample unless --no-sample. Needs a signing key; a keys directory
    /// that does not exist yet is created with one.
    Serve {
        #[arg(long)]
        no_sample: bool,
    },
    /// Load data that ships with nsr.
    Seed {
        /// The NSR sample: 5 households, 15 individuals, rows in every supporting table.
        #[arg(long, required = true)]
        sample: bool,
    },
    /// Bulk import.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Bulk export.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Write a deterministic synthetic population as CSV files (one per register).
    Generate {
        /// How many households.
        #[arg(
            long,
            required_unless_present = "individuals",
            conflicts_with = "individuals"
        )]
        households: Option<u64>,
        /// Households until exactly this many individuals.
        #[arg(long)]
        individuals: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a record with its household, members and supporting rows.
    Show {
        /// Functional id (IND-…, HH-…) or internal UUID.
        id: String,
        /// Show it as it was at this instant (RFC 3339, or a date meaning its start in UTC).
        #[arg(long, conflicts_with = "label")]
        as_of: Option<String>,
        /// Show the version carrying this label.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a record's versions and field-level change log.
    History {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change fields of a record: FIELD=VALUE (an empty value removes the field). Writes a
    /// new version.
    Update {
        id: String,
        /// FIELD=VALUE pairs, values as in CSV (lists and objects as JSON).
        #[arg(required_unless_present_any = ["status", "parent"])]
        assignments: Vec<String>,
        #[arg(long)]
        status: Option<String>,
        /// Move the record under another parent (functional id).
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Who is making the change (default: $USER).
        #[arg(long)]
        actor: Option<String>,
    },
    /// Label the current version of records (e.g. a survey round); labels never move.
    Label {
        label: String,
        /// Label every record of this register.
        #[arg(long, conflicts_with = "ids")]
        register: Option<String>,
        /// Functional ids or UUIDs.
        ids: Vec<String>,
    },
    /// Audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the register definitions in use.
    Registers,
    /// Print an example nsr.toml with every key and its default.
    ConfigExample,
    /// Our signing and encryption keys (served as JWKS).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Partner systems allowed to call the DCI gateway.
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// Staff users of the API.
    #[command(subcommand)]
    User(UserCommand),
    /// Run the DCI conformance cases against a DCI Social Registry server (nsr or another)
    /// and print a pass/fail table; exit 1 if any case fails. The cases assume the server
    /// holds the NSR sample (`nsr seed --sample`) and knows the caller as a partner.
    Conformance {
        /// The server's base URL, e.g. https://registry.example.org
        #[arg(long)]
        target: String,
        /// An access token the server issued to the partner.
        #[arg(long)]
        token: String,
        /// The partner's DCI sender id.
        #[arg(long)]
        sender_id: String,
        /// The server's receiver id (left out of headers when not given).
        #[arg(long)]
        receiver_id: Option<String>,
        /// The partner's keys folder (nsr key files); its newest signing key signs. Without
        /// it requests go unsigned.
        #[arg(long)]
        keys_dir: Option<PathBuf>,
        /// How the partner signs: jws or dci-signature.
        #[arg(long, default_value = "jws")]
        profile: SignatureProfile,
        /// A callback URL the server accepts for the partner (async cases).
        #[arg(long)]
        callback_url: String,
        /// Folder of case files.
        #[arg(long, default_value = "conformance/cases")]
        cases: PathBuf,
        /// Conditions the target meets (repeat), e.g. small-page-limit (dci_max_page_size < 15),
        /// consent-policy (searches must name a purpose; the partner is granted social_protection only).
        #[arg(long = "assume")]
        conditions: Vec<String>,
    },
    /// DCI async jobs (searches and status requests answered by callback), newest first.
    Jobs {
        /// Only jobs whose delivery is pending, delivered or failed.
        #[arg(long)]
        delivery: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Register a partner. Prints its OAuth client secret once (only a hash is kept), unless
    /// --secret-stdin gives one.
    Add {
        /// Its DCI `sender_id`.
        sender_id: String,
        /// Its OAuth client id.
        #[arg(long)]
        client_id: String,
        /// Scopes it may be granted (repeat): registry.search, registry.txn-status,
        /// registry.subscribe, registry.unsubscribe.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How it signs: jws, dci-signature, or none (unsigned; nsr warns at every start).
        #[arg(long, default_value = "jws")]
        profile: SignatureProfile,
        /// Signature algorithms accepted from it (repeat): EdDSA, ES256, RS256.
        #[arg(long = "alg")]
        algorithms: Vec<Alg>,
        /// File holding its public JWK Set.
        #[arg(long, conflicts_with = "jwks_url")]
        jwks: Option<PathBuf>,
        /// URL where it publishes its JWK Set (https; fetched and cached).
        #[arg(long)]
        jwks_url: Option<String>,
        /// URL prefix its callback URLs must start with (repeat).
        #[arg(long = "callback-prefix")]
        callback_prefixes: Vec<String>,
        /// File holding its public encryption JWK.
        #[arg(long)]
        encryption_jwk: Option<PathBuf>,
        /// Encrypt every message nsr sends it.
        #[arg(long)]
        require_encryption: bool,
        /// Read the client secret from stdin instead of generating one.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// List partners (never secrets).
    List,
    /// Refuse a partner's tokens and messages from now on.
    Disable { sender_id: String },
    /// Accept a disabled partner again.
    Enable { sender_id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key; it becomes the active key of its use (older keys stay published).
    Generate {
        /// EdDSA, ES256 or RS256 (signing); ECDH-ES+A256KW or RSA-OAEP-256 (encryption).
        #[arg(long)]
        alg: Alg,
        /// sig or enc (default: what the algorithm is for; a mismatch is refused).
        #[arg(long = "use")]
        key_use: Option<KeyUse>,
    },
    /// A new key with the algorithm of the active one; the previous key stays published and
    /// keeps verifying (sig) or decrypting (enc). Takes effect for `nsr serve` at restart.
    Rotate {
        /// sig (the signing key) or enc (the encryption key).
        #[arg(long = "use", default_value = "sig")]
        key_use: KeyUse,
    },
    /// List the keys: kid, algorithm, use, created, active or retired. Never private material.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a staff user. The password is prompted for on a terminal, or read from the first
    /// line of standard input (for scripts).
    Add {
        name: String,
        /// viewer, enumerator, approver, auditor, admin (repeat or comma-separate for several).
        #[arg(long = "role", required = true, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
    },
    /// List staff users and their roles.
    List,
    /// Disable a staff user: their password and tokens stop working at once.
    Disable { name: String },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a role ({})",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a CSV file into a register.
    Csv {
        #[arg(long)]
        register: String,
        file: PathBuf,
        /// Where rejected rows go (default: FILE.errors.csv).
        #[arg(long)]
        errors: Option<PathBuf>,
        /// Rows per change set (default: config import_batch_size).
        #[arg(long)]
        batch_size: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export a register's current records as CSV.
    Csv {
        #[arg(long)]
        register: String,
        /// Only these fields (comma-separated); id, parent_id and status are always written.
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; name the first entry edited, removed or reordered (exit 1).
    Verify,
}

impl Cli {
    /// The effective configuration: file and environment, then these flags.
    pub fn config(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), env)?;
        if let Some(url) = &self.database_url {
            config.database_url = Secret(url.clone());
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        Ok(config)
    }
}

/// Opens the registry: definitions, store, per-field indexes.
pub async fn open_registry(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Registry> {
    let registers = Registers::load_dir(&config.registers_dir)?;
    let store = store::open(config.database_url.expose(), config.max_connections)
        .await
        .with_context(|| format!("cannot open the database {:?}", config.database_url))?;
    store.sync_field_indexes(&registers).await?;
    Ok(Registry::new(store, Arc::new(registers), clock)
        .with_auto_approve_sources(config.auto_approve_sources.clone()))
}

fn parse_instant(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    bail!("`{text}` is not an RFC 3339 instant (2026-11-21T10:00:00Z) or a date (2026-11-21)")
}

/// Runs one command, writing its output to `out`.
pub async fn run(
    cli: Cli,
    config: Config,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::ConfigExample => {
            write!(out, "{}", Config::example_toml())?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Registers => {
            let registers = Registers::load_dir(&config.registers_dir)?;
            for def in registers.iter() {
                let indexed: Vec<&str> = def.indexed_fields().map(|f| f.name.as_str()).collect();
                writeln!(
                    out,
                    "{:<22} {:<6} prefix {:<5} parents [{}]  {} fields, indexed: {}",
                    def.name,
                    format!("{:?}", def.kind).to_lowercase(),
                    def.prefix,
                    def.parents.join(", "),
                    def.fields.len(),
                    indexed.join(", ")
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(command) => {
            keys_command(&config, command, clock.now(), out)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Generate {
            households,
            individuals,
            seed,
            out: dir,
        } => {
            let registers = Registers::load_dir(&config.registers_dir)?;
            let size = match (households, individuals) {
                (_, Some(count)) => PopulationSize::Individuals(count),
                (Some(count), None) => PopulationSize::Households(count),
                (None, None) => bail!("give --households or --individuals"),
            };
            let summary = generate(
                &registers,
                &GenerateOptions {
                    size,
                    seed,
                    out: dir,
                },
            )?;
            for file in summary.files {
                writeln!(
                    out,
                    "{:<22} {:>10} rows  {}",
                    file.register,
                    file.rows,
                    file.path.display()
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Conformance {
            target,
            token,
            sender_id,
            receiver_id,
            keys_dir,
            profile,
            callback_url,
            cases,
            conditions,
        } => {
            let cases = crate::conformance::load_dir(&cases).map_err(anyhow::Error::msg)?;
            let keys = keys_dir.as_deref().map(KeyStore::open).transpose()?;
            let signing = match &keys {
                Some(keys) => Some((
                    keys.signing_key()
                        .context("the keys folder holds no signing key")?,
                    profile,
                )),
                None => None,
            };
            let target_info = crate::conformance::Target {
                sender_id,
                receiver_id,
                signing,
                token,
                callback_url,
                conditions: conditions.into_iter().collect(),
            };
            let transport =
                crate::conformance::HttpTransport::new(&target).map_err(anyhow::Error::msg)?;
            let now = move || clock.now();
            let outcomes = crate::conformance::run(&cases, &target_info, &transport, &now).await;
            write!(out, "{}", crate::conformance::report(&outcomes))?;
            let failed = outcomes
                .iter()
                .any(|o| o.problems.as_ref().is_some_and(|p| !p.is_empty()));
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        _ => {}
    }

    // The gateway never starts without a signing key: check the keys before the database.
    let keys = match cli.command {
        Command::Serve { .. } => Some(open_serving_keys(&config, clock.now())?),
        _ => None,
    };
    let registry = open_registry(&config, clock.clone()).await?;
    match cli.command {
        Command::Serve { no_sample } => {
            let keys = keys.context("serve needs its keys")?;
            serve(&config, registry, keys, no_sample).await?
        }
        Command::Seed { .. } => {
            let outcome = seed_sample(&registry).await?;
            writeln!(
                out,
                "sample: {} created, {} updated, {} unchanged",
                outcome.created, outcome.updated, outcome.unchanged
            )?;
        }
        Command::Import(ImportCommand::Csv {
            register,
            file,
            errors,
            batch_size,
        }) => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let total = input.metadata().map(|m| m.len()).unwrap_or(0);
            let options = ImportOptions {
                register,
                batch_size: batch_size.unwrap_or(config.import_batch_size),
                errors_path: errors.unwrap_or_else(|| {
                    let mut name = file.clone().into_os_string();
                    name.push(".errors.csv");
                    PathBuf::from(name)
                }),
                author: Author {
                    actor: actor(None),
                    source: "csv-import".into(),
                    reason: Some(format!("import of {}", file.display())),
                },
            };
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {percent:>3}% {msg} [{elapsed_precise}, eta {eta}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = std::time::Instant::now();
            let report = import_csv(
                &registry,
                std::io::BufReader::new(input),
                &options,
                &mut |rows, bytes| {
                    bar.set_position(bytes);
                    bar.set_message(format!("{rows} rows"));
                },
            )
            .await?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            writeln!(
                out,
                "{} rows in {seconds:.1} s: {} created, {} updated, {} unchanged, {} rejected ({} change sets)",
                report.rows,
                report.created,
                report.updated,
                report.unchanged,
                report.rejected,
                report.batches
            )?;
            if let Some(path) = report.errors_path {
                writeln!(out, "rejected rows are listed in {}", path.display())?;
                return Ok(ExitCode::from(3));
            }
        }
        Command::Export(ExportCommand::Csv {
            register,
            fields,
            out: path,
        }) => {
            let rows = match path {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    export_csv(
                        &registry,
                        &register,
                        fields.as_deref(),
                        std::io::BufWriter::new(file),
                    )
                    .await?
                }
                None => export_csv(&registry, &register, fields.as_deref(), &mut *out).await?,
            };
            tracing::info!(rows, register, "exported");
        }
        Command::Show {
            id,
            as_of,
            label,
            json,
        } => {
            let instant = as_of.as_deref().map(parse_instant).transpose()?;
            let at = match (&instant, &label) {
                (Some(t), _) => At::Instant(*t),
                (None, Some(label)) => At::Label(label),
                (None, None) => At::Current,
            };
            let Some(view) = registry.show(&id, at).await? else {
                writeln!(out, "no record `{id}`{}", describe_at(at))?;
                return Ok(ExitCode::from(4));
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&view_json(&view))?)?;
            } else {
                print_view(out, registry.registers(), &view)?;
            }
        }
        Command::History { id, json } => {
            let Some(history) = registry.history(&id).await? else {
                writeln!(out, "no record `{id}`")?;
                return Ok(ExitCode::from(4));
            };
            if json {
                let value =
                    serde_json::json!({"versions": history.versions, "changes": history.changes});
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                for version in &history.versions {
                    let until = version
                        .valid_to
                        .map_or_else(|| "current".to_owned(), to_text);
                    writeln!(
                        out,
                        "version {}  {}  from {} until {}  change set {}",
                        version.version,
                        version.status.as_str(),
                        to_text(version.valid_from),
                        until,
                        version.change_set_id
                    )?;
                    if version.version == 1 {
                        writeln!(out, "  created with {} fields", version.fields.len())?;
                    }
                    for change in history
                        .changes
                        .iter()
                        .filter(|c| c.version == version.version)
                    {
                        writeln!(
                            out,
                            "  {}: {} -> {}  (by {} at {})",
                            change.field,
                            show_value(&change.old),
                            show_value(&change.new),
                            change.actor,
                            to_text(change.at)
                        )?;
                    }
                }
            }
        }
        Command::Update {
            id,
            assignments,
            status,
            parent,
            reason,
            actor: who,
        } => {
            let Some(current) = registry.find(&id, At::Current).await? else {
                writeln!(out, "no record `{id}`")?;
                return Ok(ExitCode::from(4));
            };
            let def = registry
                .registers()
                .get(&current.register)
                .context("the record's register is not defined")?;
            let mut fields = Fields::new();
            for assignment in &assignments {
                let Some((name, value)) = assignment.split_once('=') else {
                    bail!("`{assignment}` is not FIELD=VALUE");
                };
                let Some(field) = def.field(name) else {
                    bail!("register `{}` has no field `{name}`", def.name);
                };
                let value = if value.is_empty() {
                    serde_json::Value::Null
                } else {
                    parse_cell(field, value).map_err(|p| anyhow::anyhow!("{p}"))?
                };
                fields.insert(name.to_owned(), value);
            }
            let status = status
                .map(|s| {
                    RecordStatus::parse(&s)
                        .with_context(|| format!("`{s}` is not ACTIVE, INACTIVE or ARCHIVED"))
                })
                .transpose()?;
            let change = Change::Update {
                id: current.functional_id.clone(),
                version: None,
                fields,
                status,
                parent,
            };
            let author = Author {
                actor: actor(who),
                source: "cli".into(),
                reason,
            };
            match registry.submit(&author, vec![change]).await {
                Ok(request) if request.status == RequestStatus::Approved => writeln!(
                    out,
                    "{}: version {} written",
                    current.functional_id,
                    current.version + 1
                )?,
                Ok(request) => writeln!(
                    out,
                    "{}: change request {} is pending approval",
                    current.functional_id, request.id
                )?,
                Err(RequestError::Invalid(problems))
                    if problems.iter().all(|p| p.code == ProblemCode::Unchanged) =>
                {
                    writeln!(out, "{}: nothing changed", current.functional_id)?
                }
                Err(RequestError::Invalid(problems) | RequestError::Conflict(problems)) => {
                    for problem in &problems {
                        // The problems name `changes[0].field`; there is only one change here.
                        let field = problem
                            .field
                            .strip_prefix("changes[0].")
                            .unwrap_or(&problem.field);
                        writeln!(out, "refused: {field}: {}", problem.message)?;
                    }
                    return Ok(ExitCode::from(3));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Command::Label {
            label,
            register,
            ids,
        } => {
            let labelled = match register {
                Some(register) => {
                    if registry.registers().get(&register).is_none() {
                        bail!("no register `{register}`");
                    }
                    registry
                        .label_register(&label, &register, &actor(None))
                        .await?
                }
                None => {
                    let (labelled, missing) = registry.label(&label, &ids, &actor(None)).await?;
                    if !missing.is_empty() {
                        bail!(
                            "no record(s) {}; nothing labelled was undone ({labelled} labelled)",
                            missing.join(", ")
                        );
                    }
                    labelled
                }
            };
            writeln!(out, "{labelled} record(s) labelled `{label}`")?;
        }
        Command::Audit(AuditCommand::Verify) => match registry.verify_audit().await? {
            Ok(entries) => writeln!(out, "audit chain intact: {entries} entries")?,
            Err(broken) => {
                writeln!(out, "audit chain BROKEN: {broken}")?;
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Partner(command) => {
            let partners = open_partners(&config, &registry)?;
            return partner_command(&partners, command, out).await;
        }
        Command::User(command) => return run_user(command, &registry, clock, out).await,
        Command::Jobs { delivery, limit } => {
            let jobs = registry
                .store()
                .list_dci_jobs(delivery.as_deref(), limit)
                .await?;
            for job in jobs {
                writeln!(
                    out,
                    "{}  {:<10} {:<24} {:<4} {:<9} attempts {:<3} {}  {}",
                    job.job_id,
                    job.kind,
                    job.sender_id,
                    job.status,
                    job.delivery,
                    job.attempts,
                    to_text(job.created_at),
                    job.last_error.unwrap_or_default()
                )?;
            }
        }
        Command::ConfigExample
        | Command::Registers
        | Command::Generate { .. }
        | Command::Keys(_)
        | Command::Conformance { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// The partner registry over the registry's store.
pub fn open_partners(config: &Config, registry: &Registry) -> anyhow::Result<Partners> {
    let remote = RemoteJwks::new(
        chrono::Duration::seconds(i64::from(config.partner_jwks_ttl_seconds)),
        std::time::Duration::from_secs(5),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Partners::new(
        registry.store().clone(),
        registry.clock(),
        remote,
    ))
}

async fn set_partner_enabled(
    partners: &Partners,
    sender_id: &str,
    enable: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match partners.set_enabled(sender_id, enable, &actor(None)).await {
        Ok(partner) => {
            let state = if enable { "enabled" } else { "disabled" };
            writeln!(out, "partner {} {state}", partner.sender_id)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(PartnerError::NotFound(id)) => {
            writeln!(out, "no partner `{id}`")?;
            Ok(ExitCode::from(4))
        }
        Err(other) => Err(other.into()),
    }
}

fn read_file(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

async fn partner_command(
    partners: &Partners,
    command: PartnerCommand,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match command {
        PartnerCommand::Add {
            sender_id,
            client_id,
            scopes,
            profile,
            algorithms,
            jwks,
            jwks_url,
            callback_prefixes,
            encryption_jwk,
            require_encryption,
            secret_stdin,
        } => {
            let client_secret = if secret_stdin {
                let mut secret = String::new();
                std::io::stdin()
                    .read_line(&mut secret)
                    .context("cannot read the secret from stdin")?;
                Some(secret.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let new = NewPartner {
                sender_id,
                client_id,
                scopes,
                signature_profile: Some(profile),
                algorithms,
                jwks: jwks.as_deref().map(read_file).transpose()?,
                jwks_url,
                callback_prefixes,
                encryption_key: encryption_jwk.as_deref().map(read_file).transpose()?,
                requires_encryption: require_encryption,
                client_secret,
            };
            match partners.add(new, &actor(None)).await {
                Ok((partner, secret)) => {
                    writeln!(
                        out,
                        "partner {} added (client id {}, scopes {}, profile {})",
                        partner.sender_id,
                        partner.client_id,
                        partner.definition.scopes.join(" "),
                        partner.definition.signature_profile
                    )?;
                    if let Some(secret) = secret {
                        writeln!(out, "client secret (shown once; store it now): {secret}")?;
                    }
                }
                Err(PartnerError::Invalid(problems)) => {
                    for problem in problems {
                        writeln!(out, "{problem}")?;
                    }
                    return Ok(ExitCode::from(3));
                }
                Err(other) => return Err(other.into()),
            }
        }
        PartnerCommand::List => {
            for partner in partners.list().await? {
                let d = &partner.definition;
                let keys = match &d.keys {
                    PartnerKeys::Jwks(jwks) => format!("{} key(s) inline", jwks.keys.len()),
                    PartnerKeys::JwksUrl(url) => format!("keys at {url}"),
                };
                writeln!(
                    out,
                    "{:<30} {:<8} client {:<20} profile {:<13} algs [{}] {keys} scopes [{}]{}",
                    partner.sender_id,
                    if partner.enabled {
                        "enabled"
                    } else {
                        "DISABLED"
                    },
                    partner.client_id,
                    d.signature_profile,
                    d.algorithms
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    d.scopes.join(" "),
                    if d.requires_encryption {
                        " encrypted"
                    } else {
                        ""
                    }
                )?;
            }
        }
        PartnerCommand::Disable { sender_id } => {
            return set_partner_enabled(partners, &sender_id, false, out).await;
        }
        PartnerCommand::Enable { sender_id } => {
            return set_partner_enabled(partners, &sender_id, true, out).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the keys for `nsr serve`: a fresh install (no keys directory at all) gets one EdDSA
/// signing key and one ECDH-ES+A256KW encryption key; an existing directory without a signing
/// key is refused.
fn open_serving_keys(config: &Config, now: DateTime<Utc>) -> anyhow::Result<KeyStore> {
    let (keys, created) = KeyStore::open_or_init(&config.keys_dir, now)?;
    for info in &created {
        tracing::info!(
            kid = %info.kid,
            alg = %info.alg,
            key_use = %info.key_use,
            dir = %config.keys_dir.display(),
            "no keys directory: generated a key"
        );
    }
    if let Some(key) = keys.signing_key() {
        tracing::info!(kid = key.kid(), alg = %key.alg(), "signing key");
    }
    Ok(keys)
}

fn print_key(out: &mut dyn Write, info: &KeyInfo) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<43}  {:<14}  {}  {}  {}",
        info.kid,
        info.alg,
        info.key_use,
        to_text(info.created),
        info.status.as_str()
    )
}

fn keys_command(
    config: &Config,
    command: KeysCommand,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut keys = KeyStore::open_or_create_dir(&config.keys_dir)?;
    match command {
        KeysCommand::Generate { alg, key_use } => {
            let info = keys.generate_for(alg, key_use.unwrap_or(alg.key_use()), now)?;
            writeln!(
                out,
                "generated {} {} key {} ({})",
                info.alg,
                info.key_use,
                info.kid,
                info.path.display()
            )?;
        }
        KeysCommand::Rotate { key_use } => {
            let previous = keys.list().into_iter().find(|k| k.key_use == key_use);
            let info = keys.rotate(key_use, now)?;
            writeln!(
                out,
                "active {} key is now {} ({}); {} stays published",
                info.key_use,
                info.kid,
                info.alg,
                previous.map_or_else(|| "nothing".to_owned(), |p| p.kid)
            )?;
        }
        KeysCommand::List { json } => {
            let list = keys.list();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else if list.is_empty() {
                writeln!(out, "no keys in {}", config.keys_dir.display())?;
            } else {
                writeln!(
                    out,
                    "{:<43}  {:<14}  use  {:<27}  status",
                    "kid", "alg", "created"
                )?;
                for info in &list {
                    print_key(out, info)?;
                }
            }
        }
    }
    Ok(())
}

fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn describe_at(at: At<'_>) -> String {
    match at {
        At::Current => String::new(),
        At::Instant(t) => format!(" as of {}", to_text(t)),
        At::Label(label) => format!(" labelled `{label}`"),
    }
}

fn show_value(value: &serde_json::Value) -> String {
    if value.is_null() {
        "(absent)".to_owned()
    } else {
        format_cell(value)
    }
}

fn record_json(record: &Record) -> serde_json::Value {
    serde_json::to_value(record).unwrap_or_default()
}

fn view_json(view: &RecordView) -> serde_json::Value {
    serde_json::json!({
        "record": record_json(&view.record),
        "household": view.household.as_ref().map(record_json),
        "members": view.members.iter().map(record_json).collect::<Vec<_>>(),
        "supporting": view.supporting.iter().map(record_json).collect::<Vec<_>>(),
    })
}

fn print_record(
    out: &mut dyn Write,
    registers: &Registers,
    record: &Record,
    indent: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{indent}{} ({}, version {}, {}, valid from {})",
        record.functional_id,
        record.register,
        record.version,
        record.status.as_str(),
        to_text(record.valid_from)
    )?;
    if let Some(parent) = &record.parent_functional_id {
        writeln!(out, "{indent}  parent: {parent}")?;
    }
    // Fields in definition order; any field no longer defined comes last.
    let order: Vec<&str> = registers
        .get(&record.register)
        .map(|d| d.fields.iter().map(|f| f.name.as_str()).collect())
        .unwrap_or_default();
    let mut names: Vec<&String> = record.fields.keys().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
    for name in names {
        if let Some(value) = record.fields.get(name) {
            writeln!(out, "{indent}  {name}: {}", format_cell(value))?;
        }
    }
    Ok(())
}

fn print_view(
    out: &mut dyn Write,
    registers: &Registers,
    view: &RecordView,
) -> std::io::Result<()> {
    print_record(out, registers, &view.record, "")?;
    if let Some(household) = view.household.as_ref().filter(|h| h.id != view.record.id) {
        writeln!(out, "\nHousehold:")?;
        print_record(out, registers, household, "  ")?;
    }
    if !view.members.is_empty() {
        writeln!(out, "\nMembers ({}):", view.members.len())?;
        for member in &view.members {
            let field = |name: &str| member.fields.get(name).map(format_cell).unwrap_or_default();
            writeln!(
                out,
                "  {}  {}  {}  {}  {}",
                member.functional_id,
                field("full_name"),
                field("relationship_to_head"),
                field("gender"),
                field("birth_date")
            )?;
        }
    }
    if !view.supporting.is_empty() {
        writeln!(out, "\nSupporting rows ({}):", view.supporting.len())?;
        for row in &view.supporting {
            print_record(out, registers, row, "  ")?;
        }
    }
    Ok(())
}

async fn serve(
    config: &Config,
    registry: Registry,
    keys: KeyStore,
    no_sample: bool,
) -> anyhow::Result<()> {
    let store = registry.store().clone();
    if store.backend() == Backend::Sqlite && !no_sample && store.audit_head().await? == 0 {
        let outcome = seed_sample(&registry).await?;
        tracing::info!(
            records = outcome.created,
            "new embedded database: loaded the NSR sample"
        );
    }
    let keys = Arc::new(keys);
    let (gateway, tokens) = open_gateway(config, &registry, keys.clone()).await?;
    // One partner registry for the admin API and the gateway, so that a change made through
    // either is seen at once by both (the registry caches partners briefly).
    let partners = gateway.partners().clone();
    // A partner allowed to send unsigned messages is a standing risk: say so at every start.
    for partner in partners.list().await? {
        if partner.enabled && partner.definition.signature_profile == SignatureProfile::None {
            tracing::warn!(
                sender_id = %partner.sender_id,
                "partner registered with signature profile `none`: its messages are accepted unsigned (our replies to it are still signed)"
            );
        }
    }
    let key = crate::auth::load_token_key(config)?;
    let auth = Auth::new(
        store,
        registry.clock(),
        key,
        AuthSettings::from_config(config)?,
    );
    let state = AppState {
        registry,
        metrics: Arc::new(Metrics::default()),
        keys,
        auth: Arc::new(auth),
        partners,
        dci: gateway.clone(),
        tokens,
    };
    // The job worker: async DCI answers and their callbacks, until shutdown.
    let worker = Worker::new(gateway).map_err(anyhow::Error::msg)?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(std::time::Duration::from_secs(1), async move {
        let _ = worker_stopped.await;
    }));
    let (stop_anchoring, anchoring_stopped) = tokio::sync::oneshot::channel::<()>();
    let anchoring = tokio::spawn(anchor_disclosures_every(
        state.registry.clone(),
        std::time::Duration::from_secs(u64::from(config.disclosure_anchor_seconds.max(1))),
        async move {
            let _ = anchoring_stopped.await;
        },
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "nsr serving");
    // The peer address feeds the per-address login throttle.
    axum::serve(
        listener,
        crate::http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    let _ = stop_worker.send(());
    let _ = worker.await;
    let _ = stop_anchoring.send(());
    let _ = anchoring.await;
    Ok(())
}

/// Anchors the disclosure chain in the registry's audit chain (`registry::audit`) at start,
/// every `every`, and once more at shutdown, after the last reply was sent.
async fn anchor_disclosures_every(
    registry: Registry,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut anchored = 0;
    loop {
        match registry.anchor_disclosures(anchored).await {
            Ok(seq) => anchored = seq,
            Err(error) => tracing::warn!(%error, "the disclosure chain could not be anchored"),
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    if let Err(error) = registry.anchor_disclosures(anchored).await {
        tracing::warn!(%error, "the disclosure chain could not be anchored at shutdown");
    }
}

/// The DCI gateway over `registry`: the mappings (checked against the registers; a bad one
/// stops nsr naming file and key), the indexes they need, envelope intake with the configured
/// policy, partner tokens signed with our active key.
pub async fn open_gateway(
    config: &Config,
    registry: &Registry,
    keys: Arc<KeyStore>,
) -> anyhow::Result<(Arc<Gateway>, Tokens)> {
    let mapping = Mapping::load_dir(&config.mappings_dir, registry.registers())?;
    registry
        .store()
        .sync_query_indexes(&mapping.query_indexes())
        .await?;
    let policies =
        crate::consent::PolicySet::load_dir(&config.consent_policies_dir, registry.registers())?;
    if policies.is_empty() {
        tracing::warn!(
            dir = %config.consent_policies_dir.display(),
            "no consent policy: the DCI gateway shares no registry data"
        );
    }
    if crate::consent::audit_policy_changes(
        registry.store().as_ref(),
        &policies,
        "nsr",
        registry.clock().now(),
    )
    .await?
    {
        tracing::info!(
            policies = policies.policies().len(),
            "consent policies changed since the last start: audited"
        );
    }
    let release = Arc::new(crate::dci::disclosure::Release::new(&policies, &mapping));
    let partners = open_partners(config, registry)?;
    let seconds = |s: u32| chrono::Duration::seconds(i64::from(s));
    let envelopes = Envelopes::new(
        partners.clone(),
        keys.clone(),
        registry.store().clone(),
        registry.clock().clone(),
        config.gateway_sender_id.clone(),
        EnvelopePolicy {
            skew: seconds(config.signature_skew_seconds),
            signature_validity: seconds(config.signature_validity_seconds),
            replay_window: seconds(config.replay_window_seconds),
        },
    );
    let tokens = Tokens::new(
        keys,
        partners.clone(),
        registry.clock().clone(),
        config.gateway_sender_id.clone(),
        seconds(config.partner_token_ttl_seconds),
    );
    let policy = GatewayPolicy {
        max_batch: config.dci_max_batch,
        max_page_size: config.dci_max_page_size,
        callback_deadline: seconds(config.callback_deadline_seconds),
        retry_initial: seconds(config.callback_retry_initial_seconds),
        retry_max: seconds(config.callback_retry_max_seconds),
        callback_timeout: std::time::Duration::from_secs(u64::from(
            config.callback_timeout_seconds,
        )),
        lease: seconds(config.job_lease_seconds),
    };
    let gateway = Gateway::new(
        registry.clone(),
        partners,
        envelopes,
        Arc::new(mapping),
        release,
        policy,
        config.gateway_sender_id.clone(),
    );
    Ok((Arc::new(gateway), tokens))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// `nsr user …`.
async fn run_user(
    command: UserCommand,
    registry: &Registry,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let users = Users::new(registry.store().clone(), clock);
    let result = match command {
        UserCommand::Add { name, roles } => {
            let password = read_password()?;
            users
                .add(&actor(None), &name, &password, &roles)
                .await
                .map(|user| {
                    format!(
                        "user `{}` added with roles {}",
                        user.name,
                        user.roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        }
        UserCommand::Disable { name } => users
            .disable(&actor(None), &name)
            .await
            .map(|user| format!("user `{}` disabled", user.name)),
        UserCommand::List => {
            for user in users.list().await? {
                writeln!(
                    out,
                    "{:<24} {:<40} {}",
                    user.name,
                    user.roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    if user.disabled { "disabled" } else { "active" }
                )?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match result {
        Ok(message) => {
            writeln!(out, "{message}")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(UserError::Invalid(problems)) => {
            for (field, message) in problems {
                writeln!(out, "refused: {field}: {message}")?;
            }
            Ok(ExitCode::from(3))
        }
        Err(UserError::NotFound(name)) => {
            writeln!(out, "no user `{name}`")?;
            Ok(ExitCode::from(4))
        }
        Err(error @ UserError::Exists(_)) => {
            writeln!(out, "refused: {error}")?;
            Ok(ExitCode::from(3))
        }
        Err(error) => Err(error.into()),
    }
}

/// A new password: prompted twice (not echoed) on a terminal, else the first line of standard
/// input.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password (again): ")?;
        if first != again {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
