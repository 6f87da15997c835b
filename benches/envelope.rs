#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]
//! Envelope signing and verification against the raw signature primitive, in one run.
//!
//!     cargo bench --bench envelope [-- --runs 5 --seconds 1]
//!
//! For each algorithm (EdDSA, ES256, RS256) and each profile (detached JWS, DCI signature
//! string), on an envelope whose canonical `{header, message}` is about 2 KB: operations per
//! second of `sign_envelope` / `verify_envelope` (which canonicalise the JSON values, hash,
//! encode and parse) next to the raw primitive signing / verifying the same 2 KB of bytes.
//! Each figure is the median of `--runs` runs of `--seconds` each; the ratio is envelope
//! over primitive (goal: at least 0.5).

use chrono::Duration;
use nsr::clock::{Clock, SystemClock};
use nsr::crypto::{
    Alg, KeyStore, SignatureProfile, VerifyPolicy, sign_envelope, signing_input, verify_envelope,
};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operations per second of `op`, median of `runs` runs of about `seconds` each.
fn rate(runs: usize, seconds: f64, mut op: impl FnMut()) -> f64 {
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed().as_secs_f64() < seconds {
            for _ in 0..16 {
                op();
            }
            count += 16;
        }
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// A search request whose canonical `{header, message}` is about 2 KB, with some non-ASCII.
fn envelope_parts() -> (Value, Value) {
    let header = json!({
        "version": "1.0.0",
        "message_id": "0193f2b0-6c1e-7000-8000-000000000001",
        "message_ts": "2026-11-21T09:00:00+00:00",
        "action": "search",
        "sender_id": "spmis.example.org",
        "sender_uri": "https://spmis.example.org/dci/callback/on-search",
        "receiver_id": "nsr.example.gov",
        "total_count": 5,
        "is_msg_encrypted": false,
    });
    let items: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "reference_id": format!("ref-{i:04}"),
                "timestamp": "2026-11-21T09:00:00+00:00",
                "search_criteria": {
                    "version": "1.0.0",
                    "reg_type": "ns:org:RegistryType:Social",
                    "reg_record_type": "Member",
                    "query_type": "idtype-value",
                    "query": {"type": "UIN", "value": format!("UIN-{i:08} Zoë Ngũgĩ")},
                    "pagination": {"page_size": 10, "page_number": 1},
                },
                "locale": "eng",
            })
        })
        .collect();
    let message = json!({"transaction_id": "T-0193f2b0", "search_request": items});
    (header, message)
}

fn main() {
    let mut runs = 5;
    let mut seconds = 1.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let (header, message) = envelope_parts();
    let input = signing_input(&header, &message);
    let now = SystemClock.now();
    let dir = tempfile::tempdir().unwrap();

    println!(
        "envelope benchmark: canonical {{header, message}} = {} bytes; median of {runs} × {seconds} s; single thread",
        input.len()
    );
    println!(
        "| alg | operation | primitive ops/s | JWS envelope ops/s (ratio) | DCI signature envelope ops/s (ratio) |"
    );
    println!("|---|---|---|---|---|");
    for alg in [Alg::EdDsa, Alg::Es256, Alg::Rs256] {
        let mut keys = KeyStore::open_or_create_dir(&dir.path().join(alg.as_str())).unwrap();
        keys.generate(alg, now).unwrap();
        let key = keys.signing_key().unwrap();
        let public = vec![key.public_jwk().clone()];
        let policy = VerifyPolicy {
            allowed_algs: &[alg],
            skew: Duration::seconds(60),
        };

        let raw_signature = key.sign(&input).unwrap();
        let sign_raw = rate(runs, seconds, || {
            black_box(key.sign(black_box(&input)).unwrap());
        });
        let verify_raw = rate(runs, seconds, || {
            assert!(public[0].verify_signature(alg, black_box(&input), &raw_signature));
        });

        let mut sign_env = Vec::new();
        let mut verify_env = Vec::new();
        for profile in [SignatureProfile::Jws, SignatureProfile::DciSignature] {
            let sign = || {
                sign_envelope(
                    profile,
                    key,
                    "spmis.example.org",
                    black_box(&header),
                    black_box(&message),
                    now,
                    Duration::minutes(5),
                )
                .unwrap()
            };
            let signature = sign();
            sign_env.push(rate(runs, seconds, || {
                black_box(sign());
            }));
            verify_env.push(rate(runs, seconds, || {
                verify_envelope(
                    profile,
                    Some(&signature),
                    black_box(&header),
                    black_box(&message),
                    &public,
                    &policy,
                    now,
                )
                .unwrap();
            }));
        }
        for (operation, raw, envelope) in [
            ("sign", sign_raw, &sign_env),
            ("verify", verify_raw, &verify_env),
        ] {
            println!(
                "| {alg} | {operation} | {raw:.0} | {:.0} ({:.2}) | {:.0} ({:.2}) |",
                envelope[0],
                envelope[0] / raw,
                envelope[1],
                envelope[1] / raw
            );
        }
    }
}
