//! Group commit, an implementation detail of [`EventStore`](super::EventStore)'s
//! append: appends that arrive while one is being written share the next transaction.

use std::sync::Arc;

use cqrs_es::persist::{PersistenceError, SerializedEvent};

use shop_sql::Pool;

use super::hook::AppendHook;
use super::write::{commit_batch, AppendFailure, Snapshot};

/// Most appends written by one transaction of a [`GroupCommit`].
const GROUP_MAX: usize = 64;

/// One append waiting for its group.
pub(super) struct Pending {
    pub(super) events: Vec<SerializedEvent>,
    pub(super) snapshot: Option<Snapshot>,
    pub(super) done: tokio::sync::oneshot::Sender<Result<(), PersistenceError>>,
}

/// Group commit: appends that arrive while a transaction is being written wait for the
/// next, which writes all of them — one statement for every event and outbox row, the
/// hook over all of them, one commit — instead of a transaction each. On SQLite, whose
/// one writer serialises every transaction of a file, a group takes the writer once. Appends
/// to one aggregate never share a group. When a group fails before its commit (a lost
/// race, a hook's refusal), each of its appends is written alone, so each gets its own
/// outcome; a failure at the commit is reported to all of them.
pub(super) struct GroupCommit {
    pub(super) queue: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Appends of this store being written now.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
}

impl GroupCommit {
    pub(super) fn start(pool: Pool, hook: Option<Arc<dyn AppendHook>>) -> Self {
        let (queue, waiting) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_groups(pool, hook, waiting));
        GroupCommit {
            queue,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// One append counted in [`GroupCommit::in_flight`] while it lives.
pub(super) struct InFlight<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    /// Appends in flight when this one started.
    pub(super) others: usize,
}

impl<'a> InFlight<'a> {
    pub(super) fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        let others = count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight { count, others }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

async fn write_groups(
    pool: Pool,
    hook: Option<Arc<dyn AppendHook>>,
    mut waiting: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    let mut deferred: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(pending) => pending,
            None => match waiting.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut aggregates: std::collections::HashSet<String> = first
            .events
            .iter()
            .map(|e| e.aggregate_id.clone())
            .collect();
        let mut group = vec![first];
        let mut later = std::collections::VecDeque::new();
        let candidates = std::iter::from_fn(|| deferred.pop_front())
            .chain(std::iter::from_fn(|| waiting.try_recv().ok()));
        for pending in candidates {
            if pending
                .events
                .iter()
                .any(|e| aggregates.contains(&e.aggregate_id))
            {
                later.push_back(pending);
                continue;
            }
            aggregates.extend(pending.events.iter().map(|e| e.aggregate_id.clone()));
            group.push(pending);
            if group.len() == GROUP_MAX {
                break;
            }
        }
        later.extend(deferred.drain(..));
        deferred = later;
        write_group(&pool, hook.as_deref(), group).await;
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(appends = group.len()))]
async fn write_group(pool: &Pool, hook: Option<&dyn AppendHook>, group: Vec<Pending>) {
    if group.len() > 1 {
        let events: Vec<SerializedEvent> = group
            .iter()
            .flat_map(|p| p.events.iter().cloned())
            .collect();
        let snapshots: Vec<Snapshot> = group.iter().filter_map(|p| p.snapshot.clone()).collect();
        metrics::histogram!("append_group_size").record(group.len() as f64);
        match commit_batch(pool, hook, &events, &snapshots).await {
            Ok(()) => {
                for pending in group {
                    let _ = pending.done.send(Ok(()));
                }
                return;
            }
            Err(AppendFailure::AtCommit(e)) => {
                let message = e.to_string();
                for pending in group {
                    let _ = pending.done.send(Err(PersistenceError::ConnectionError(
                        message.clone().into(),
                    )));
                }
                return;
            }
            // Nothing stored: each append is written alone below.
            Err(AppendFailure::Before(_)) => {}
        }
    }
    for pending in group {
        let snapshots: Vec<Snapshot> = pending.snapshot.into_iter().collect();
        let result = commit_batch(pool, hook, &pending.events, &snapshots)
            .await
            .map_err(AppendFailure::into_error);
        let _ = pending.done.send(result);
    }
}
