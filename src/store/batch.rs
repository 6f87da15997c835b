//! Group commit for writes that every request makes (partners' message ids, the disclosure
//! log): a task takes every item waiting at that moment and writes them in one transaction
//! through a backend's writer, then answers each. Nothing is answered before its item is
//! committed, and a failed transaction fails every item of it (none is written).

use super::{StoreError, StoreResult};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Items written by one transaction, at most.
const BATCH: usize = 256;

/// Writes one batch in one transaction and answers each item, in order.
pub(super) type WriteBatch<T, R> =
    Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = StoreResult<Vec<R>>> + Send>> + Send + Sync>;

type Waiting<T, R> = (T, oneshot::Sender<StoreResult<R>>);

/// Queues items for the writing task.
pub(super) struct Batcher<T, R> {
    queue: mpsc::Sender<Waiting<T, R>>,
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the writing task on the current runtime; it ends when every clone is dropped.
    pub(super) fn start(write: WriteBatch<T, R>) -> Self {
        let (queue, incoming) = mpsc::channel(4 * BATCH);
        tokio::spawn(run(write, incoming));
        Self { queue }
    }

    /// Writes `item` (with whatever else is waiting) and returns its answer once committed.
    pub(super) async fn write(&self, item: T) -> StoreResult<R> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the group-commit writer has stopped".into());
        self.queue
            .send((item, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run<T, R>(write: WriteBatch<T, R>, mut incoming: mpsc::Receiver<Waiting<T, R>>) {
    let mut batch = Vec::with_capacity(BATCH);
    while incoming.recv_many(&mut batch, BATCH).await > 0 {
        let (items, answers): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
        let count = items.len();
        match write(items).await {
            Ok(results) if results.len() == count => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            outcome => {
                let error = match outcome {
                    Err(error) => error.to_string(),
                    Ok(_) => "a batch writer answered the wrong number of items".to_owned(),
                };
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Unavailable(error.clone())));
                }
            }
        }
    }
}
