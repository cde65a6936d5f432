//! Events of the notifications service: webhook endpoints that admins register, and the
//! signed deliveries of order, payment and shipping events to them.
//!
//! No event carries an endpoint's signing secret: registration records a random
//! `secret_nonce`, and the service derives the secret from it, the endpoint id and its
//! key (`SHOP_WEBHOOKS_KEY`), so a replay or an import with the same key recovers it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Service;

/// An admin registered a webhook endpoint; it is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointRegistered {
    pub endpoint_id: Uuid,
    pub url: String,
    /// CloudEvents types delivered to it, e.g. `shop.orders.OrderPlaced`.
    pub event_types: Vec<String>,
    pub description: String,
    /// What the endpoint's secret is derived from (with the service's key): not a secret.
    pub secret_nonce: String,
}

/// An admin changed an endpoint's URL, event types or description (the new values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointUpdated {
    pub endpoint_id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
}

/// An admin rotated an endpoint's signing secret: the new one derives from
/// `secret_nonce`; for `previous_valid_secs` more, deliveries carry a signature with the
/// previous one too, so receivers can switch without losing a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecretRotated {
    pub endpoint_id: Uuid,
    pub secret_nonce: String,
    pub previous_valid_secs: u64,
}

/// An admin paused an endpoint: its deliveries wait until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointPaused {
    pub endpoint_id: Uuid,
}

/// An admin resumed a paused or disabled endpoint: its waiting deliveries go out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointResumed {
    pub endpoint_id: Uuid,
}

/// The service disabled an endpoint whose delivery kept failing; `reason` says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointDisabled {
    pub endpoint_id: Uuid,
    pub reason: String,
}

/// An admin deleted an endpoint: nothing more is delivered to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpointDeleted {
    pub endpoint_id: Uuid,
}

/// An event an endpoint subscribes to is to be delivered to it. `webhook_id` (the
/// `webhook-id` header) is derived from the event and the endpoint: every attempt and
/// every redelivery of it carries the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookScheduled {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub webhook_id: String,
    pub event_id: Uuid,
    pub event_type: String,
    /// The CloudEvent (structured mode): the body every attempt sends.
    pub payload: Value,
}

/// One attempt of a delivery failed; another follows at `next_attempt_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttemptFailed {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// The receiver's status, when it answered.
    pub status_code: Option<u16>,
    pub error: String,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
}

/// The receiver accepted a delivery (a 2xx answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivered {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub attempt: u32,
    pub status_code: u16,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// The last attempt of a delivery failed: the service gave up (and disables the endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookFailed {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: String,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

/// An admin asked for a delivery to be sent again (same `webhook-id`), with a fresh
/// budget of attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRedeliveryRequested {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
}

service_events!(
    /// Every event of the notifications service (externally tagged).
    NotificationEvent,
    Service::Notifications,
    [
        WebhookEndpointRegistered,
        WebhookEndpointUpdated,
        WebhookSecretRotated,
        WebhookEndpointPaused,
        WebhookEndpointResumed,
        WebhookEndpointDisabled,
        WebhookEndpointDeleted,
        WebhookScheduled,
        WebhookAttemptFailed,
        WebhookDelivered,
        WebhookFailed,
        WebhookRedeliveryRequested,
    ]
);

impl NotificationEvent {
    /// The endpoint an event is about (every event names one).
    pub fn endpoint_id(&self) -> Uuid {
        match self {
            NotificationEvent::WebhookEndpointRegistered(e) => e.endpoint_id,
            NotificationEvent::WebhookEndpointUpdated(e) => e.endpoint_id,
            NotificationEvent::WebhookSecretRotated(e) => e.endpoint_id,
            NotificationEvent::WebhookEndpointPaused(e) => e.endpoint_id,
            NotificationEvent::WebhookEndpointResumed(e) => e.endpoint_id,
            NotificationEvent::WebhookEndpointDisabled(e) => e.endpoint_id,
            NotificationEvent::WebhookEndpointDeleted(e) => e.endpoint_id,
            NotificationEvent::WebhookScheduled(e) => e.endpoint_id,
            NotificationEvent::WebhookAttemptFailed(e) => e.endpoint_id,
            NotificationEvent::WebhookDelivered(e) => e.endpoint_id,
            NotificationEvent::WebhookFailed(e) => e.endpoint_id,
            NotificationEvent::WebhookRedeliveryRequested(e) => e.endpoint_id,
        }
    }
}
