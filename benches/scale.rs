#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]
//! Scale benchmark: generate a population, import it through `nsr import csv`'s code path, and
//! time point lookups, on SQLite and (when BENCH_DATABASE_URL or TEST_DATABASE_URL is set) on
//! PostgreSQL, in one run.
//!
//!     cargo bench --bench scale -- [--individuals 1000000 | --households N] [--seed 1] [--lookups 20000] [--sqlite-only]
//!
//! Reports: import wall time, records/s, peak RSS during the import, and p50/p99 latency of a
//! record lookup by functional id and by `foundational_id`.

use nsr::clock::SystemClock;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use nsr::ingest::csv_import::{ImportOptions, import_csv};
use nsr::ingest::generate::{GenerateOptions, PopulationSize, generate};
use nsr::registry::register::Registers;
use nsr::registry::{Author, Registry};
use nsr::store::{self, At};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    size: PopulationSize,
    seed: u64,
    lookups: usize,
    sqlite_only: bool,
    batch_size: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        size: PopulationSize::Individuals(1_000_000),
        seed: 1,
        lookups: 20_000,
        sqlite_only: false,
        batch_size: 5000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--households" => args.size = PopulationSize::Households(number()),
            "--individuals" => args.size = PopulationSize::Individuals(number()),
            "--seed" => args.seed = number(),
            "--lookups" => args.lookups = number() as usize,
            "--batch-size" => args.batch_size = number() as usize,
            "--sqlite-only" => args.sqlite_only = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM`, `RssAnon` …), in MiB.
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM")
}

/// Anonymous resident memory of this process (RssAnon: heap and stacks, not file pages
/// mapped by SQLite's memory-mapped reads), in MiB.
fn anonymous_rss_mib() -> f64 {
    status_mib("RssAnon")
}

/// Samples [`anonymous_rss_mib`] every 20 ms until dropped; `peak` is the highest seen.
struct AnonymousPeak {
    peak: Arc<std::sync::atomic::AtomicU64>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl AnonymousPeak {
    fn start() -> Self {
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let sampled = peak.clone();
        // The sampler ends when the sender is dropped (recv_timeout then reports Disconnected).
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(20))
            {
                sampled.fetch_max(
                    anonymous_rss_mib() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        });
        Self { peak, _stop: stop }
    }

    fn peak(&self) -> f64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed) as f64
    }
}

/// Resets VmHWM so each backend's peak is its own (Linux: write 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A random sample of `(functional id, foundational_id)` pairs from the individuals file.
fn sample_ids(path: &Path, count: usize, seed: u64) -> Vec<(String, String)> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let id_col = headers.iter().position(|h| h == "id").unwrap();
    let fid_col = headers.iter().position(|h| h == "foundational_id").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut reservoir: Vec<(String, String)> = Vec::with_capacity(count);
    for (seen, row) in reader.records().enumerate() {
        let row = row.unwrap();
        let national = row.get(fid_col).unwrap_or_default();
        if national.is_empty() {
            continue;
        }
        let pair = (
            row.get(id_col).unwrap_or_default().to_owned(),
            national.to_owned(),
        );
        if reservoir.len() < count {
            reservoir.push(pair);
        } else {
            let slot = rng.random_range(0..=seen);
            if slot < count {
                reservoir[slot] = pair;
            }
        }
    }
    reservoir.shuffle(&mut rng);
    reservoir
}

struct Figures {
    backend: &'static str,
    records: u64,
    seconds: f64,
    peak_rss: f64,
    peak_anonymous: f64,
    by_id: (f64, f64),
    by_national_id: (f64, f64),
}

async fn run_backend(
    backend: &'static str,
    url: &str,
    registers: &Registers,
    dir: &Path,
    ids: &[(String, String)],
    args: &Args,
) -> Figures {
    let store = store::open(url, 8).await.unwrap();
    store.sync_field_indexes(registers).await.unwrap();
    let registry = Registry::new(
        store.clone(),
        Arc::new(registers.clone()),
        Arc::new(SystemClock),
    );
    reset_peak_rss();
    let anonymous = AnonymousPeak::start();
    let started = Instant::now();
    let mut records = 0;
    for register in ["household", "individual"] {
        let file = std::fs::File::open(dir.join(format!("{register}.csv"))).unwrap();
        let options = ImportOptions {
            register: register.into(),
            batch_size: args.batch_size,
            errors_path: dir.join(format!("{backend}-{register}.errors.csv")),
            author: Author {
                actor: "bench".into(),
                source: "csv-import".into(),
                reason: None,
            },
        };
        let report = import_csv(
            &registry,
            std::io::BufReader::new(file),
            &options,
            &mut |rows, _| {
                if rows % 100_000 < args.batch_size as u64 {
                    eprint!("\r{backend}: {register} {rows} rows   ");
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(report.rejected, 0, "generated rows must all be accepted");
        records += report.created;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss = peak_rss_mib();
    let peak_anonymous = anonymous.peak();
    drop(anonymous);
    eprintln!();

    let field = registers
        .get("individual")
        .unwrap()
        .field("foundational_id")
        .unwrap()
        .clone();
    let mut by_id = Vec::with_capacity(ids.len());
    let mut by_national_id = Vec::with_capacity(ids.len());
    for (id, national) in ids {
        let t = Instant::now();
        let found = store
            .record_by_functional_id(id, At::Current)
            .await
            .unwrap();
        by_id.push(t.elapsed());
        assert!(found.is_some());
        let t = Instant::now();
        let found = store
            .records_by_field("individual", &field, std::slice::from_ref(national))
            .await
            .unwrap();
        by_national_id.push(t.elapsed());
        assert_eq!(found.len(), 1);
    }
    by_id.sort();
    by_national_id.sort();
    Figures {
        backend,
        records,
        seconds,
        peak_rss,
        peak_anonymous,
        by_id: (percentile(&by_id, 0.5), percentile(&by_id, 0.99)),
        by_national_id: (
            percentile(&by_national_id, 0.5),
            percentile(&by_national_id, 0.99),
        ),
    }
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registers = Registers::load_dir(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/registers"
    )))
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let population = work.path().join("population");

    let started = Instant::now();
    let summary = generate(
        &registers,
        &GenerateOptions {
            size: args.size,
            seed: args.seed,
            out: population.clone(),
        },
    )
    .unwrap();
    let rows = |register: &str| {
        summary
            .files
            .iter()
            .find(|f| f.register == register)
            .map_or(0, |f| f.rows)
    };
    let (households, individuals) = (rows("household"), rows("individual"));
    eprintln!(
        "generated {households} households, {individuals} individuals in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ids = sample_ids(&population.join("individual.csv"), args.lookups, args.seed);

    let mut results = Vec::new();
    let sqlite_url = format!("sqlite://{}", work.path().join("bench.sqlite3").display());
    results.push(runtime.block_on(run_backend(
        "sqlite",
        &sqlite_url,
        &registers,
        &population,
        &ids,
        &args,
    )));

    let pg = std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok();
    if let (Some(admin), false) = (pg, args.sqlite_only) {
        let name = format!("nsr_bench_{}", std::process::id());
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
        });
        results.push(runtime.block_on(run_backend(
            "postgres",
            &store::url_with_database(&admin, &name),
            &registers,
            &population,
            &ids,
            &args,
        )));
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "drop database if exists {name} with (force)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        });
    } else {
        eprintln!("PostgreSQL skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)");
    }

    println!(
        "\nscale benchmark: {households} households, {individuals} individuals, batch {} rows, {} lookups",
        args.batch_size,
        ids.len()
    );
    println!(
        "| backend | records | import s | records/s | peak RSS MiB (anonymous) | by id p50/p99 ms | by foundational_id p50/p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in results {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} ({:.0}) | {:.3} / {:.3} | {:.3} / {:.3} |",
            f.backend,
            f.records,
            f.seconds,
            f.records as f64 / f.seconds,
            f.peak_rss,
            f.peak_anonymous,
            f.by_id.0,
            f.by_id.1,
            f.by_national_id.0,
            f.by_national_id.1
        );
    }
}
