//! What a consumer applies events with: the [`EventHandler`] contract that projectors and
//! saga reactions implement, its [`HandlerError`], and helpers for handlers (decoding an
//! event's data, the span of one application).

use async_trait::async_trait;
use shop_schemas::CloudEvent;

use shop_sql::Conn;

/// Why a handler could not apply an event.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    /// Retrying cannot help (bad data): dead-letter at once.
    pub permanent: bool,
    /// The consumer's database did not answer: not the event's fault, so it counts as no
    /// attempt; the runner waits for the database and reads the records again from its
    /// checkpoint.
    pub unavailable: bool,
}

impl HandlerError {
    pub fn transient(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: false,
            unavailable: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            permanent: true,
            unavailable: false,
        }
    }
}

/// Whether a database error says the database is out of reach (a lost or refused
/// connection, a server shutting down or starting) rather than anything about the work.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01-57P03 (admin or crash
        // shutdown, cannot connect now), 53300 (too many connections).
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// A reaction's command: a domain refusal will not change on retry (dead-letter it);
/// anything else (a conflict, the store) may.
impl<E: std::error::Error> From<crate::command::CommandError<E>> for HandlerError {
    fn from(e: crate::command::CommandError<E>) -> Self {
        match e {
            crate::command::CommandError::Rejected(e) => HandlerError::permanent(e.to_string()),
            other => HandlerError::transient(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError {
            unavailable: database_unavailable(&e),
            ..HandlerError::transient(e.to_string())
        }
    }
}

/// Applies events to the consumer's own tables, inside the runner's transaction.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies one event. Called at most once per event id with effect (the runner
    /// deduplicates), in partition order.
    ///
    /// # Errors
    /// The event cannot be applied; the runner rolls back, retries and dead-letters.
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError>;

    /// Applies a batch of new events (deduplicated, in the order read) at once — the
    /// runner calls it instead of [`EventHandler::handle`] when [`EventHandler::batches`]
    /// says so. Projections override both to write set-based: a few statements per batch
    /// rather than some per event.
    ///
    /// # Errors
    /// Some event cannot be applied; the runner rolls back and goes event by event.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        for event in events {
            self.handle(tx, event).await?;
        }
        Ok(())
    }

    /// Whether the runner applies whole batches through [`EventHandler::handle_batch`]
    /// (one span for the batch; a handler that wants one per event opens
    /// [`apply_span`]s). Most saga reactions keep the default: one event at a time.
    fn batches(&self) -> bool {
        false
    }
}

/// The span of one event's application by `consumer`: named `apply`, and, exported,
/// continuing the trace of the request that caused the event (so one order's trace joins
/// its services). The runner opens one per event it applies alone (and records the
/// record's `partition` and `offset` in it); a batching handler opens one per event of
/// its batch.
pub fn apply_span(consumer: &str, event: &CloudEvent) -> tracing::Span {
    let span = tracing::info_span!(
        "apply",
        consumer = %consumer,
        event_type = %event.ty,
        subject = %event.subject,
        correlation_id = %event.correlationid,
        trace_id = %shop_web::telemetry::trace_id(&event.traceparent),
        partition = tracing::field::Empty,
        offset = tracing::field::Empty,
    );
    shop_web::telemetry::set_parent(&span, &event.traceparent);
    span
}

/// Decodes an event of `service` into its enum, upcast from the version its `dataschema`
/// names to the newest this build knows: `None` for events of other services or of types
/// this version does not know (newer producers); a permanent error for data that does
/// not fit its type.
///
/// # Errors
/// The data does not fit the event's type.
pub fn decode<E: serde::de::DeserializeOwned>(
    service: shop_schemas::Service,
    event: &CloudEvent,
) -> Result<Option<E>, HandlerError> {
    if event.service() != Some(service) {
        return Ok(None);
    }
    let name = event.event_name();
    if shop_schemas::event_type(service, name).is_none() {
        tracing::debug!(event_type = %event.ty, "unknown event type; ignored");
        return Ok(None);
    }
    shop_schemas::decode_versioned(name, event.event_version(), &event.data)
        .map(Some)
        .map_err(|e| {
            HandlerError::permanent(format!("{} data does not fit its schema: {e}", event.ty))
        })
}
