//! The `WebhookDelivery` aggregate (id = delivery id, derived from the event and the
//! endpoint): one event on its way to one endpoint, its attempts and their outcome.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::notifications::{
    NotificationEvent, WebhookAttemptFailed, WebhookDelivered, WebhookFailed,
    WebhookRedeliveryRequested, WebhookScheduled,
};
use uuid::Uuid;

/// When attempts follow each other, and when the service gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause after the first failed attempt; each next one is four times longer.
    pub base: Duration,
    /// The longest pause.
    pub max: Duration,
    /// Attempts of a delivery (per redelivery) before it fails and its endpoint is disabled.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, 20 s, 80 s, 5 min, 21 min, 85 min, then 6 h apart: ten attempts over about
    /// 20 hours.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(6 * 3600),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The pause after the `failed`-th failed attempt (from 1), before jitter.
    pub fn pause(&self, failed: u32) -> Duration {
        let factor = 4u32.saturating_pow(failed.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// That pause scaled by `jitter_permille` (e.g. 800..=1200: ±20 %).
    pub fn jittered(&self, failed: u32, jitter_permille: u32) -> TimeDelta {
        let pause = self.pause(failed).as_millis() as u64 * u64::from(jitter_permille) / 1000;
        TimeDelta::milliseconds(pause.min(i64::MAX as u64) as i64)
    }
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's status, when it answered.
    pub status_code: Option<u16>,
    /// Why it failed (`None` with a 2xx status: delivered).
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryCommand {
    Schedule(WebhookScheduled),
    /// Records an attempt's outcome; a failure is retried after a jittered pause.
    Record {
        delivery_id: Uuid,
        attempt: Attempt,
        jitter_permille: u32,
    },
    /// An admin's redelivery: the same message again, with a fresh budget of attempts.
    Redeliver {
        delivery_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("no such delivery")]
    NotFound,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    #[default]
    None,
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub status: DeliveryStatus,
    pub endpoint_id: Uuid,
    /// Attempts so far, all rounds.
    pub attempts: u32,
    /// Attempts since it was scheduled or last redelivered.
    pub round: u32,
}

impl WebhookDelivery {
    fn decide(
        &self,
        command: DeliveryCommand,
        policy: &RetryPolicy,
    ) -> Result<Option<NotificationEvent>, DeliveryError> {
        use NotificationEvent as E;
        Ok(match command {
            DeliveryCommand::Schedule(scheduled) => {
                (self.status == DeliveryStatus::None).then_some(E::WebhookScheduled(scheduled))
            }
            _ if self.status == DeliveryStatus::None => return Err(DeliveryError::NotFound),
            DeliveryCommand::Record {
                delivery_id,
                attempt: a,
                jitter_permille,
            } => {
                // An outcome that comes after the delivery was decided (a late attempt
                // of an instance whose lease ran out) changes nothing.
                if self.status != DeliveryStatus::Pending {
                    return Ok(None);
                }
                let (endpoint_id, number) = (self.endpoint_id, self.attempts + 1);
                if a.succeeded() {
                    Some(E::WebhookDelivered(WebhookDelivered {
                        delivery_id,
                        endpoint_id,
                        attempt: number,
                        status_code: a.status_code.unwrap_or(200),
                        latency_ms: a.latency_ms,
                        at: a.at,
                    }))
                } else {
                    let error = a
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("HTTP {}", a.status_code.map_or(0, u32::from)));
                    if self.round + 1 >= policy.max_attempts {
                        Some(E::WebhookFailed(WebhookFailed {
                            delivery_id,
                            endpoint_id,
                            attempt: number,
                            status_code: a.status_code,
                            error,
                            latency_ms: a.latency_ms,
                            at: a.at,
                        }))
                    } else {
                        Some(E::WebhookAttemptFailed(WebhookAttemptFailed {
                            delivery_id,
                            endpoint_id,
                            attempt: number,
                            status_code: a.status_code,
                            error,
                            latency_ms: a.latency_ms,
                            at: a.at,
                            next_attempt_at: a.at
                                + policy.jittered(self.round + 1, jitter_permille),
                        }))
                    }
                }
            }
            DeliveryCommand::Redeliver { delivery_id } => {
                Some(E::WebhookRedeliveryRequested(WebhookRedeliveryRequested {
                    delivery_id,
                    endpoint_id: self.endpoint_id,
                }))
            }
        })
    }
}

impl Aggregate for WebhookDelivery {
    const TYPE: &'static str = "webhook_delivery";
    type Command = DeliveryCommand;
    type Event = NotificationEvent;
    type Error = DeliveryError;
    type Services = RetryPolicy;

    async fn handle(
        &mut self,
        command: Self::Command,
        policy: &RetryPolicy,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, policy)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use DeliveryStatus as S;
        match event {
            NotificationEvent::WebhookScheduled(e) => {
                self.status = S::Pending;
                self.endpoint_id = e.endpoint_id;
            }
            NotificationEvent::WebhookAttemptFailed(_) => {
                self.attempts += 1;
                self.round += 1;
            }
            NotificationEvent::WebhookDelivered(_) => {
                self.attempts += 1;
                self.status = S::Delivered;
            }
            NotificationEvent::WebhookFailed(_) => {
                self.attempts += 1;
                self.status = S::Failed;
            }
            NotificationEvent::WebhookRedeliveryRequested(_) => {
                self.status = S::Pending;
                self.round = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    fn id() -> Uuid {
        Uuid::from_u128(11)
    }

    fn endpoint() -> Uuid {
        Uuid::from_u128(12)
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_attempts: 3,
        }
    }

    fn scheduled() -> WebhookScheduled {
        WebhookScheduled {
            delivery_id: id(),
            endpoint_id: endpoint(),
            webhook_id: crate::signing::webhook_id(id()),
            event_id: Uuid::from_u128(13),
            event_type: "shop.orders.OrderPlaced".into(),
            payload: serde_json::json!({"specversion": "1.0"}),
        }
    }

    fn given(events: Vec<NotificationEvent>) -> AggregateTestExecutor<WebhookDelivery> {
        TestFramework::<WebhookDelivery>::with(policy()).given(events)
    }

    fn record(status: u16) -> DeliveryCommand {
        DeliveryCommand::Record {
            delivery_id: id(),
            attempt: Attempt {
                status_code: Some(status),
                error: None,
                latency_ms: 3,
                at: at(),
            },
            jitter_permille: 1000,
        }
    }

    fn failed_attempt(n: u32, pause_secs: i64) -> NotificationEvent {
        NotificationEvent::WebhookAttemptFailed(WebhookAttemptFailed {
            delivery_id: id(),
            endpoint_id: endpoint(),
            attempt: n,
            status_code: Some(500),
            error: "HTTP 500".into(),
            latency_ms: 3,
            at: at(),
            next_attempt_at: at() + TimeDelta::seconds(pause_secs),
        })
    }

    #[test]
    fn a_delivery_is_scheduled_once() {
        let event = NotificationEvent::WebhookScheduled(scheduled());
        given(vec![])
            .when(DeliveryCommand::Schedule(scheduled()))
            .then_expect_events(vec![event.clone()]);
        given(vec![event])
            .when(DeliveryCommand::Schedule(scheduled()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn failures_back_off_exponentially_then_fail() {
        let s = NotificationEvent::WebhookScheduled(scheduled());
        given(vec![s.clone()])
            .when(record(500))
            .then_expect_events(vec![failed_attempt(1, 5)]);
        given(vec![s.clone(), failed_attempt(1, 5)])
            .when(record(500))
            .then_expect_events(vec![failed_attempt(2, 20)]);
        given(vec![s.clone(), failed_attempt(1, 5), failed_attempt(2, 20)])
            .when(record(503))
            .then_expect_events(vec![NotificationEvent::WebhookFailed(WebhookFailed {
                delivery_id: id(),
                endpoint_id: endpoint(),
                attempt: 3,
                status_code: Some(503),
                error: "HTTP 503".into(),
                latency_ms: 3,
                at: at(),
            })]);
    }

    #[test]
    fn success_delivers_and_late_outcomes_change_nothing() {
        let s = NotificationEvent::WebhookScheduled(scheduled());
        let delivered = NotificationEvent::WebhookDelivered(WebhookDelivered {
            delivery_id: id(),
            endpoint_id: endpoint(),
            attempt: 2,
            status_code: 204,
            latency_ms: 3,
            at: at(),
        });
        given(vec![s.clone(), failed_attempt(1, 5)])
            .when(record(204))
            .then_expect_events(vec![delivered.clone()]);
        given(vec![s, failed_attempt(1, 5), delivered])
            .when(record(500))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_redelivery_gets_a_fresh_budget() {
        let s = NotificationEvent::WebhookScheduled(scheduled());
        let failed = NotificationEvent::WebhookFailed(WebhookFailed {
            delivery_id: id(),
            endpoint_id: endpoint(),
            attempt: 3,
            status_code: None,
            error: "timed out".into(),
            latency_ms: 3,
            at: at(),
        });
        let again = NotificationEvent::WebhookRedeliveryRequested(WebhookRedeliveryRequested {
            delivery_id: id(),
            endpoint_id: endpoint(),
        });
        let history = vec![
            s,
            failed_attempt(1, 5),
            failed_attempt(2, 20),
            failed,
            again.clone(),
        ];
        given(history[..4].to_vec())
            .when(DeliveryCommand::Redeliver { delivery_id: id() })
            .then_expect_events(vec![again]);
        // Attempt 4 overall, the first of its round: retried after the first pause.
        given(history)
            .when(record(500))
            .then_expect_events(vec![failed_attempt(4, 5)]);
        given(vec![])
            .when(DeliveryCommand::Redeliver { delivery_id: id() })
            .then_expect_error(DeliveryError::NotFound);
    }

    #[test]
    fn the_default_schedule_spans_hours() {
        let policy = RetryPolicy::default();
        let total: Duration = (1..policy.max_attempts).map(|n| policy.pause(n)).sum();
        assert!(total > Duration::from_secs(12 * 3600), "{total:?}");
        assert_eq!(policy.pause(1), Duration::from_secs(5));
        assert_eq!(policy.pause(2), Duration::from_secs(20));
        assert_eq!(policy.pause(30), Duration::from_secs(6 * 3600));
        assert_eq!(policy.jittered(1, 1200), TimeDelta::seconds(6));
    }
}
