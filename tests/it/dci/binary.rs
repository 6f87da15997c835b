//! The real `nsr` binary: `nsr serve` with a partner added by `nsr partner add`, the
//! conformance cases run by `nsr conformance` over HTTP, and an async search whose server is
//! killed with SIGKILL between the ACK and the callback: after a restart the callback arrives,
//! acknowledged exactly once, with the same `message_id` as the attempts before the kill; and
//! after that restart the same message is refused as a replay and an unsigned one as unsigned.

use super::{PartnerSide, Receiver, SECRET, SENDER};
use crate::support::{TestRegistry, mappings_dir, specs_dir};
use nsr::clock::Clock;
use nsr::crypto::{SignatureProfile, sign_envelope};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn nsr(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsr"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NSR_")) {
        command.env_remove(key);
    }
    command
        .args(args)
        .current_dir(dir)
        .env(
            "NSR_DATABASE_URL",
            format!("sqlite://{}", dir.join("data/nsr.sqlite3").display()),
        )
        .env("NSR_REGISTERS_DIR", specs_dir())
        .env("NSR_MAPPINGS_DIR", mappings_dir())
        .env("NSR_CONSENT_POLICIES_DIR", super::test_policies_dir())
        .env("NSR_KEYS_DIR", dir.join("keys"))
        .env("NSR_GATEWAY_SENDER_ID", "nsr.test")
        .env("NSR_CALLBACK_RETRY_INITIAL_SECONDS", "1")
        .env("NSR_CALLBACK_RETRY_MAX_SECONDS", "2")
        .env("NSR_JOB_LEASE_SECONDS", "2")
        .env("NSR_LOG_FILTER", "warn");
    command
}

/// `nsr serve` on a free port; its log is drained in a thread so it never blocks.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = nsr(dir, &["serve", "--no-sample"])
        .env("NSR_LISTEN", "127.0.0.1:0")
        .env("NSR_LOG_FILTER", "info")
        .env("NSR_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("nsr serve exited before listening")
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["fields"]["message"] == "nsr serving" {
            break event["fields"]["address"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, address)
}

async fn token(http: &reqwest::Client, address: &str) -> String {
    let reply: Value = http
        .post(format!("http://{address}/oauth2/client/token"))
        .basic_auth("spmis", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().unwrap().to_owned()
}

async fn run(command: Command) -> std::process::Output {
    let mut command = command;
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_passes_conformance_and_a_kill_9_loses_no_callback() {
    let t = TestRegistry::new(crate::support::Db::Sqlite).await.unwrap();
    let dir: PathBuf = t.dir.path().join("node");
    std::fs::create_dir_all(&dir).unwrap();
    let partner = PartnerSide::new(&t);
    std::fs::write(dir.join("partner-jwks.json"), partner.jwks()).unwrap();

    let seeded = run(nsr(&dir, &["seed", "--sample"])).await;
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let mut add = nsr(
        &dir,
        &[
            "partner",
            "add",
            SENDER,
            "--client-id",
            "spmis",
            "--scope",
            "registry.search",
            "--scope",
            "registry.txn-status",
            "--profile",
            "jws",
            "--alg",
            "EdDSA",
            "--jwks",
            "partner-jwks.json",
            "--callback-prefix",
            "http://127.0.0.1:",
            "--secret-stdin",
        ],
    );
    add.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = add.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{SECRET}").unwrap();
    let added = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let (mut server, address) = serve(&dir);
    let http = reqwest::Client::new();
    let token = token(&http, &address).await;

    // The conformance cases over real HTTP (their async callbacks go to a second receiver).
    let (_, conformance_callbacks) = Receiver::start().await;
    let keys_dir = partner.keys.dir().to_str().unwrap().to_owned();
    let output = run({
        let mut command = nsr(
            &dir,
            &[
                "conformance",
                "--target",
                &format!("http://{address}"),
                "--token",
                &token,
                "--sender-id",
                SENDER,
                "--receiver-id",
                "nsr.test",
                "--keys-dir",
                &keys_dir,
                "--callback-url",
                &conformance_callbacks,
                "--assume",
                "consent-policy",
            ],
        );
        command
            .arg("--cases")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/cases"));
        command
    })
    .await;
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(table.contains("0 failed, 1 skipped"), "{table}");

    // An async search while the partner's receiver is down.
    let (receiver, callbacks) = Receiver::start().await;
    *receiver.down.lock().unwrap() = true;
    // The server runs on the wall clock.
    let now = nsr::clock::SystemClock.now();
    let header = json!({
        "version": "1.0.0", "message_id": "kill-9-search", "message_ts": now.to_rfc3339(),
        "action": "search", "sender_id": SENDER, "receiver_id": "nsr.test", "total_count": 1,
        "sender_uri": format!("{callbacks}/on-search"),
    });
    let message = json!({"transaction_id": "kill-9", "search_request": [{
        "reference_id": "k-1", "timestamp": now.to_rfc3339(),
        "search_criteria": {"consent": {"purpose": {"code": "social_protection"}}, "query_type": "idtype-value", "query": {"type": "UIN", "value": "FID-00000001"}},
    }]});
    let signature = sign_envelope(
        SignatureProfile::Jws,
        partner.keys.signing_key().unwrap(),
        SENDER,
        &header,
        &message,
        now,
        chrono::Duration::minutes(5),
    )
    .unwrap();
    let ack: Value = http
        .post(format!("http://{address}/registry/search"))
        .bearer_auth(&token)
        .json(&json!({"signature": signature, "header": header, "message": message}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ack["message"]["ack_status"], "ACK", "{ack}");

    // The first attempt reaches the (down) receiver; then the server is killed outright.
    assert!(receiver.wait_until(WAIT, |r| r.count() >= 1).await);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(receiver.acknowledged.lock().unwrap().is_empty());

    // The partner comes back; nsr restarts on the same database.
    *receiver.down.lock().unwrap() = false;
    let (mut server, address) = serve(&dir);

    // After the restart: the same message again is a replay, and an unsigned one is refused.
    let envelope = json!({"signature": signature, "header": header, "message": message});
    let replayed = http
        .post(format!("http://{address}/registry/search"))
        .bearer_auth(&token)
        .json(&envelope)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(replayed.contains("rjct.message_id.duplicate"), "{replayed}");
    let mut unsigned = envelope.clone();
    unsigned["signature"] = Value::Null;
    unsigned["header"]["message_id"] = json!("unsigned-after-restart");
    let refused = http
        .post(format!("http://{address}/registry/search"))
        .bearer_auth(&token)
        .json(&unsigned)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refused.contains("err.signature.missing"), "{refused}");
    let delivered = receiver
        .wait_until(WAIT, |r| !r.acknowledged.lock().unwrap().is_empty())
        .await;
    let jobs = run(nsr(&dir, &["jobs", "--delivery", "delivered"])).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(delivered, "the callback never arrived after the restart");
    let acknowledged = receiver.acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), 1, "delivered exactly once");
    let ids: BTreeSet<String> = receiver
        .all()
        .iter()
        .map(|e| e["header"]["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "the same message_id before and after the kill"
    );
    assert_eq!(
        acknowledged[0]["message"]["correlation_id"],
        ack["message"]["correlation_id"]
    );
    assert_eq!(acknowledged[0]["message"]["transaction_id"], "kill-9");
    let listed = String::from_utf8_lossy(&jobs.stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.contains(SENDER) && l.contains("delivered")),
        "{listed}"
    );
    t.finish().await;
}
