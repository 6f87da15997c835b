//! Replay protection with group commit. Every DCI request records its partner's message id: a
//! write per request, on the critical path. The ids of all requests waiting at one moment are
//! recorded with one statement (`super::batch`) through a backend's [`RecordIds`]; nothing is
//! answered before its id is committed. Expired ids are purged at most once a minute.

use super::StoreResult;
use super::batch::Batcher;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// One message id to record: sender, id, when it was seen.
pub(super) type SeenId = (String, String, DateTime<Utc>);

/// How a backend records and purges message ids.
#[async_trait]
pub(super) trait RecordIds: Send + Sync + 'static {
    /// Records `ids` (no two alike) as seen; an id already recorded at or after
    /// `forget_before` is left as it is. Returns the ids that were new or forgotten.
    async fn record(
        &self,
        ids: &[SeenId],
        forget_before: DateTime<Utc>,
    ) -> StoreResult<HashSet<(String, String)>>;

    /// Deletes the ids last seen before `before`.
    async fn purge(&self, before: DateTime<Utc>) -> StoreResult<()>;
}

/// One id waiting to be recorded, with the window of its request.
type Pending = (SeenId, DateTime<Utc>);

/// Records message ids, batching concurrent requests.
#[derive(Clone)]
pub(super) struct Recorder {
    writer: Arc<dyn RecordIds>,
    batcher: Batcher<Pending, bool>,
    /// When expired ids were last purged (Unix seconds).
    last_purge: Arc<AtomicI64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    /// Starts the recording task on the current runtime.
    pub(super) fn start(writer: Arc<dyn RecordIds>) -> Self {
        let batch_writer = writer.clone();
        let batcher = Batcher::start(Arc::new(move |batch: Vec<Pending>| {
            let writer = batch_writer.clone();
            Box::pin(async move { record_batch(writer.as_ref(), batch).await })
        }));
        Self {
            writer,
            batcher,
            last_purge: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Whether `message_id` is new for `sender_id` (or was last seen before
    /// `forget_before`); either way it is recorded as seen at `at`.
    pub(super) async fn remember(
        &self,
        sender_id: &str,
        message_id: &str,
        at: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let id = (sender_id.to_owned(), message_id.to_owned(), at);
        let fresh = self.batcher.write((id, forget_before)).await?;
        let now = at.timestamp();
        let last = self.last_purge.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.writer.purge(forget_before).await?;
        }
        Ok(fresh)
    }
}

/// Records one batch; answers, per request, whether its id was new.
async fn record_batch(writer: &dyn RecordIds, batch: Vec<Pending>) -> StoreResult<Vec<bool>> {
    // The same id twice in one batch: only its first occurrence can be new.
    let mut seen = HashSet::new();
    let firsts: Vec<bool> = batch
        .iter()
        .map(|((sender, id, _), _)| seen.insert((sender.clone(), id.clone())))
        .collect();
    let ids: Vec<SeenId> = batch
        .iter()
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|((id, _), _)| id.clone())
        .collect();
    // One forgetting horizon for the batch: the earliest (its requests arrived within moments
    // of each other; the earliest forgets least).
    let forget_before = batch.iter().map(|(_, f)| *f).min().unwrap_or_default();
    let fresh = writer.record(&ids, forget_before).await?;
    Ok(batch
        .iter()
        .zip(firsts)
        .map(|(((sender, id, _), _), first)| first && fresh.contains(&(sender.clone(), id.clone())))
        .collect())
}
