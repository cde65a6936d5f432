//! Executing commands on cqrs-es aggregates over the [`EventStore`], with retries on
//! optimistic-concurrency conflicts and one typed error for the HTTP edge.
//!
//! Aggregates load from their latest snapshot and the events after it, or from the bus's
//! cache of the states its own appends produced. The store stays the judge: an append
//! decided on a stale cached state takes a sequence that exists (a conflict: the entry
//! is dropped and the command re-run on a fresh load), and a refusal or a no-op decided on
//! a cached state is confirmed against the store before it stands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore as _};
use shop_schemas::EventMetadata;
use tracing::{debug, warn};

use crate::idempotency::KeyedCommand;
use crate::store::{EventStore, HookError, TxEventStore};
use shop_sql::{Conn, Pool};

/// How often a command is re-run after losing an optimistic-concurrency race before the
/// caller gets a conflict (409).
pub const CONFLICT_RETRIES: usize = 8;

/// How long a command that commutes ([`CommandBus::commuting`]) is re-run after losing
/// races, beyond [`CONFLICT_RETRIES`], before the caller gets a conflict.
pub const COMMUTING_DEADLINE: Duration = Duration::from_secs(5);

/// The longest pause between two attempts of a command (the pause is random, up to 5 ms
/// times the attempt, up to this).
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// The pause before attempt `attempt + 1` of a command that lost a race: random ("full
/// jitter"), so that the losers of one race do not meet again in the next.
fn conflict_backoff(attempt: usize) -> Duration {
    let ceiling = (5 * attempt as u64).clamp(1, MAX_BACKOFF.as_millis() as u64);
    Duration::from_millis(fastrand::u64(1..=ceiling))
}

/// Why a command did not append.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command (a domain rule).
    #[error(transparent)]
    Rejected(E),
    /// Other commands kept winning the race for this aggregate.
    #[error("the aggregate was changed concurrently; retry the request")]
    Conflict,
    /// A unique key the service keeps (e.g. a SKU) is taken.
    #[error("{0} is already taken")]
    Taken(String),
    /// The store failed.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Aggregates kept by a [`CommandBus`] by default.
pub const CACHE_CAPACITY: usize = 10_000;

/// Runs commands of one aggregate type against the event store.
pub struct CommandBus<A>
where
    A: Aggregate,
{
    store: EventStore,
    services: A::Services,
    /// Snapshot every this many events (`None`: replay every event).
    snapshot_every: Option<usize>,
    cache: Option<Arc<AggregateCache<A>>>,
    /// Which commands commute ([`CommandBus::commuting`]).
    commutes: Option<fn(&A::Command) -> bool>,
}

impl<A> CommandBus<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone,
    A::Services: Clone,
{
    pub fn new(store: EventStore, services: A::Services) -> Self {
        CommandBus {
            store,
            services,
            snapshot_every: None,
            cache: Some(Arc::new(AggregateCache::new(CACHE_CAPACITY))),
            commutes: None,
        }
    }

    /// Declares the commands whose effect does not depend on the order they are applied
    /// in (a deposit, a restock): one that loses an optimistic-concurrency race is re-run
    /// until it is decided, for up to [`COMMUTING_DEADLINE`], instead of answering a
    /// conflict after [`CONFLICT_RETRIES`]. Each attempt still decides on a fresh state.
    pub fn commuting(mut self, commutes: fn(&A::Command) -> bool) -> Self {
        self.commutes = Some(commutes);
        self
    }

    /// The database of the bus's event store.
    pub fn pool(&self) -> &Pool {
        self.store.pool()
    }

    /// Like [`CommandBus::new`], writing a snapshot every `snapshot_every` events.
    pub fn with_snapshots(store: EventStore, services: A::Services, snapshot_every: usize) -> Self {
        CommandBus {
            snapshot_every: Some(snapshot_every),
            ..Self::new(store, services)
        }
    }

    /// Without the aggregate cache: every command loads its aggregate from the store.
    pub fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    fn store<R: PersistedEventRepository + AfterAppend>(
        &self,
        repository: R,
    ) -> AggregateStore<R, A> {
        AggregateStore {
            repository,
            snapshot_every: self.snapshot_every,
            cache: self.cache.clone(),
            cached: AtomicBool::new(false),
            sequence: AtomicUsize::new(0),
            presume_new: AtomicBool::new(false),
        }
    }

    /// Executes a command in a transaction of its own; a lost concurrency race is retried
    /// with a fresh aggregate.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        self.execute_versioned(aggregate_id, command, metadata)
            .await
            .map(|_| ())
    }

    /// Like [`CommandBus::execute`], returning the aggregate's version after the command
    /// (its last sequence) for a read-your-writes token.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    pub async fn execute_versioned(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<i64, CommandError<A::Error>> {
        self.execute_alone(aggregate_id, command, metadata, false)
            .await
    }

    /// [`CommandBus::execute_versioned`] inside the caller's span.
    async fn execute_alone(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        presume_new: bool,
    ) -> Result<i64, CommandError<A::Error>> {
        let store = self.store(self.store.clone());
        store.presume_new.store(presume_new, Ordering::Relaxed);
        self.run_with_retries(&store, aggregate_id, command, metadata)
            .await?;
        Ok(store.sequence.load(Ordering::Relaxed) as i64)
    }

    /// Like [`CommandBus::execute_versioned`], under the request's idempotency key if it
    /// has one: the command then runs in the key's transaction (see
    /// [`crate::idempotency`]), whose commit stores the events and the key together, or
    /// neither. A lost concurrency race rolls back to a savepoint and is retried in it.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub fn execute_keyed<'a>(
        &'a self,
        keyed: &'a mut KeyedCommand,
        aggregate_id: &'a str,
        command: A::Command,
        metadata: &'a EventMetadata,
    ) -> impl std::future::Future<Output = Result<i64, CommandError<A::Error>>> + 'a {
        // A plain function, not one more `async` level: the append path's futures are deep
        // enough that another one overflows the compiler's query depth in the services.
        self.execute_keyed_as(keyed, aggregate_id, command, metadata, false)
    }

    /// Like [`CommandBus::execute_keyed`], for an aggregate whose id the caller has just
    /// made (an order's `Uuid::now_v7`): as [`CommandBus::execute_new_in`], its first
    /// attempt starts from the default state without reading the store, and the store's
    /// optimistic check still judges.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub fn execute_new_keyed<'a>(
        &'a self,
        keyed: &'a mut KeyedCommand,
        aggregate_id: &'a str,
        command: A::Command,
        metadata: &'a EventMetadata,
    ) -> impl std::future::Future<Output = Result<i64, CommandError<A::Error>>> + 'a {
        self.execute_keyed_as(keyed, aggregate_id, command, metadata, true)
    }

    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    async fn execute_keyed_as(
        &self,
        keyed: &mut KeyedCommand,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        presume_new: bool,
    ) -> Result<i64, CommandError<A::Error>> {
        let Some(conn) = keyed.transaction() else {
            return self
                .execute_alone(aggregate_id, command, metadata, presume_new)
                .await;
        };
        let store = self.store(TxEventStore::new(conn, self.store.hook()));
        store.presume_new.store(presume_new, Ordering::Relaxed);
        self.run_with_retries(&store, aggregate_id, command, metadata)
            .await?;
        Ok(store.sequence.load(Ordering::Relaxed) as i64)
    }

    /// Executes a command inside the caller's transaction (a reaction's: its dedup record
    /// and checkpoint commit with the events, or nothing does). A lost concurrency race
    /// rolls back to a savepoint and is retried; the caller's transaction stays usable.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    pub async fn execute_in(
        &self,
        conn: &mut Conn,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        self.execute_in_as(conn, aggregate_id, command, metadata, false)
            .await
    }

    /// Like [`CommandBus::execute_in`], for an aggregate the caller knows to have no
    /// events yet (the reservation an `OrderPlaced` starts): its first attempt starts from
    /// the default state without reading the store (one query fewer). The store still
    /// judges: if the aggregate has events after all, the append loses the race (rolled
    /// back to its savepoint) and the command runs again on a fresh load; a refusal on the
    /// presumed state stands only once the store confirms there are none.
    ///
    /// # Errors
    /// See [`CommandError`].
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, aggregate_id = %aggregate_id))]
    pub async fn execute_new_in(
        &self,
        conn: &mut Conn,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        self.execute_in_as(conn, aggregate_id, command, metadata, true)
            .await
    }

    async fn execute_in_as(
        &self,
        conn: &mut Conn,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        presume_new: bool,
    ) -> Result<(), CommandError<A::Error>> {
        // Replaying imported history: the outcome is already in the store.
        if replaying() {
            return Ok(());
        }
        let store = self.store(TxEventStore::new(conn, self.store.hook()));
        store.presume_new.store(presume_new, Ordering::Relaxed);
        self.run_with_retries(&store, aggregate_id, command, metadata)
            .await
    }

    /// What `CqrsFramework::execute_with_metadata` does (load, handle, commit), on a store
    /// the bus can still ask whether a refusal's state was current.
    async fn attempt<R: PersistedEventRepository + AfterAppend>(
        &self,
        store: &AggregateStore<R, A>,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), AggregateError<A::Error>> {
        let mut context = store.load_aggregate(aggregate_id).await?;
        let sink = EventSink::default();
        context
            .aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        store
            .commit(sink.collect().await, context, metadata.to_map())
            .await?;
        Ok(())
    }

    async fn run_with_retries<R: PersistedEventRepository + AfterAppend>(
        &self,
        store: &AggregateStore<R, A>,
        aggregate_id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<(), CommandError<A::Error>> {
        let started = Instant::now();
        let commutes = self.commutes.is_some_and(|commutes| commutes(&command));
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            store.cached.store(false, Ordering::Relaxed);
            match self
                .attempt(store, aggregate_id, command.clone(), metadata)
                .await
            {
                Ok(()) => break Ok(()),
                Err(AggregateError::AggregateConflict)
                    if attempt <= CONFLICT_RETRIES
                        || (commutes && started.elapsed() < COMMUTING_DEADLINE) =>
                {
                    debug!(attempt, "concurrency conflict, retrying");
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                // A refusal decided on a cached state stands only if that state is current.
                Err(AggregateError::UserError(e))
                    if store.cached.load(Ordering::Relaxed) && attempt <= CONFLICT_RETRIES =>
                {
                    match store.is_current(aggregate_id).await {
                        Ok(true) => break Err(CommandError::Rejected(e)),
                        Ok(false) => debug!("refused on a stale cached state, retrying"),
                        Err(e) => break Err(map_error(e)),
                    }
                }
                Err(e) => break Err(map_error(e)),
            }
        };
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict) => "conflict",
            Err(CommandError::Taken(_)) => "taken",
            Err(CommandError::Unavailable(e)) => {
                warn!(error = %e, "command failed");
                "failed"
            }
        };
        metrics::histogram!("command_duration_seconds", "aggregate" => A::TYPE, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Aggregate states as of their last append through one bus (see the module docs).
struct AggregateCache<A> {
    entries: Mutex<HashMap<String, (A, usize)>>,
    capacity: usize,
}

impl<A: Clone> AggregateCache<A> {
    fn new(capacity: usize) -> Self {
        AggregateCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, aggregate_id: &str) -> Option<(A, usize)> {
        self.entries
            .lock()
            .expect("cache lock")
            .get(aggregate_id)
            .cloned()
    }

    /// Keeps a state unless a later one is there; when full, drops an arbitrary entry.
    fn put(&self, aggregate_id: &str, aggregate: A, sequence: usize) {
        let mut entries = self.entries.lock().expect("cache lock");
        if entries
            .get(aggregate_id)
            .is_some_and(|(_, known)| *known >= sequence)
        {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(aggregate_id) {
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(aggregate_id.to_string(), (aggregate, sequence));
    }

    fn remove(&self, aggregate_id: &str) {
        self.entries
            .lock()
            .expect("cache lock")
            .remove(aggregate_id);
    }
}

/// cqrs-es's event store for one command: loads from the cache, or from the latest
/// snapshot and the events after it; commits the events with a snapshot when the append
/// crosses a multiple of the interval.
struct AggregateStore<R, A: Aggregate> {
    repository: R,
    snapshot_every: Option<usize>,
    cache: Option<Arc<AggregateCache<A>>>,
    /// The last load came from the cache.
    cached: AtomicBool,
    /// The aggregate's sequence when loaded, then after the append.
    sequence: AtomicUsize,
    /// The next load starts from the default state without reading the store, once
    /// ([`CommandBus::execute_new_in`]).
    presume_new: AtomicBool,
}

impl<R, A> AggregateStore<R, A>
where
    R: PersistedEventRepository + AfterAppend,
    A: Aggregate + Clone + 'static,
{
    /// Whether the store holds no event after the loaded state's; if it does, the
    /// cached entry is dropped.
    async fn is_current(&self, aggregate_id: &str) -> Result<bool, AggregateError<A::Error>> {
        let later = self
            .repository
            .get_last_events::<A>(aggregate_id, self.sequence.load(Ordering::Relaxed))
            .await?;
        if !later.is_empty() {
            if let Some(cache) = &self.cache {
                cache.remove(aggregate_id);
                self.repository
                    .set_uncommitted::<A>(state_key::<A>(aggregate_id), None)
                    .await;
            }
        }
        Ok(later.is_empty())
    }
}

/// Where an append's state goes once it is durable, and, inside a transaction, until
/// then.
trait AfterAppend {
    /// Runs `work` when the append is committed.
    fn after_commit(
        &self,
        work: impl FnOnce() + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send;

    /// The state an earlier append of the same transaction left (the shared cache only
    /// learns it at commit: without this, a reaction's second command to one aggregate
    /// in a batch started from the state before the first, lost the race against its own
    /// transaction, rolled back to its savepoint and reloaded the aggregate).
    fn uncommitted<A: Clone + Send + 'static>(
        &self,
        _key: &str,
    ) -> impl std::future::Future<Output = Option<(A, usize)>> + Send {
        async { None }
    }

    /// Records (`Some`) or forgets (`None`) the transaction's state of an aggregate;
    /// outside a transaction there is nothing to record (and nothing is cloned).
    fn set_uncommitted<A: Clone + Send + 'static>(
        &self,
        _key: String,
        _state: Option<(&A, usize)>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

impl AfterAppend for EventStore {
    async fn after_commit(&self, work: impl FnOnce() + Send + 'static) {
        work();
    }
}

impl AfterAppend for TxEventStore<'_> {
    async fn after_commit(&self, work: impl FnOnce() + Send + 'static) {
        TxEventStore::after_commit(self, work).await;
    }

    async fn uncommitted<A: Clone + Send + 'static>(&self, key: &str) -> Option<(A, usize)> {
        self.uncommitted_state(key).await
    }

    fn set_uncommitted<A: Clone + Send + 'static>(
        &self,
        key: String,
        state: Option<(&A, usize)>,
    ) -> impl std::future::Future<Output = ()> + Send {
        let state = state.map(|(state, sequence)| (state.clone(), sequence));
        self.set_uncommitted_state(key, state)
    }
}

/// The key of an aggregate among a transaction's uncommitted states.
fn state_key<A: Aggregate>(aggregate_id: &str) -> String {
    format!("{}/{aggregate_id}", A::TYPE)
}

impl<R, A> cqrs_es::EventStore<A> for AggregateStore<R, A>
where
    R: PersistedEventRepository + AfterAppend,
    A: Aggregate + Clone + 'static,
{
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.repository
            .get_events::<A>(aggregate_id)
            .await?
            .into_iter()
            .map(|e| EventEnvelope::try_from(e).map_err(AggregateError::from))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(aggregate_id = %aggregate_id))]
    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let uncommitted = match &self.cache {
            Some(_) => {
                self.repository
                    .uncommitted::<A>(&state_key::<A>(aggregate_id))
                    .await
            }
            None => None,
        };
        let presumed = self
            .presume_new
            .swap(false, Ordering::Relaxed)
            .then(|| (A::default(), 0));
        if let Some((aggregate, sequence)) = uncommitted
            .or_else(|| self.cache.as_ref().and_then(|c| c.get(aggregate_id)))
            .or(presumed)
        {
            self.cached.store(true, Ordering::Relaxed);
            self.sequence.store(sequence, Ordering::Relaxed);
            return Ok(EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_string(),
                aggregate,
                current_sequence: sequence,
                current_snapshot: None,
            });
        }
        let (mut aggregate, mut sequence) = (A::default(), 0);
        if self.snapshot_every.is_some() {
            if let Some(snapshot) = self.repository.get_snapshot::<A>(aggregate_id).await? {
                // A snapshot of an older shape of the aggregate is ignored (full replay).
                if let Ok(state) = serde_json::from_value(snapshot.aggregate) {
                    aggregate = state;
                    sequence = snapshot.current_sequence;
                }
            }
        }
        for event in self
            .repository
            .get_last_events::<A>(aggregate_id, sequence)
            .await?
        {
            let envelope: EventEnvelope<A> = EventEnvelope::try_from(event)?;
            sequence = envelope.sequence;
            aggregate.apply(envelope.payload);
        }
        self.sequence.store(sequence, Ordering::Relaxed);
        Ok(EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate,
            current_sequence: sequence,
            current_snapshot: None,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(events = events.len()))]
    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let aggregate_id = context.aggregate_id;
        let last = context.current_sequence;
        if events.is_empty() {
            // A no-op decided on a cached state stands only if that state is current.
            if self.cached.load(Ordering::Relaxed) && !self.is_current(&aggregate_id).await? {
                return Err(AggregateError::AggregateConflict);
            }
            return Ok(Vec::new());
        }
        let envelopes: Vec<EventEnvelope<A>> = events
            .into_iter()
            .zip(last + 1..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: aggregate_id.clone(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let next = last + envelopes.len();
        let snapshot_due = self
            .snapshot_every
            .is_some_and(|every| last / every != next / every);
        // cqrs-es's `EventSink::write` applied each event to the aggregate as the command
        // wrote it: the context holds the state after them.
        let state = (snapshot_due || self.cache.is_some()).then_some(context.aggregate);
        let snapshot = match (&state, snapshot_due) {
            (Some(state), true) => Some((
                aggregate_id.clone(),
                serde_json::to_value(state)
                    .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
                next,
            )),
            _ => None,
        };
        let serialized = envelopes
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if let Err(e) = self.repository.persist::<A>(&serialized, snapshot).await {
            if let Some(cache) = &self.cache {
                cache.remove(&aggregate_id);
                self.repository
                    .set_uncommitted::<A>(state_key::<A>(&aggregate_id), None)
                    .await;
            }
            return Err(e.into());
        }
        self.sequence.store(next, Ordering::Relaxed);
        if let (Some(cache), Some(state)) = (self.cache.clone(), state) {
            self.repository
                .set_uncommitted(state_key::<A>(&aggregate_id), Some((&state, next)))
                .await;
            self.repository
                .after_commit(move || cache.put(&aggregate_id, state, next))
                .await;
        }
        Ok(envelopes)
    }
}

fn map_error<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UnexpectedError(e) => match e.downcast::<HookError>() {
            Ok(hook) => match *hook {
                HookError::Taken { what } => CommandError::Taken(what),
                HookError::Sql(e) => CommandError::Unavailable(e.to_string()),
                HookError::Refused(why) => CommandError::Unavailable(why),
            },
            Err(e) => CommandError::Unavailable(e.to_string()),
        },
        AggregateError::DatabaseConnectionError(e) | AggregateError::DeserializationError(e) => {
            CommandError::Unavailable(e.to_string())
        }
    }
}

tokio::task_local! {
    static REPLAYING: bool;
}

/// Runs a reaction's handler in replay mode: its own tables are updated, but
/// [`CommandBus::execute_in`] issues no command (the history already holds the outcome).
pub async fn replay<F: std::future::Future>(work: F) -> F::Output {
    REPLAYING.scope(true, work).await
}

/// Whether the current task replays ([`replay`]).
pub fn replaying() -> bool {
    REPLAYING.try_with(|r| *r).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_random_grows_with_the_attempt_and_is_bounded() {
        for attempt in 1..=200 {
            let pause = conflict_backoff(attempt);
            assert!(pause >= Duration::from_millis(1), "{attempt}: {pause:?}");
            assert!(
                pause <= Duration::from_millis(5 * attempt as u64).min(MAX_BACKOFF),
                "{attempt}: {pause:?}"
            );
        }
        // Losers of one race spread out: not every pause is the same.
        let pauses: std::collections::HashSet<_> = (0..50).map(|_| conflict_backoff(20)).collect();
        assert!(pauses.len() > 5);
    }
}
