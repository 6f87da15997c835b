#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]
//! DCI gateway benchmark: a generated population (default 1,000,000 individuals) imported on
//! SQLite and (when BENCH_DATABASE_URL or TEST_DATABASE_URL is set) PostgreSQL, then nsr's
//! router served on 127.0.0.1 and loaded over real HTTP by 64 connections, in one run:
//!
//! - baseline: `GET /baseline/individual/{national id}`, one indexed lookup returning the
//!   record as JSON, unsigned (a route of this benchmark only, beside nsr's routes);
//! - signed sync search by national id: `POST /registry/sync/search` with a bearer token and a
//!   JWS-signed envelope (each with its own message_id), answered with a signed envelope;
//! - expression search with two indexed predicates (district and birth date) returning a page
//!   of 100 with its total count, at `--expression-connections` (default 4).
//!
//! It also times, on one thread, nsr's check of one signed request and its signing of the
//! reply (and the Ed25519 operations inside them), and prints them beside what a signed search
//! may cost at 0.6× the baseline's requests/s.
//!
//! ```text
//! cargo bench --bench dci -- [--individuals N] [--seconds 10] [--runs 3] [--pool 8]
//!     [--connections 64] [--expression-connections 4] [--sqlite-only | --postgres-only]
//!     [--work DIR]
//! ```
//!
//! `--work DIR` keeps the generated population and the imported databases in DIR (PostgreSQL:
//! database `nsr_dci_bench_kept`) and reuses them on the next run with the same DIR, to profile
//! without importing again; without it everything is made afresh and removed.
//!
//! `RUST_LOG` (e.g. `sqlx=debug`) logs to stderr while it runs.
//!
//! Each figure is the median of `--runs` runs. The server runs on its own 2-thread runtime,
//! the load generator on another: both share the machine's cores, as a second process would.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use chrono::Duration as ChronoDuration;
use nsr::clock::{Clock, SystemClock};
use nsr::config::Config;
use nsr::crypto::{
    Alg, Jwks, KeyStore, SignatureProfile, VerifyPolicy, seal_envelope, sign_envelope,
    signing_input, verify_envelope,
};
use nsr::http::{AppState, Metrics, router};
use nsr::ingest::csv_import::{ImportOptions, import_csv};
use nsr::ingest::generate::{GenerateOptions, PopulationSize, generate};
use nsr::partners::{NewPartner, Partners, RemoteJwks};
use nsr::registry::register::Registers;
use nsr::registry::{Author, Registry};
use nsr::store::{self, Store};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    individuals: u64,
    seconds: u64,
    runs: usize,
    connections: usize,
    expression_connections: usize,
    sqlite_only: bool,
    postgres_only: bool,
    pool: u32,
    work: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args {
        individuals: 1_000_000,
        seconds: 10,
        runs: 3,
        connections: 64,
        expression_connections: 4,
        sqlite_only: false,
        postgres_only: false,
        pool: 8,
        work: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--individuals" => args.individuals = number(),
            "--seconds" => args.seconds = number(),
            "--runs" => args.runs = number() as usize,
            "--connections" => args.connections = number() as usize,
            "--expression-connections" => args.expression_connections = number() as usize,
            "--sqlite-only" => args.sqlite_only = true,
            "--postgres-only" => args.postgres_only = true,
            "--pool" => args.pool = number() as u32,
            "--work" => {
                args.work = Some(PathBuf::from(
                    it.next()
                        .unwrap_or_else(|| panic!("--work needs a directory")),
                ))
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

const SENDER: &str = "bench.partner.example.org";
const SECRET: &str = "benchmark partner secret";

/// Up to `count` national ids, shuffled, of generated individuals whose consent covers DCI
/// sharing and who set no restriction: under either benchmark policy a search finds them, so
/// both policies answer the same requests with a record.
fn national_ids(population: &Path, count: usize) -> Vec<String> {
    let mut consented = std::collections::HashSet::new();
    let mut reader = csv::Reader::from_path(population.join("consent.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (parent, captured, scope, restrictions) = (
        column("parent_id"),
        column("consent_captured"),
        column("consent_scope"),
        column("data_sharing_restrictions"),
    );
    for row in reader.records() {
        let row = row.unwrap();
        let field = |i: usize| row.get(i).unwrap_or_default();
        if field(captured) == "true"
            && field(scope).contains("\"dci_sharing\"")
            && field(restrictions).is_empty()
        {
            consented.insert(field(parent).to_owned());
        }
    }
    let mut reader = csv::Reader::from_path(population.join("individual.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let id_column = headers.iter().position(|h| h == "id").unwrap();
    let column = headers.iter().position(|h| h == "foundational_id").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::with_capacity(count);
    let mut seen = 0;
    for row in reader.records() {
        let row = row.unwrap();
        let id = row.get(column).unwrap_or_default();
        if id.is_empty() || !consented.contains(row.get(id_column).unwrap_or_default()) {
            continue;
        }
        if out.len() < count {
            out.push(id.to_owned());
        } else {
            let slot = rng.random_range(0..=seen);
            if slot < count {
                out[slot] = id.to_owned();
            }
        }
        seen += 1;
    }
    out.shuffle(&mut rng);
    out
}

/// One load run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    /// This process's CPU time (user + system) per answered request, in µs: the server and
    /// the load generator, and SQLite, but not a PostgreSQL server's own processes. It says
    /// what a request costs, where req/s also says how much of the cores the run was given.
    cpu_us: f64,
    /// Of `cpu_us`, the load generator's threads' share.
    load_cpu_us: f64,
    errors: usize,
}

/// The load generator's runtime threads are named so, to tell their CPU time from the server's.
const LOAD_THREAD: &str = "bench-load";

/// CPU time (user + system) from a /proc `stat` file: its 14th and 15th fields, in USER_HZ
/// ticks (100 a second on Linux, whatever the kernel's own tick), and the thread's name.
fn stat_cpu(path: &Path) -> Option<(String, Duration)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name (2nd field) is in parentheses and may hold spaces: count the rest after it.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu = Duration::from_millis((ticks(14)? + ticks(15)?) * 10);
    Some((stat[open + 1..close].to_owned(), cpu))
}

/// This process's CPU time so far, and the load generator threads' part of it.
fn cpu_time() -> (Duration, Duration) {
    let (_, all) = stat_cpu(Path::new("/proc/self/stat")).unwrap();
    let mut load = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Some((name, cpu)) = stat_cpu(&task.path().join("stat"))
            && name == LOAD_THREAD
        {
            load += cpu;
        }
    }
    (all, load)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The median of each figure over runs.
fn median(runs: &[Run]) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Run {
        rps: pick(|r| r.rps),
        p50: pick(|r| r.p50),
        p95: pick(|r| r.p95),
        p99: pick(|r| r.p99),
        cpu_us: pick(|r| r.cpu_us),
        load_cpu_us: pick(|r| r.load_cpu_us),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// A request to send: method, path, headers, body.
#[derive(Clone)]
struct Request {
    post: bool,
    path: String,
    body: Option<Vec<u8>>,
}

/// `connections` clients, each on its own connection, sending `requests` (taken in turn)
/// for `seconds`.
async fn load(
    base: &str,
    token: &str,
    requests: Arc<Vec<Request>>,
    connections: usize,
    seconds: u64,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let cpu_before = cpu_time();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (base, token, requests, next) = (
            base.to_owned(),
            token.to_owned(),
            requests.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    break;
                };
                let url = format!("{base}{}", request.path);
                let t = Instant::now();
                let builder = if request.post {
                    client
                        .post(url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(request.body.clone().unwrap_or_default())
                } else {
                    client.get(url)
                };
                match builder.send().await {
                    Ok(response) => {
                        let ok = response.status().as_u16() == 200;
                        let _ = response.bytes().await;
                        latencies.push(t.elapsed());
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .min(seconds as f64)
        .max(0.001);
    let elapsed = if next.load(Ordering::Relaxed) >= requests.len() {
        // Ran out of prepared requests before the time was up.
        started.elapsed().as_secs_f64()
    } else {
        elapsed
    };
    let cpu_after = cpu_time();
    let per_request = |spent: Duration| spent.as_secs_f64() * 1e6 / all.len().max(1) as f64;
    let cpu_us = per_request(cpu_after.0.saturating_sub(cpu_before.0));
    let load_cpu_us = per_request(cpu_after.1.saturating_sub(cpu_before.1));
    all.sort();
    Run {
        cpu_us,
        load_cpu_us,
        rps: all.len() as f64 / elapsed,
        p50: percentile(&all, 0.5),
        p95: percentile(&all, 0.95),
        p99: percentile(&all, 0.99),
        errors,
    }
}

/// Signed sync-search envelopes, each with its own message id.
fn signed_searches(
    keys: &KeyStore,
    ids: &[String],
    count: usize,
    tag: &str,
    criteria: &dyn Fn(usize, &str) -> Value,
) -> Vec<Request> {
    let key = keys.signing_key().unwrap();
    let now = SystemClock.now();
    (0..count)
        .map(|i| {
            let national = &ids[i % ids.len()];
            let header = json!({
                "version": "1.0.0", "message_id": format!("{tag}-{}-{i}", now.timestamp_micros()), "message_ts": now.to_rfc3339(),
                "action": "search", "sender_id": SENDER, "receiver_id": "nsr.bench", "total_count": 1,
            });
            let message = json!({"transaction_id": format!("{tag}-t{i}"), "search_request": [{
                "reference_id": "r-1", "timestamp": now.to_rfc3339(), "search_criteria": criteria(i, national),
            }]});
            let signature = sign_envelope(SignatureProfile::Jws, key, SENDER, &header, &message, now, ChronoDuration::minutes(10)).unwrap();
            Request {
                post: true,
                path: "/registry/sync/search".into(),
                body: Some(serde_json::to_vec(&json!({"signature": signature, "header": header, "message": message})).unwrap()),
            }
        })
        .collect()
}

/// A search by national id, for social protection (the purpose both benchmark policies grant).
fn by_national_id(_: usize, national: &str) -> Value {
    json!({
        "query_type": "idtype-value",
        "query": {"type": "UIN", "value": national},
        "consent": {"purpose": "social_protection"},
    })
}

/// Two indexed predicates (district, birth date), a page of 100 members with the total count.
fn expression_criteria(i: usize, _national: &str) -> Value {
    let district = 40 + (i * 7) % 60;
    let born = 1960 + (i * 13) % 40;
    json!({
        "query_type": "expression",
        "response_entity": "Member",
        "query": {"value": {"expression": {"collection": "Member", "query": {"$and": [
            {"admin_area_code": {"$eq": format!("D{district:03}")}},
            {"birth_date": {"$gte": format!("{born}-01-01")}},
        ]}}}},
        "pagination": {"page_size": 100, "page_number": 1},
        "consent": {"purpose": "social_protection"},
    })
}

/// The benchmark's baseline: one indexed lookup, the record as JSON, unsigned.
async fn baseline(
    State(registry): State<Registry>,
    UrlPath(national): UrlPath<String>,
) -> Json<Value> {
    let field = registry
        .registers()
        .get("individual")
        .unwrap()
        .field("foundational_id")
        .unwrap()
        .clone();
    let records = registry
        .store()
        .records_by_field("individual", &field, std::slice::from_ref(&national))
        .await
        .unwrap();
    Json(serde_json::to_value(&records).unwrap())
}

struct Figures {
    backend: &'static str,
    baseline: Run,
    /// Signed search under the all-fields legal-basis policy.
    signed: Run,
    /// The same under the realistic consent-based policy.
    consent: Run,
    expression: Run,
    /// What verifying one signed search request and signing its reply cost alone.
    signatures: SignatureCost,
}

/// µs of CPU, single-threaded, median of 5 batches.
#[derive(Clone, Copy)]
struct SignatureCost {
    verify_us: f64,
    sign_us: f64,
    /// The Ed25519 operations alone, on the canonical request and reply.
    ed25519_verify_us: f64,
    ed25519_sign_us: f64,
}

/// Times nsr's own check of a signed request (`verify_envelope`: canonical JSON, Ed25519) and
/// its signing of a reply of the same shape (`seal_envelope`), one at a time. These two are
/// work a signed search must do and the unsigned baseline does not.
fn signature_cost(keys: &KeyStore, request: &[u8], reply: &Value) -> SignatureCost {
    let request: Value = serde_json::from_slice(request).unwrap();
    let key = keys.signing_key().unwrap();
    let jwks = [key.public_jwk().clone()];
    let policy = VerifyPolicy::default();
    let now = SystemClock.now();
    let time = |work: &dyn Fn()| {
        let mut batches: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..2_000 {
                    work();
                }
                started.elapsed().as_secs_f64() * 1e6 / 2_000.0
            })
            .collect();
        batches.sort_by(f64::total_cmp);
        batches[2]
    };
    let verify_us = time(&|| {
        let signature = request["signature"].as_str();
        verify_envelope(
            SignatureProfile::Jws,
            signature,
            &request["header"],
            &request["message"],
            &jwks,
            &policy,
            now,
        )
        .unwrap();
    });
    let sign_us = time(&|| {
        seal_envelope(
            SignatureProfile::Jws,
            key,
            "nsr.bench",
            &reply["header"],
            &reply["message"],
            now,
            ChronoDuration::minutes(10),
        )
        .unwrap();
    });
    let request_input = signing_input(&request["header"], &request["message"]);
    let request_signature = key.sign(&request_input).unwrap();
    let ed25519_verify_us = time(&|| {
        assert!(
            key.public_jwk()
                .verify_signature(Alg::EdDsa, &request_input, &request_signature)
        );
    });
    let reply_input = signing_input(&reply["header"], &reply["message"]);
    let ed25519_sign_us = time(&|| {
        key.sign(&reply_input).unwrap();
    });
    SignatureCost {
        verify_us,
        sign_us,
        ed25519_verify_us,
        ed25519_sign_us,
    }
}

async fn import(registry: &Registry, dir: &Path, backend: &str, reuse: bool) {
    let done = dir.join(format!("{backend}.imported"));
    if reuse && done.exists() {
        eprintln!("{backend}: reusing the imported database");
        // As after an import: a previous run's WAL is copied into the database file.
        registry.store().refresh_statistics().await.unwrap();
        return;
    }
    let started = Instant::now();
    for register in [
        "household",
        "individual",
        "poverty_score",
        "disability",
        "consent",
    ] {
        let file = std::fs::File::open(dir.join(format!("{register}.csv"))).unwrap();
        let options = ImportOptions {
            register: register.into(),
            batch_size: 5000,
            errors_path: dir.join(format!("{backend}-{register}.errors.csv")),
            author: Author {
                actor: "bench".into(),
                source: "csv-import".into(),
                reason: None,
            },
        };
        let report = import_csv(
            registry,
            std::io::BufReader::new(file),
            &options,
            &mut |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(report.rejected, 0);
    }
    registry.store().refresh_statistics().await.unwrap();
    eprintln!(
        "{backend}: imported in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if reuse {
        std::fs::write(done, "").unwrap();
    }
}

fn run_backend(
    backend: &'static str,
    url: &str,
    registers: &Registers,
    dir: &Path,
    ids: &[String],
    args: &Args,
) -> Figures {
    // The server: its own runtime with two workers, as `nsr serve` would have on this machine.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (bases, partner_keys) = server_runtime.block_on(async {
        let store: Arc<dyn Store> = store::open(url, args.pool).await.unwrap();
        store.sync_field_indexes(registers).await.unwrap();
        let registry = Registry::new(
            store.clone(),
            Arc::new(registers.clone()),
            Arc::new(SystemClock),
        );
        import(&registry, dir, backend, args.work.is_some()).await;
        let now = SystemClock.now();
        // With --work the keys are kept too: the partner registered in the kept database
        // signs with the same key on the next run.
        let key_dir = match &args.work {
            Some(kept) => kept.join(format!("{backend}-keys")),
            None => work.path().to_owned(),
        };
        let (keys, _) = KeyStore::open_or_init(&key_dir.join("keys"), now).unwrap();
        let mut partner_keys = KeyStore::open_or_create_dir(&key_dir.join("partner")).unwrap();
        if partner_keys.signing_key().is_none() {
            partner_keys.generate(Alg::EdDsa, now).unwrap();
        }
        let partners = Partners::new(
            store.clone(),
            Arc::new(SystemClock),
            RemoteJwks::new(ChronoDuration::minutes(5), Duration::from_secs(5)).unwrap(),
        );
        let added = partners
            .add(
                NewPartner {
                    sender_id: SENDER.into(),
                    client_id: "bench".into(),
                    scopes: vec!["registry.search".into()],
                    signature_profile: Some(SignatureProfile::Jws),
                    algorithms: vec![Alg::EdDsa],
                    jwks: Some(
                        serde_json::to_string(&Jwks {
                            keys: vec![partner_keys.signing_key().unwrap().public_jwk().clone()],
                        })
                        .unwrap(),
                    ),
                    client_secret: Some(SECRET.into()),
                    ..NewPartner::default()
                },
                "bench",
            )
            .await;
        match added {
            Err(nsr::partners::PartnerError::Exists(_)) if args.work.is_some() => {}
            other => other.map(|_| ()).unwrap(),
        }
        let keys = Arc::new(keys);
        // Two servers over the same registry, differing only in their consent policy: all
        // fields on a legal basis (issue 5's figures, and the comparison for consent), and the
        // realistic consent-based policy. Both are the shipped files, for this partner.
        let policy_dir = |name: &str, shipped: &str| {
            let folder = work.path().join(name);
            std::fs::create_dir_all(&folder).unwrap();
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("consent-policies")
                    .join(shipped),
            )
            .unwrap();
            assert!(
                text.contains("spmis.example.org"),
                "{shipped} names another partner"
            );
            std::fs::write(
                folder.join("policy.yaml"),
                text.replace("spmis.example.org", SENDER),
            )
            .unwrap();
            folder
        };
        let mut bases = Vec::new();
        for policies in [
            policy_dir(
                "all-fields",
                "examples/all-fields-legal-basis/all-fields.yaml",
            ),
            policy_dir("consent", "spmis-targeting.yaml"),
        ] {
            let config = Config {
                mappings_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings")),
                consent_policies_dir: policies,
                gateway_sender_id: "nsr.bench".into(),
                ..Config::default()
            };
            let (dci, tokens) = nsr::cli::open_gateway(&config, &registry, keys.clone())
                .await
                .unwrap();
            let app = router(AppState {
                registry: registry.clone(),
                metrics: Arc::new(Metrics::default()),
                keys: keys.clone(),
                auth: Arc::new(nsr::auth::Auth::new(
                    store.clone(),
                    Arc::new(SystemClock),
                    nsr::auth::TokenKey::from_bytes(&[7; 32]).unwrap(),
                    nsr::auth::AuthSettings::from_config(&config).unwrap(),
                )),
                partners: dci.partners().clone(),
                dci,
                tokens,
            })
            .merge(
                axum::Router::new()
                    .route("/baseline/individual/{national}", get(baseline))
                    .with_state(registry.clone()),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            bases.push(format!("http://{address}"));
        }
        (bases, partner_keys)
    });

    // The load generator: another runtime, on its own threads.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(LOAD_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let (base, consent_base) = (&bases[0], &bases[1]);
    client_runtime.block_on(async {
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{base}/oauth2/client/token"))
            .basic_auth("bench", Some(SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap().to_owned();

        // A signed search answers as expected before anything is measured: one record under
        // either policy, fewer fields under the consent-based one.
        let mut fields = Vec::new();
        let mut signatures = None;
        for (i, server) in [base, consent_base].into_iter().enumerate() {
            let probe = signed_searches(&partner_keys, ids, 1, &format!("probe{i}"), &by_national_id);
            let reply: Value = http.post(format!("{server}/registry/sync/search")).bearer_auth(&token).header("content-type", "application/json").body(probe[0].body.clone().unwrap()).send().await.unwrap().json().await.unwrap();
            let records = &reply["message"]["search_response"][0]["data"]["reg_records"];
            assert_eq!(records.as_array().map(Vec::len), Some(1), "{reply}");
            fields.push(records[0].to_string().len());
            // The partner's key stands in for nsr's: the same algorithm (Ed25519) on inputs
            // of the same size.
            signatures.get_or_insert_with(|| signature_cost(&partner_keys, probe[0].body.as_deref().unwrap(), &reply));
        }
        let signatures = signatures.unwrap();
        eprintln!("{backend}: verifying a signed request takes {:.1} µs (Ed25519 {:.1}), signing its reply {:.1} µs (Ed25519 {:.1})", signatures.verify_us, signatures.ed25519_verify_us, signatures.sign_us, signatures.ed25519_sign_us);
        assert!(fields[1] < fields[0], "the consent policy should release less: {fields:?}");
        eprintln!("{backend}: a record is {} bytes under the all-fields policy, {} under the consent policy", fields[0], fields[1]);

        // And the expression search returns a full page of 100 out of more.
        let probe = signed_searches(&partner_keys, ids, 1, "probe-expression", &expression_criteria);
        let reply: Value = http.post(format!("{base}/registry/sync/search")).bearer_auth(&token).header("content-type", "application/json").body(probe[0].body.clone().unwrap()).send().await.unwrap().json().await.unwrap();
        let item = &reply["message"]["search_response"][0];
        assert_eq!(item["data"]["reg_records"].as_array().map(Vec::len), Some(100), "{item}");
        assert!(item["pagination"]["total_count"].as_u64().unwrap_or(0) > 100, "{item}");

        let mut baseline_runs = Vec::new();
        let mut signed_runs = Vec::new();
        let mut consent_runs = Vec::new();
        let mut expression_runs = Vec::new();
        let warm: Vec<Request> = ids.iter().map(|id| Request { post: false, path: format!("/baseline/individual/{id}"), body: None }).collect();
        let warm = Arc::new(warm);
        load(base, &token, warm.clone(), args.connections, 3).await;
        for run in 0..args.runs {
            let result = load(base, &token, warm.clone(), args.connections, args.seconds).await;
            eprintln!("{backend} baseline run {run}: {:.0} req/s p50 {:.2} p99 {:.2} ms, {:.0} µs CPU a request ({:.0} of it the load generator's), {} errors", result.rps, result.p50, result.p99, result.cpu_us, result.load_cpu_us, result.errors);
            baseline_runs.push(result);

            let expected = (result.rps * args.seconds as f64 * 1.2) as usize + 1000;
            let requests = Arc::new(signed_searches(&partner_keys, ids, expected, &format!("s{run}"), &by_national_id));
            eprintln!("{backend} signed run {run}: {} requests signed, load starts", requests.len());
            let result = load(base, &token, requests, args.connections, args.seconds).await;
            eprintln!("{backend} signed run {run}: {:.0} req/s p50 {:.2} p99 {:.2} ms, {:.0} µs CPU a request ({:.0} of it the load generator's), {} errors", result.rps, result.p50, result.p99, result.cpu_us, result.load_cpu_us, result.errors);
            signed_runs.push(result);

            let requests = Arc::new(signed_searches(&partner_keys, ids, expected, &format!("c{run}"), &by_national_id));
            eprintln!("{backend} signed under the consent policy run {run}: {} requests signed, load starts", requests.len());
            let result = load(consent_base, &token, requests, args.connections, args.seconds).await;
            eprintln!("{backend} signed under the consent policy run {run}: {:.0} req/s p50 {:.2} p99 {:.2} ms, {:.0} µs CPU a request ({:.0} of it the load generator's), {} errors", result.rps, result.p50, result.p99, result.cpu_us, result.load_cpu_us, result.errors);
            consent_runs.push(result);

            let requests = Arc::new(signed_searches(&partner_keys, ids, 20_000, &format!("e{run}"), &expression_criteria));
            eprintln!("{backend} expression run {run}: load starts");
            let result = load(base, &token, requests, args.expression_connections, args.seconds).await;
            eprintln!("{backend} expression run {run}: {:.0} req/s p50 {:.2} p95 {:.2} ms, {:.0} µs CPU a request ({:.0} of it the load generator's), {} errors", result.rps, result.p50, result.p95, result.cpu_us, result.load_cpu_us, result.errors);
            expression_runs.push(result);
        }
        Figures { backend, baseline: median(&baseline_runs), signed: median(&signed_runs), consent: median(&consent_runs), expression: median(&expression_runs), signatures }
    })
}

fn main() {
    let args = parse_args();
    // `RUST_LOG=sqlx=debug` shows every statement with its time, to see where a phase goes.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let registers = Registers::load_dir(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/registers"
    )))
    .unwrap();
    let temporary = tempfile::tempdir().unwrap();
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let population = work.join("population");
    let started = Instant::now();
    let reuse = args.work.is_some() && population.join("consent.csv").exists();
    if !reuse {
        generate(
            &registers,
            &GenerateOptions {
                size: PopulationSize::Individuals(args.individuals),
                seed: 1,
                out: population.clone(),
            },
        )
        .unwrap();
        eprintln!(
            "generated {} individuals in {:.0} s",
            args.individuals,
            started.elapsed().as_secs_f64()
        );
    }
    let ids = national_ids(&population, 50_000);

    if !population.join("sqlite.imported").exists() {
        // A database left by an interrupted import is made again.
        for suffix in ["", "-wal", "-shm", ".replay", ".replay-wal", ".replay-shm"] {
            let _ = std::fs::remove_file(work.join(format!("bench.sqlite3{suffix}")));
        }
    }
    let mut results = Vec::new();
    if !args.postgres_only {
        results.push(run_backend(
            "sqlite",
            &format!("sqlite://{}", work.join("bench.sqlite3").display()),
            &registers,
            &population,
            &ids,
            &args,
        ));
    }
    let pg = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok();
    if let (Some(admin), false) = (pg, args.sqlite_only) {
        let name = match args.work {
            Some(_) => "nsr_dci_bench_kept".to_owned(),
            None => format!("nsr_dci_bench_{}", std::process::id()),
        };
        let admin_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sql = |statement: String| {
            admin_runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
        };
        let exists = args.work.is_some() && population.join("postgres.imported").exists();
        if !exists {
            sql(format!("drop database if exists {name} with (force)"));
            sql(format!("create database {name}"));
        }
        results.push(run_backend(
            "postgres",
            &store::url_with_database(&admin, &name),
            &registers,
            &population,
            &ids,
            &args,
        ));
        if args.work.is_none() {
            sql(format!("drop database if exists {name} with (force)"));
        }
    } else {
        assert!(
            !args.postgres_only,
            "--postgres-only needs BENCH_DATABASE_URL or TEST_DATABASE_URL"
        );
        eprintln!("PostgreSQL skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)");
    }

    println!(
        "\nDCI benchmark: {} individuals, {} s runs, median of {} runs; baseline and signed search at {} connections, expression search at {}",
        args.individuals, args.seconds, args.runs, args.connections, args.expression_connections
    );
    println!(
        "| backend | baseline req/s (p99 ms) | signed sync search req/s (p50 / p99 ms) | ratio | expression page of 100 req/s (p50 / p95 ms) | errors |"
    );
    println!("|---|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {:.0} ({:.2}) | {:.0} ({:.2} / {:.2}) | {:.2} | {:.0} ({:.2} / {:.2}) | {} |",
            f.backend,
            f.baseline.rps,
            f.baseline.p99,
            f.signed.rps,
            f.signed.p50,
            f.signed.p99,
            f.signed.rps / f.baseline.rps,
            f.expression.rps,
            f.expression.p50,
            f.expression.p95,
            f.baseline.errors + f.signed.errors + f.expression.errors
        );
    }
    println!(
        "\nCPU time per request, µs: this process's in all (server with SQLite, and load generator; not PostgreSQL's processes), and the load generator's share"
    );
    println!("| backend | baseline | signed sync search | consent policy | expression |");
    println!("|---|---|---|---|---|");
    let cpu = |r: &Run| format!("{:.0} ({:.0})", r.cpu_us, r.load_cpu_us);
    for f in &results {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.backend,
            cpu(&f.baseline),
            cpu(&f.signed),
            cpu(&f.consent),
            cpu(&f.expression)
        );
    }
    // Both runtimes keep the machine's cores busy, so a request's share of them is what it
    // costs in all, PostgreSQL's processes included.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "\nThe signed search's budget at 0.6× the baseline: µs of the {cores} cores a request, and what nsr's signature check and signing alone cost (one thread, one request and its reply)"
    );
    println!(
        "| backend | baseline | 0.6× leaves a signed search | beyond the baseline | verify the request (Ed25519 alone) | sign the reply (Ed25519 alone) |"
    );
    println!("|---|---|---|---|---|---|");
    for f in &results {
        let baseline = cores * 1e6 / f.baseline.rps;
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} ({:.1}) |",
            f.backend,
            baseline,
            baseline / 0.6,
            baseline / 0.6 - baseline,
            f.signatures.verify_us,
            f.signatures.ed25519_verify_us,
            f.signatures.sign_us,
            f.signatures.ed25519_sign_us
        );
    }
    println!(
        "\nSigned sync search under the consent-based policy (consent required, ~20 fields) beside the all-fields legal-basis policy"
    );
    println!(
        "| backend | all fields req/s (p50 / p99 ms) | consent policy req/s (p50 / p99 ms) | ratio | errors |"
    );
    println!("|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {:.0} ({:.2} / {:.2}) | {:.0} ({:.2} / {:.2}) | {:.2} | {} |",
            f.backend,
            f.signed.rps,
            f.signed.p50,
            f.signed.p99,
            f.consent.rps,
            f.consent.p50,
            f.consent.p99,
            f.consent.rps / f.signed.rps,
            f.consent.errors
        );
    }
}
