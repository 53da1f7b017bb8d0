//! The management plane's questions to the shards (list the calls, end one), each answered
//! within a deadline. A shard that does not answer in time makes the request fail as
//! "unavailable": a partial call list or a false "no such call" would mislead the operator.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use super::capture::CallTrace;
use super::ShardInput;
use crate::b2bua::{CallHandle, CallOverview};

/// How long the management plane waits for the shards (a question waits its turn in the
/// shard's queue behind the signalling, so only a shard stuck behind a full queue takes long).
const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

/// A shard that did not answer the management plane in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard} did not answer within {}s (overloaded?)", ADMIN_DEADLINE.as_secs())]
pub struct ShardBusy {
    pub shard: usize,
}

/// Every shard's calls, with the shard's index. The questions go out to all shards before the
/// first answer is awaited, so a slow shard costs one deadline, not one per shard.
pub(super) async fn list_calls(shards: &[mpsc::Sender<ShardInput>]) -> Result<Vec<(usize, CallOverview)>, ShardBusy> {
    let deadline = Instant::now() + ADMIN_DEADLINE;
    let mut answers = Vec::with_capacity(shards.len());
    for (shard, q) in shards.iter().enumerate() {
        answers.push((shard, put(q, shard, deadline, ShardInput::ListCalls).await?));
    }
    let mut all = Vec::new();
    for (shard, rx) in answers {
        all.extend(answer(rx, shard, deadline).await?.into_iter().map(|c| (shard, c)));
    }
    Ok(all)
}

/// Call `handle` of `shard`: `Ok(None)` when there is no such shard or call.
pub(super) async fn call(
    shards: &[mpsc::Sender<ShardInput>],
    shard: usize,
    handle: CallHandle,
) -> Result<Option<CallOverview>, ShardBusy> {
    let Some(q) = shards.get(shard) else { return Ok(None) };
    let deadline = Instant::now() + ADMIN_DEADLINE;
    answer(put(q, shard, deadline, |reply| ShardInput::GetCall(handle, reply)).await?, shard, deadline).await
}

/// The trace of call `handle` of `shard` (kept after the call ended, see `capture/trace.rs`).
pub(super) async fn trace(
    shards: &[mpsc::Sender<ShardInput>],
    shard: usize,
    handle: CallHandle,
) -> Result<Option<CallTrace>, ShardBusy> {
    let Some(q) = shards.get(shard) else { return Ok(None) };
    let deadline = Instant::now() + ADMIN_DEADLINE;
    answer(put(q, shard, deadline, |reply| ShardInput::GetTrace(handle, reply)).await?, shard, deadline).await
}

/// Ends call `handle` of `shard`: `Ok(false)` when there is no such shard or call. When the
/// deadline passes first the shard drops the question unanswered (see the shard driver), so
/// `ShardBusy` means the call was not ended.
pub(super) async fn teardown(
    shards: &[mpsc::Sender<ShardInput>],
    shard: usize,
    handle: CallHandle,
) -> Result<bool, ShardBusy> {
    let Some(q) = shards.get(shard) else { return Ok(false) };
    let deadline = Instant::now() + ADMIN_DEADLINE;
    answer(put(q, shard, deadline, |reply| ShardInput::Teardown(handle, reply)).await?, shard, deadline).await
}

/// Queues `question` (made with its reply channel) on `shard` before `deadline`.
async fn put<T>(
    q: &mpsc::Sender<ShardInput>,
    shard: usize,
    deadline: Instant,
    question: impl FnOnce(oneshot::Sender<T>) -> ShardInput,
) -> Result<oneshot::Receiver<T>, ShardBusy> {
    let (tx, rx) = oneshot::channel();
    match timeout_at(deadline, q.send(question(tx))).await {
        Ok(Ok(())) => Ok(rx),
        _ => Err(ShardBusy { shard }),
    }
}

/// The shard's answer, if it comes before `deadline`.
async fn answer<T>(rx: oneshot::Receiver<T>, shard: usize, deadline: Instant) -> Result<T, ShardBusy> {
    match timeout_at(deadline, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        _ => Err(ShardBusy { shard }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard task that answers: no calls, and call 7 exists.
    fn answering() -> mpsc::Sender<ShardInput> {
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                match input {
                    ShardInput::ListCalls(reply) => {
                        let _ = reply.send(Vec::new());
                    }
                    ShardInput::Teardown(handle, reply) => {
                        let _ = reply.send(handle.get() == 7);
                    }
                    ShardInput::GetCall(_, reply) => {
                        let _ = reply.send(None);
                    }
                    _ => {}
                }
            }
        });
        tx
    }

    /// A shard task that takes the questions and never answers (stuck behind its queue).
    fn stuck() -> (mpsc::Sender<ShardInput>, mpsc::Receiver<ShardInput>) {
        mpsc::channel(4)
    }

    #[tokio::test(start_paused = true)]
    async fn answering_shards_are_listed_and_their_calls_ended() {
        let shards = [answering(), answering()];
        assert!(list_calls(&shards).await.is_ok_and(|c| c.is_empty()));
        assert_eq!(teardown(&shards, 1, CallHandle::from_raw(7)).await, Ok(true));
        assert_eq!(teardown(&shards, 1, CallHandle::from_raw(8)).await, Ok(false), "no such call");
        assert_eq!(teardown(&shards, 2, CallHandle::from_raw(7)).await, Ok(false), "no such shard");
        assert!(call(&shards, 0, CallHandle::from_raw(7)).await.is_ok_and(|c| c.is_none()));
        assert!(call(&shards, 5, CallHandle::from_raw(7)).await.is_ok_and(|c| c.is_none()), "no such shard");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_that_does_not_answer_fails_the_request_after_one_deadline() {
        let (busy, _held) = stuck();
        let shards = [answering(), busy, answering()];
        let t0 = Instant::now();
        assert_eq!(list_calls(&shards).await.err(), Some(ShardBusy { shard: 1 }));
        assert_eq!(t0.elapsed(), ADMIN_DEADLINE, "one deadline for the whole request");
        assert_eq!(teardown(&shards, 1, CallHandle::from_raw(7)).await, Err(ShardBusy { shard: 1 }));
        assert!(call(&shards, 1, CallHandle::from_raw(7)).await.is_err());
        // Another shard's call is not held up by the stuck one.
        assert!(call(&shards, 2, CallHandle::from_raw(7)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_counts_against_the_deadline() {
        let (busy, _held) = mpsc::channel(1);
        let (tx, _rx) = oneshot::channel();
        busy.try_send(ShardInput::ListCalls(tx)).ok();
        assert_eq!(list_calls(&[busy]).await.err(), Some(ShardBusy { shard: 0 }));
    }
}
