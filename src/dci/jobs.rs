//! The async job worker: claims due jobs, computes each answer once (stored before the first
//! delivery, so every retry sends the same message with the same `message_id`), signs it and
//! POSTs it to the job's callback URL until the partner acknowledges or the deadline passes.
//!
//! Delivery is at least once: a process killed after the partner received a callback but
//! before the acknowledgement was written sends it again after a restart, with the same
//! `message_id`, which a DCI receiver deduplicates (the message id's scope "ends with
//! successful ack by the receiver"). Every attempt is signed afresh (signatures expire).
//!
//! Retries back off exponentially from `callback_retry_initial_seconds`, doubling up to
//! `callback_retry_max_seconds`, each delay drawn uniformly from its upper half (jitter, so
//! retries to a partner that was down do not arrive in lockstep).

use super::gateway::{Gateway, Operation};
use crate::partners::Partner;
use crate::store::{DciJobRow, DciJobUpdate, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use std::sync::Arc;

/// Jobs one claim takes.
const CLAIM_BATCH: u32 = 16;
/// Longest error text kept with a job (for operators; never personal data).
const MAX_ERROR_LEN: usize = 300;

/// One worker (there may be several per database: each claims with its own id).
pub struct Worker {
    gateway: Arc<Gateway>,
    id: String,
    http: reqwest::Client,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl Worker {
    pub fn new(gateway: Arc<Gateway>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(gateway.policy().callback_timeout)
            // A callback URL is registered; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            gateway,
            id: format!("worker-{}", uuid::Uuid::new_v4()),
            http,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claims the jobs due now and works each once: answer (if not yet), then one delivery
    /// attempt.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let now = self.now();
        let store = self.gateway.registry().store();
        let jobs = store
            .claim_dci_jobs(
                &self.id,
                now,
                now + self.gateway.policy().lease,
                CLAIM_BATCH,
            )
            .await?;
        let mut pass = Pass {
            claimed: jobs.len(),
            ..Pass::default()
        };
        for job in jobs {
            match self.work(job).await {
                Ok(Outcome::Delivered) => pass.delivered += 1,
                Ok(Outcome::Retrying) => pass.retrying += 1,
                Ok(Outcome::Failed) => pass.failed += 1,
                Ok(Outcome::LeaseLost) => {}
                Err(error) => {
                    tracing::warn!(%error, "DCI job left for a later pass");
                }
            }
        }
        Ok(pass)
    }

    /// Runs until `shutdown` resolves: a pass whenever a job is stored in this process, and
    /// at least every `poll` (jobs of other processes, retries coming due).
    pub async fn run(
        self,
        poll: std::time::Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let wake = self.gateway.wake().clone();
        loop {
            match self.run_once().await {
                // A full batch: there may be more due right away.
                Ok(pass) if pass.claimed as u32 == CLAIM_BATCH => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "DCI worker pass failed"),
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.gateway.registry().clock().now()
    }

    async fn work(&self, mut job: DciJobRow) -> Result<Outcome, StoreError> {
        let store = self.gateway.registry().store().clone();
        let partner = match self.gateway.partners().get(&job.sender_id).await {
            Ok(Some(partner)) if partner.enabled => partner,
            Ok(_) => {
                return self
                    .give_up(&job, "the partner is unknown or disabled")
                    .await;
            }
            Err(error) => return Err(StoreError::Unavailable(error.to_string())),
        };
        if !partner.allows_callback(&job.callback_url) {
            return self
                .give_up(
                    &job,
                    "the callback URL is no longer registered for the partner",
                )
                .await;
        }
        if job.result.is_none() {
            let (result, status) = self.gateway.answer_job(&job, &partner).await?;
            job.result = Some(result.to_string());
            job.status = status.to_owned();
            let kept = store
                .update_dci_job(&self.id, &self.update(&job, false))
                .await?;
            if !kept {
                return Ok(Outcome::LeaseLost);
            }
        }
        let attempt = self.deliver(&job, &partner).await;
        job.attempts += 1;
        let now = self.now();
        let outcome = match attempt {
            Ok(()) => {
                job.delivery = "delivered".into();
                job.last_error = None;
                tracing::info!(job_id = %job.job_id, attempts = job.attempts, "DCI callback delivered");
                Outcome::Delivered
            }
            Err(reason) => {
                job.last_error = Some(reason.chars().take(MAX_ERROR_LEN).collect());
                let next = now + self.backoff(job.attempts);
                if next > job.deadline {
                    job.delivery = "failed".into();
                    tracing::warn!(job_id = %job.job_id, attempts = job.attempts, %reason, "DCI callback failed for good");
                    Outcome::Failed
                } else {
                    job.next_attempt_at = next;
                    tracing::info!(job_id = %job.job_id, attempts = job.attempts, %reason, "DCI callback not acknowledged; will retry");
                    Outcome::Retrying
                }
            }
        };
        if store
            .update_dci_job(&self.id, &self.update(&job, true))
            .await?
        {
            Ok(outcome)
        } else {
            Ok(Outcome::LeaseLost)
        }
    }

    async fn give_up(&self, job: &DciJobRow, reason: &str) -> Result<Outcome, StoreError> {
        let mut job = job.clone();
        job.delivery = "failed".into();
        job.last_error = Some(reason.to_owned());
        tracing::warn!(job_id = %job.job_id, reason, "DCI job failed");
        self.gateway
            .registry()
            .store()
            .update_dci_job(&self.id, &self.update(&job, true))
            .await?;
        Ok(Outcome::Failed)
    }

    fn update(&self, job: &DciJobRow, release_lease: bool) -> DciJobUpdate {
        DciJobUpdate {
            job_id: job.job_id,
            status: job.status.clone(),
            result: job.result.clone(),
            delivery: job.delivery.clone(),
            attempts: job.attempts,
            next_attempt_at: job.next_attempt_at,
            last_error: job.last_error.clone(),
            updated_at: self.now(),
            release_lease,
        }
    }

    /// Delay before attempt `attempts + 1`: initial · 2^(attempts−1), capped, from its upper
    /// half at random.
    fn backoff(&self, attempts: i32) -> Duration {
        let policy = self.gateway.policy();
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        let full = policy
            .retry_initial
            .num_milliseconds()
            .saturating_mul(1_i64 << doublings)
            .min(policy.retry_max.num_milliseconds())
            .max(1);
        let half = full / 2;
        Duration::milliseconds(half + rand::random_range(0..=full - half))
    }

    /// One signed POST of the job's answer; `Ok` when the partner acknowledged it.
    async fn deliver(&self, job: &DciJobRow, partner: &Partner) -> Result<(), String> {
        let result: Value = job
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .ok_or("the stored answer is unreadable")?;
        let operation = Operation::from_job_kind(&job.kind).ok_or("unknown job kind")?;
        let envelope = self
            .gateway
            .seal_reply(
                partner,
                operation,
                result["header"].clone(),
                result["message"].clone(),
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
        let response = self
            .http
            .post(&job.callback_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(envelope)
            .send()
            .await
            .map_err(|e| format!("callback request failed: {}", without_url(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let ack = body["message"]["ack_status"].as_str().unwrap_or_default();
        // ACK: received and will be processed; NACK: received, nothing more to say. Either
        // way the partner has the message.
        if status.is_success() && (ack == "ACK" || ack == "NACK") {
            Ok(())
        } else {
            let code = body["message"]["error"]["code"]
                .as_str()
                .unwrap_or_default();
            Err(format!("HTTP {status}, ack_status `{ack}` {code}"))
        }
    }
}

/// What working a job came to.
enum Outcome {
    Delivered,
    Retrying,
    Failed,
    /// Another worker took the job over (our lease ran out): it is theirs now.
    LeaseLost,
}

/// reqwest errors name the URL; keep the reason only.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "error"
    };
    kind.to_owned()
}
