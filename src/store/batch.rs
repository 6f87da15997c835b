//! Group commit for appends that every request makes (the disclosure log): a task takes every
//! item waiting at that moment and writes them in one transaction through a backend's
//! writer, then answers each. Nothing is answered before its item is committed, and a failed
//! transaction fails every item of it (none is written).

use super::{StoreError, StoreResult};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Items written by one transaction, at most.
const BATCH: usize = 128;

/// Writes one batch in one transaction.
pub(super) type WriteBatch<T> =
    Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = StoreResult<()>> + Send>> + Send + Sync>;

/// Queues items for the writing task.
pub(super) struct Batcher<T> {
    queue: mpsc::Sender<(T, oneshot::Sender<StoreResult<()>>)>,
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the writing task on the current runtime; it ends when every clone is dropped.
    pub(super) fn start(write: WriteBatch<T>) -> Self {
        let (queue, incoming) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(write, incoming));
        Self { queue }
    }

    /// Writes `item` (with whatever else is waiting) and returns once it is committed.
    pub(super) async fn write(&self, item: T) -> StoreResult<()> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the log writer has stopped".into());
        self.queue
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run<T>(
    write: WriteBatch<T>,
    mut incoming: mpsc::Receiver<(T, oneshot::Sender<StoreResult<()>>)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while incoming.recv_many(&mut batch, BATCH).await > 0 {
        let (items, answers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
        let outcome = write(items).await;
        for answer in answers {
            let _ = answer.send(match &outcome {
                Ok(()) => Ok(()),
                Err(error) => Err(StoreError::Unavailable(error.to_string())),
            });
        }
    }
}
