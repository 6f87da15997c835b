//! Async search and transaction status: the job is stored before the ACK; the worker answers
//! it and POSTs the signed callback to a real local receiver; a receiver that is down gets the
//! answer once it is back (same `message_id` on every attempt); a worker that dies between ACK
//! and callback leaves nothing lost (exactly one delivery after restart); the deadline marks a
//! job failed; transaction status reports rcvd/pdng/succ and stored results; several workers
//! share jobs without doing one twice.

use super::schema::{self, assert_search_envelope, assert_valid};
use super::{Dci, Receiver};
use crate::support::TestRegistry;
use chrono::Duration;
use nsr::clock::Clock;
use nsr::dci::Worker;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

fn by_uin(uin: &str) -> Value {
    json!({"query_type": "idtype-value", "query": {"type": "UIN", "value": uin}})
}

impl Dci<'_> {
    /// POSTs an async search; returns HTTP status, ack, and the transaction id sent.
    async fn async_search(&self, token: &str, uin: &str, sender_uri: &str) -> (u16, Value, String) {
        let message = self.search_message(vec![
            self.search_item("a-1", by_uin(uin)),
            self.search_item("a-2", by_uin("FID-00000002")),
        ]);
        let mut header = self.header("search", 2);
        header["sender_uri"] = json!(sender_uri);
        let (status, ack) = self
            .post("/registry/search", token, &self.envelope(&header, &message))
            .await;
        assert_valid(&ack, schema::ACK);
        (
            status,
            ack,
            message["transaction_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn txn_status(&self, token: &str, attribute_type: &str, value: Value) -> Value {
        let message = json!({
            "transaction_id": self.next_id("status"),
            "txnstatus_request": {
                "reference_id": "s-1",
                "txn_type": "search",
                "attribute_type": attribute_type,
                "attribute_value": value,
                "locale": "eng",
            },
        });
        let envelope = self.envelope(&self.header("txn-status", 1), &message);
        let (status, reply) = self
            .post("/registry/sync/txn/status", token, &envelope)
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_valid(&reply, schema::SYNC_TXN_STATUS_REPLY);
        self.assert_signed_by_us(&reply);
        reply
    }

    async fn jobs(&self) -> Vec<nsr::store::DciJobRow> {
        self.t.store().list_dci_jobs(None, 100).await.unwrap()
    }
}

fn statuses(reply: &Value) -> Vec<(String, String)> {
    reply["message"]["txnstatus_response"]["txn_status"]["search_response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reference_id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn an_async_search_is_stored_before_its_ack_and_delivered_signed(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    let (status, ack, transaction_id) = dci
        .async_search(&token, "FID-00000001", &format!("{url}/on-search"))
        .await;
    assert_eq!(status, 202, "{ack}");
    assert_eq!(ack["message"]["ack_status"], "ACK");
    let correlation_id = ack["message"]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Stored before the ACK came back, and not yet worked on.
    let jobs = dci.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].status.as_str(), jobs[0].delivery.as_str()),
        ("rcvd", "pending")
    );
    assert_eq!(jobs[0].correlation_id, correlation_id);
    let reply = dci
        .txn_status(&token, "transaction_id", json!(transaction_id))
        .await;
    assert_eq!(
        statuses(&reply),
        [("a-1".into(), "rcvd".into()), ("a-2".into(), "rcvd".into())]
    );

    let pass = dci.worker().run_once().await.unwrap();
    assert_eq!((pass.claimed, pass.delivered), (1, 1));
    let received = receiver.all();
    assert_eq!(received.len(), 1);
    let callback = &received[0];
    assert_search_envelope(callback, schema::ON_SEARCH_REQUEST);
    dci.assert_signed_by_us(callback);
    assert_eq!(callback["header"]["action"], "on-search");
    assert_eq!(
        callback["header"]["message_id"],
        jobs[0].callback_message_id.as_str()
    );
    assert_eq!(
        callback["message"]["correlation_id"],
        correlation_id.as_str()
    );
    assert_eq!(
        callback["message"]["transaction_id"],
        transaction_id.as_str()
    );
    let items = callback["message"]["search_response"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["reference_id"], "a-1");
    assert_eq!(
        items[0]["data"]["reg_records"][0]["@id"],
        "urn:nsr:IND-NSR-0001"
    );
    assert_eq!(
        dci.jobs().await[0].delivery,
        "delivered",
        "the job is done once the partner acknowledged"
    );
    assert_eq!(dci.worker().run_once().await.unwrap().claimed, 0);

    // Transaction status now carries the stored results, by each kind of lookup.
    for (attribute_type, value) in [
        ("transaction_id", json!(transaction_id)),
        ("correlation_id", json!(correlation_id)),
        ("reference_id_list", json!(["a-2", "a-1"])),
    ] {
        let reply = dci.txn_status(&token, attribute_type, value).await;
        let status = &reply["message"]["txnstatus_response"];
        assert_eq!(status["txn_type"], "search");
        assert_eq!(
            status["txn_status"]["correlation_id"],
            correlation_id.as_str()
        );
        assert_eq!(
            statuses(&reply),
            [("a-1".into(), "succ".into()), ("a-2".into(), "succ".into())]
        );
        assert_eq!(
            status["txn_status"]["search_response"][1]["data"]["reg_records"][0]["@id"],
            "urn:nsr:IND-NSR-0002"
        );
    }
    // Unknown ids are answered item by item; other partners' transactions are not visible.
    let reply = dci
        .txn_status(&token, "reference_id_list", json!(["a-1", "nope"]))
        .await;
    let items = &reply["message"]["txnstatus_response"]["txn_status"]["search_response"];
    assert_eq!(items[1]["status_reason_code"], "rjct.reference_id.invalid");
    let reply = dci
        .txn_status(&token, "transaction_id", json!("never-sent"))
        .await;
    assert_eq!(
        statuses(&reply),
        [("s-1".into(), "rjct".into())],
        "an unknown transaction is reported against the status request's reference_id"
    );
}

async fn an_async_txn_status_is_answered_by_callback(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    let (_, _, transaction_id) = dci
        .async_search(&token, "FID-00000004", &format!("{url}/on-search"))
        .await;
    let message = json!({
        "transaction_id": "status-1",
        "txnstatus_request": {"reference_id": "s-1", "txn_type": "search", "attribute_type": "transaction_id", "attribute_value": transaction_id},
    });
    let mut header = dci.header("txn-status", 1);
    header["sender_uri"] = json!(format!("{url}/txn-on-status"));
    let (status, ack) = dci
        .post(
            "/registry/txn/status",
            &token,
            &dci.envelope(&header, &message),
        )
        .await;
    assert_eq!(status, 202, "{ack}");
    // Both jobs in one pass: the search (delivered) and the status (answered as of then).
    dci.worker().run_once().await.unwrap();
    let received = receiver.all();
    assert_eq!(received.len(), 2);
    let status_callback = received
        .iter()
        .find(|e| e["header"]["action"] == "txn-on-status")
        .unwrap();
    assert_valid(status_callback, schema::TXN_ON_STATUS_REQUEST);
    dci.assert_signed_by_us(status_callback);
    assert_eq!(
        status_callback["message"]["correlation_id"],
        ack["message"]["correlation_id"]
    );
}

async fn a_receiver_that_is_down_gets_the_answer_once_it_is_back(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    *receiver.down.lock().unwrap() = true;
    dci.async_search(&token, "FID-00000001", &format!("{url}/on-search"))
        .await;
    let worker = dci.worker();
    let mut attempts = 0;
    let mut delays = Vec::new();
    while attempts < 4 {
        let pass = worker.run_once().await.unwrap();
        if pass.claimed == 1 {
            attempts += 1;
            assert_eq!(pass.retrying, 1);
            let job = &dci.jobs().await[0];
            assert_eq!((job.attempts, job.delivery.as_str()), (attempts, "pending"));
            assert!(job.last_error.as_deref().unwrap().contains("503"));
            delays.push((job.next_attempt_at - t.clock.now()).num_milliseconds());
        }
        // Not due yet: nothing is claimed until the backoff has passed.
        t.clock.advance(Duration::seconds(1));
    }
    // Exponential backoff with jitter: attempt n waits 2^(n-1)·2 s, from its upper half.
    for (n, delay) in delays.iter().enumerate() {
        let full = 2_000 * (1 << n);
        assert!((full / 2..=full).contains(delay), "delay {n}: {delay} ms");
    }
    *receiver.down.lock().unwrap() = false;
    let mut delivered = false;
    for _ in 0..60 {
        t.clock.advance(Duration::seconds(1));
        if worker.run_once().await.unwrap().delivered == 1 {
            delivered = true;
            break;
        }
    }
    assert!(delivered);
    let received = receiver.all();
    assert_eq!(
        received.len(),
        5,
        "four refused attempts and the accepted one"
    );
    let ids: BTreeSet<&str> = received
        .iter()
        .map(|e| e["header"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same message_id");
    // Nothing more is sent.
    t.clock.advance(Duration::hours(1));
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);
    assert_eq!(receiver.count(), 5);
}

async fn a_worker_killed_between_ack_and_callback_loses_nothing(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    dci.async_search(&token, "FID-00000001", &format!("{url}/on-search"))
        .await;
    dci.async_search(&token, "FID-00000004", &format!("{url}/on-search"))
        .await;

    // The first process's worker claimed the jobs, then died (its lease is never released).
    let dead = "worker-that-died";
    let claimed = t
        .store()
        .claim_dci_jobs(
            dead,
            t.clock.now(),
            t.clock.now() + Duration::minutes(2),
            10,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let reply = dci
        .txn_status(&token, "transaction_id", json!(claimed[0].transaction_id))
        .await;
    assert_eq!(statuses(&reply)[0].1, "pdng", "claimed jobs are pending");

    // A restart: a new connection pool on the same database, a new gateway and worker.
    let reopened = nsr::store::open(&t.url, 2).await.unwrap();
    let registry = nsr::registry::Registry::new(
        reopened,
        Arc::new(crate::support::registers()),
        t.clock.clone(),
    );
    let (gateway, _) = nsr::cli::open_gateway(&super::config(), &registry, dci.keys.clone())
        .await
        .unwrap();
    let worker = Worker::new(gateway).unwrap();
    assert_eq!(
        worker.run_once().await.unwrap().claimed,
        0,
        "the dead worker's lease still holds"
    );
    t.clock.advance(Duration::minutes(2));
    let pass = worker.run_once().await.unwrap();
    assert_eq!((pass.claimed, pass.delivered), (2, 2));
    let received = receiver.all();
    assert_eq!(received.len(), 2, "exactly one delivery per job");
    for job in &claimed {
        assert_eq!(
            received
                .iter()
                .filter(|e| e["header"]["message_id"] == job.callback_message_id.as_str())
                .count(),
            1
        );
    }
    // The dead worker's late write is refused: the job is not its any more.
    let late = nsr::store::DciJobUpdate {
        job_id: claimed[0].job_id,
        status: "succ".into(),
        result: None,
        delivery: "pending".into(),
        attempts: 0,
        next_attempt_at: t.clock.now(),
        last_error: None,
        updated_at: t.clock.now(),
        release_lease: true,
    };
    assert!(!t.store().update_dci_job(dead, &late).await.unwrap());
    t.clock.advance(Duration::hours(1));
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);
    assert_eq!(receiver.count(), 2);
}

async fn a_job_past_its_deadline_is_marked_failed(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    *receiver.down.lock().unwrap() = true;
    dci.async_search(&token, "FID-00000001", &format!("{url}/on-search"))
        .await;
    let worker = dci.worker();
    // The test deadline is 600 s; retries are at most 60 s apart.
    for _ in 0..40 {
        worker.run_once().await.unwrap();
        t.clock.advance(Duration::seconds(30));
    }
    let failed = t.store().list_dci_jobs(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].last_error.as_deref().unwrap().contains("503"));
    assert!(failed[0].attempts > 4);
    let attempts = receiver.count();
    t.clock.advance(Duration::hours(2));
    worker.run_once().await.unwrap();
    assert_eq!(receiver.count(), attempts, "a failed job is not retried");
}

async fn several_workers_share_the_jobs_without_doing_one_twice(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    let (receiver, url) = Receiver::start().await;
    for _ in 0..12 {
        dci.async_search(&token, "FID-00000001", &format!("{url}/on-search"))
            .await;
    }
    // Two "processes": separate pools and gateways on one database.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let store = nsr::store::open(&t.url, 4).await.unwrap();
        let registry = nsr::registry::Registry::new(
            store,
            Arc::new(crate::support::registers()),
            t.clock.clone(),
        );
        let (gateway, _) = nsr::cli::open_gateway(&super::config(), &registry, dci.keys.clone())
            .await
            .unwrap();
        workers.push(Worker::new(gateway).unwrap());
    }
    let mut delivered = 0;
    for _ in 0..10 {
        let (a, b) = tokio::join!(workers[0].run_once(), workers[1].run_once());
        delivered += a.unwrap().delivered + b.unwrap().delivered;
        if delivered == 12 {
            break;
        }
    }
    assert_eq!(delivered, 12);
    let ids: BTreeSet<String> = receiver
        .all()
        .iter()
        .map(|e| e["header"]["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((receiver.count(), ids.len()), (12, 12));
}

async fn an_async_request_needs_a_registered_callback_url(t: &TestRegistry) {
    let dci = Dci::new(t).await;
    let token = dci.token().await;
    for uri in [Some("https://elsewhere.example.org/on-search"), None] {
        let message = dci.search_message(vec![dci.search_item("a-1", by_uin("FID-00000001"))]);
        let mut header = dci.header("search", 1);
        if let Some(uri) = uri {
            header["sender_uri"] = json!(uri);
        }
        let (status, ack) = dci
            .post("/registry/search", &token, &dci.envelope(&header, &message))
            .await;
        assert_eq!(status, 400);
        assert_valid(&ack, schema::ACK);
        assert_eq!(ack["message"]["error"]["code"], "err.sender_uri.invalid");
    }
    assert!(
        dci.jobs().await.is_empty(),
        "nothing is stored for a refused request"
    );
}

crate::on_both_backends!(
    an_async_search_is_stored_before_its_ack_and_delivered_signed,
    an_async_txn_status_is_answered_by_callback,
    a_receiver_that_is_down_gets_the_answer_once_it_is_back,
    a_worker_killed_between_ack_and_callback_loses_nothing,
    a_job_past_its_deadline_is_marked_failed,
    several_workers_share_the_jobs_without_doing_one_twice,
    an_async_request_needs_a_registered_callback_url,
);
