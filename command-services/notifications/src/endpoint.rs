//! The `WebhookEndpoint` aggregate (id = endpoint id): a receiver an admin registered,
//! the events it wants, and whether deliveries go to it.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::notifications::{
    NotificationEvent, WebhookEndpointDeleted, WebhookEndpointDisabled, WebhookEndpointPaused,
    WebhookEndpointRegistered, WebhookEndpointResumed, WebhookEndpointUpdated,
    WebhookSecretRotated,
};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointCommand {
    Register {
        endpoint_id: Uuid,
        url: String,
        event_types: Vec<String>,
        description: String,
        secret_nonce: String,
    },
    /// New values for the fields given (`None`: unchanged).
    Update {
        endpoint_id: Uuid,
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
    },
    /// A new secret (derived from `secret_nonce`); the previous one still signs for
    /// `previous_valid_secs`.
    RotateSecret {
        endpoint_id: Uuid,
        secret_nonce: String,
        previous_valid_secs: u64,
    },
    Pause {
        endpoint_id: Uuid,
    },
    /// Resumes a paused endpoint, or re-enables a disabled one.
    Resume {
        endpoint_id: Uuid,
    },
    /// The service gives up on the endpoint (a delivery failed for good).
    Disable {
        endpoint_id: Uuid,
        reason: String,
    },
    Delete {
        endpoint_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("the webhook endpoint already exists")]
    AlreadyRegistered,
    #[error("the webhook endpoint is disabled: resume it to re-enable it")]
    Disabled,
}

/// Where an endpoint stands, as the API and the tables name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointStatus {
    #[default]
    None,
    Active,
    Paused,
    Disabled,
    Deleted,
}

impl EndpointStatus {
    pub fn name(self) -> &'static str {
        match self {
            EndpointStatus::None => "none",
            EndpointStatus::Active => "active",
            EndpointStatus::Paused => "paused",
            EndpointStatus::Disabled => "disabled",
            EndpointStatus::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub status: EndpointStatus,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
}

impl WebhookEndpoint {
    /// The event a command leads to; `Ok(None)` when it changes nothing (asked twice).
    fn decide(&self, command: EndpointCommand) -> Result<Option<NotificationEvent>, EndpointError> {
        use EndpointStatus as S;
        use NotificationEvent as E;
        let exists = !matches!(self.status, S::None | S::Deleted);
        Ok(match command {
            EndpointCommand::Register {
                endpoint_id,
                url,
                event_types,
                description,
                secret_nonce,
            } => {
                if self.status != S::None {
                    return Err(EndpointError::AlreadyRegistered);
                }
                Some(E::WebhookEndpointRegistered(WebhookEndpointRegistered {
                    endpoint_id,
                    url,
                    event_types,
                    description,
                    secret_nonce,
                }))
            }
            _ if !exists => return Err(EndpointError::NotFound),
            EndpointCommand::Update {
                endpoint_id,
                url,
                event_types,
                description,
            } => {
                let updated = WebhookEndpointUpdated {
                    endpoint_id,
                    url: url.unwrap_or_else(|| self.url.clone()),
                    event_types: event_types.unwrap_or_else(|| self.event_types.clone()),
                    description: description.unwrap_or_else(|| self.description.clone()),
                };
                let same = updated.url == self.url
                    && updated.event_types == self.event_types
                    && updated.description == self.description;
                (!same).then_some(E::WebhookEndpointUpdated(updated))
            }
            EndpointCommand::RotateSecret {
                endpoint_id,
                secret_nonce,
                previous_valid_secs,
            } => Some(E::WebhookSecretRotated(WebhookSecretRotated {
                endpoint_id,
                secret_nonce,
                previous_valid_secs,
            })),
            EndpointCommand::Pause { endpoint_id } => match self.status {
                S::Active => Some(E::WebhookEndpointPaused(WebhookEndpointPaused {
                    endpoint_id,
                })),
                S::Disabled => return Err(EndpointError::Disabled),
                _ => None,
            },
            EndpointCommand::Resume { endpoint_id } => match self.status {
                S::Paused | S::Disabled => {
                    Some(E::WebhookEndpointResumed(WebhookEndpointResumed {
                        endpoint_id,
                    }))
                }
                _ => None,
            },
            EndpointCommand::Disable {
                endpoint_id,
                reason,
            } => match self.status {
                S::Active | S::Paused => {
                    Some(E::WebhookEndpointDisabled(WebhookEndpointDisabled {
                        endpoint_id,
                        reason,
                    }))
                }
                _ => None,
            },
            EndpointCommand::Delete { endpoint_id } => {
                Some(E::WebhookEndpointDeleted(WebhookEndpointDeleted {
                    endpoint_id,
                }))
            }
        })
    }
}

impl Aggregate for WebhookEndpoint {
    const TYPE: &'static str = "webhook_endpoint";
    type Command = EndpointCommand;
    type Event = NotificationEvent;
    type Error = EndpointError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use EndpointStatus as S;
        match event {
            NotificationEvent::WebhookEndpointRegistered(e) => {
                self.status = S::Active;
                self.url = e.url;
                self.event_types = e.event_types;
                self.description = e.description;
            }
            NotificationEvent::WebhookEndpointUpdated(e) => {
                self.url = e.url;
                self.event_types = e.event_types;
                self.description = e.description;
            }
            NotificationEvent::WebhookEndpointPaused(_) => self.status = S::Paused,
            NotificationEvent::WebhookEndpointResumed(_) => self.status = S::Active,
            NotificationEvent::WebhookEndpointDisabled(_) => self.status = S::Disabled,
            NotificationEvent::WebhookEndpointDeleted(_) => self.status = S::Deleted,
            // Deliveries are aggregates of their own.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn registered() -> NotificationEvent {
        NotificationEvent::WebhookEndpointRegistered(WebhookEndpointRegistered {
            endpoint_id: id(),
            url: "https://hooks.example.com/a".into(),
            event_types: vec!["shop.orders.OrderPlaced".into()],
            description: "ERP".into(),
            secret_nonce: "00".into(),
        })
    }

    fn given(events: Vec<NotificationEvent>) -> AggregateTestExecutor<WebhookEndpoint> {
        TestFramework::<WebhookEndpoint>::with(()).given(events)
    }

    fn register() -> EndpointCommand {
        EndpointCommand::Register {
            endpoint_id: id(),
            url: "https://hooks.example.com/a".into(),
            event_types: vec!["shop.orders.OrderPlaced".into()],
            description: "ERP".into(),
            secret_nonce: "00".into(),
        }
    }

    #[test]
    fn an_endpoint_is_registered_once() {
        given(vec![])
            .when(register())
            .then_expect_events(vec![registered()]);
        given(vec![registered()])
            .when(register())
            .then_expect_error(EndpointError::AlreadyRegistered);
    }

    #[test]
    fn an_update_keeps_what_it_does_not_name_and_a_no_op_appends_nothing() {
        given(vec![registered()])
            .when(EndpointCommand::Update {
                endpoint_id: id(),
                url: None,
                event_types: None,
                description: Some("CRM".into()),
            })
            .then_expect_events(vec![NotificationEvent::WebhookEndpointUpdated(
                WebhookEndpointUpdated {
                    endpoint_id: id(),
                    url: "https://hooks.example.com/a".into(),
                    event_types: vec!["shop.orders.OrderPlaced".into()],
                    description: "CRM".into(),
                },
            )]);
        given(vec![registered()])
            .when(EndpointCommand::Update {
                endpoint_id: id(),
                url: None,
                event_types: None,
                description: Some("ERP".into()),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn pause_resume_disable_delete() {
        let paused =
            NotificationEvent::WebhookEndpointPaused(WebhookEndpointPaused { endpoint_id: id() });
        let disabled = NotificationEvent::WebhookEndpointDisabled(WebhookEndpointDisabled {
            endpoint_id: id(),
            reason: "failed".into(),
        });
        let resumed =
            NotificationEvent::WebhookEndpointResumed(WebhookEndpointResumed { endpoint_id: id() });
        given(vec![registered()])
            .when(EndpointCommand::Pause { endpoint_id: id() })
            .then_expect_events(vec![paused.clone()]);
        given(vec![registered(), paused.clone()])
            .when(EndpointCommand::Pause { endpoint_id: id() })
            .then_expect_events(vec![]);
        given(vec![registered(), paused])
            .when(EndpointCommand::Resume { endpoint_id: id() })
            .then_expect_events(vec![resumed.clone()]);
        given(vec![registered()])
            .when(EndpointCommand::Disable {
                endpoint_id: id(),
                reason: "failed".into(),
            })
            .then_expect_events(vec![disabled.clone()]);
        given(vec![registered(), disabled.clone()])
            .when(EndpointCommand::Disable {
                endpoint_id: id(),
                reason: "again".into(),
            })
            .then_expect_events(vec![]);
        given(vec![registered(), disabled.clone()])
            .when(EndpointCommand::Pause { endpoint_id: id() })
            .then_expect_error(EndpointError::Disabled);
        given(vec![registered(), disabled])
            .when(EndpointCommand::Resume { endpoint_id: id() })
            .then_expect_events(vec![resumed]);
        let deleted =
            NotificationEvent::WebhookEndpointDeleted(WebhookEndpointDeleted { endpoint_id: id() });
        given(vec![registered()])
            .when(EndpointCommand::Delete { endpoint_id: id() })
            .then_expect_events(vec![deleted.clone()]);
        given(vec![registered(), deleted])
            .when(EndpointCommand::Resume { endpoint_id: id() })
            .then_expect_error(EndpointError::NotFound);
        given(vec![])
            .when(EndpointCommand::Delete { endpoint_id: id() })
            .then_expect_error(EndpointError::NotFound);
    }

    #[test]
    fn a_secret_is_rotated_on_an_endpoint_that_exists() {
        let rotate = || EndpointCommand::RotateSecret {
            endpoint_id: id(),
            secret_nonce: "11".into(),
            previous_valid_secs: 60,
        };
        given(vec![registered()])
            .when(rotate())
            .then_expect_events(vec![NotificationEvent::WebhookSecretRotated(
                WebhookSecretRotated {
                    endpoint_id: id(),
                    secret_nonce: "11".into(),
                    previous_valid_secs: 60,
                },
            )]);
        given(vec![])
            .when(rotate())
            .then_expect_error(EndpointError::NotFound);
    }
}
