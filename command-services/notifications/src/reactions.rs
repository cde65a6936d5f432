//! The service's only reaction: order, payment and shipping events become deliveries,
//! one per endpoint that subscribes to the event's type. It only records them (durably,
//! in the consumer's transaction); the [`crate::dispatcher`] sends them on tasks of its
//! own, so a slow receiver never holds up this consumer, nor the saga it listens to.

use std::sync::Arc;

use async_trait::async_trait;
use shop_eventing::command::CommandBus;
use shop_eventing::handler::{apply_span, EventHandler, HandlerError};
use shop_schemas::notifications::WebhookScheduled;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{self as sql, Conn};
use shop_web::telemetry::metadata_caused_by;
use tracing::Instrument;
use uuid::Uuid;

use crate::delivery::{DeliveryCommand, WebhookDelivery};
use crate::signing::{delivery_id, webhook_id};

/// The consumer name of [`ScheduleWebhooks`].
pub const WEBHOOKS: &str = "notifications.webhooks";
/// The services whose events endpoints may subscribe to.
pub const WEBHOOKS_SOURCES: &[Service] = &[Service::Orders, Service::Payments, Service::Shipping];

/// Every CloudEvents type an endpoint may subscribe to.
pub fn deliverable_types() -> Vec<String> {
    shop_schemas::event_types()
        .filter(|t| WEBHOOKS_SOURCES.contains(&t.service))
        .map(|t| t.ce_type())
        .collect()
}

/// An event → `WebhookScheduled` for each endpoint (active or paused) subscribed to its
/// type. The delivery's id is derived from the event and the endpoint, so a redelivered
/// event schedules nothing twice.
pub struct ScheduleWebhooks {
    pub bus: Arc<CommandBus<WebhookDelivery>>,
}

/// Whether an event comes from a service whose events endpoints may want.
fn deliverable(event: &CloudEvent) -> bool {
    event
        .service()
        .is_some_and(|service| WEBHOOKS_SOURCES.contains(&service))
}

/// Every (event type, endpoint) subscription of an endpoint that takes deliveries.
const SUBSCRIPTIONS: &str = "SELECT s.event_type, s.endpoint_id FROM webhook_subscriptions s
     JOIN webhook_endpoints e ON e.endpoint_id = s.endpoint_id
     WHERE e.status IN ('active', 'paused')";

#[async_trait]
impl EventHandler for ScheduleWebhooks {
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        if !deliverable(event) {
            return Ok(());
        }
        let endpoints: Vec<(String, Uuid)> = sql::query_as(&format!(
            "{SUBSCRIPTIONS} AND s.event_type = $1 ORDER BY s.endpoint_id"
        ))
        .bind(&event.ty)
        .fetch_all(&mut *tx)
        .await?;
        let endpoints = endpoints.into_iter().map(|(_, id)| id).collect();
        self.schedule(tx, event, endpoints).await
    }

    /// One look at the subscriptions for the whole batch (on PostgreSQL), not one per
    /// event: most events of the saga's topics go to no endpoint.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        if !events.iter().any(|e| deliverable(e)) {
            return Ok(());
        }
        let subscriptions: Vec<(String, Uuid)> =
            sql::query_as(&format!("{SUBSCRIPTIONS} ORDER BY s.endpoint_id"))
                .fetch_all(&mut *tx)
                .await?;
        if subscriptions.is_empty() {
            return Ok(());
        }
        for event in events.iter().filter(|e| deliverable(e)) {
            let endpoints: Vec<Uuid> = subscriptions
                .iter()
                .filter(|(event_type, _)| *event_type == event.ty)
                .map(|(_, id)| *id)
                .collect();
            self.schedule(tx, event, endpoints)
                .instrument(apply_span(WEBHOOKS, event))
                .await?;
        }
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }
}

impl ScheduleWebhooks {
    /// `WebhookScheduled` for each of `endpoints`.
    async fn schedule(
        &self,
        tx: &mut Conn,
        event: &CloudEvent,
        endpoints: Vec<Uuid>,
    ) -> Result<(), HandlerError> {
        if endpoints.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_value(event)
            .map_err(|e| HandlerError::permanent(format!("event does not serialize: {e}")))?;
        for endpoint_id in endpoints {
            let id = delivery_id(event.id, endpoint_id);
            let command = DeliveryCommand::Schedule(WebhookScheduled {
                delivery_id: id,
                endpoint_id,
                webhook_id: webhook_id(id),
                event_id: event.id,
                event_type: event.ty.clone(),
                payload: payload.clone(),
            });
            self.bus
                .execute_new_in(tx, &id.to_string(), command, &metadata_caused_by(event))
                .await?;
            metrics::counter!("webhook_deliveries_scheduled_total").increment(1);
        }
        Ok(())
    }
}
