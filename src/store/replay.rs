//! Replay protection with group commit. Every DCI request records its partner's message id: a
//! write per request, on the critical path. Writes queue behind each other under load (on
//! SQLite, one writer; on PostgreSQL, a commit each), so a task owns the recording: it takes
//! every request waiting at that moment, records them with one statement (one transaction)
//! through a backend's [`RecordIds`], then answers each. Nothing is answered before its id is
//! committed.

use super::{StoreError, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Ids recorded by one statement, at most.
const BATCH: usize = 256;

/// One message id to record: sender, id, when it was seen.
pub(super) type SeenId = (String, String, DateTime<Utc>);

/// How a backend records a batch of ids in one statement.
#[async_trait]
pub(super) trait RecordIds: Send + Sync + 'static {
    /// Records `ids` (no two alike) as seen; an id already recorded at or after
    /// `forget_before` is left as it is. Returns the ids that were new or forgotten.
    async fn record(
        &self,
        ids: &[SeenId],
        forget_before: DateTime<Utc>,
    ) -> StoreResult<HashSet<(String, String)>>;
}

struct Pending {
    id: SeenId,
    forget_before: DateTime<Utc>,
    answer: oneshot::Sender<StoreResult<bool>>,
}

/// Records message ids, batching concurrent requests.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    queue: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the recording task on the current runtime; it ends when every `Recorder` clone
    /// is dropped.
    pub(super) fn start(writer: Arc<dyn RecordIds>) -> Self {
        let (queue, incoming) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(writer, incoming));
        Self { queue }
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
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            id: (sender_id.to_owned(), message_id.to_owned(), at),
            forget_before,
            answer,
        };
        let stopped = || StoreError::Unavailable("the replay recorder has stopped".into());
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(writer: Arc<dyn RecordIds>, mut incoming: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while incoming.recv_many(&mut batch, BATCH).await > 0 {
        // The same id twice in one batch: only its first occurrence can be new.
        let mut seen = HashSet::new();
        let firsts: Vec<bool> = batch
            .iter()
            .map(|p: &Pending| seen.insert((p.id.0.clone(), p.id.1.clone())))
            .collect();
        let ids: Vec<SeenId> = batch
            .iter()
            .zip(&firsts)
            .filter(|(_, first)| **first)
            .map(|(p, _)| p.id.clone())
            .collect();
        // One forgetting horizon for the batch: the earliest (its requests arrived within
        // moments of each other; the earliest forgets least).
        let forget_before = batch
            .iter()
            .map(|p| p.forget_before)
            .min()
            .unwrap_or_default();
        let outcome = writer.record(&ids, forget_before).await;
        for (pending, first) in batch.drain(..).zip(firsts) {
            let answer = match &outcome {
                Ok(fresh) => {
                    Ok(first && fresh.contains(&(pending.id.0.clone(), pending.id.1.clone())))
                }
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            };
            let _ = pending.answer.send(answer);
        }
    }
}
