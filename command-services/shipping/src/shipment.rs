//! The `Shipment` aggregate: the delivery of one confirmed order (id = order id).

use std::collections::BTreeSet;
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::shipping::{
    ShipmentCancellationRefused, ShipmentCancelled, ShipmentDelivered, ShipmentDispatched,
    ShipmentFailed, ShipmentScheduled, ShippingEvent, ALREADY_DISPATCHED,
};
use uuid::Uuid;

pub const UNSUPPORTED_COUNTRY: &str = "unsupported_country";

/// The countries shipments can go to (`SHOP_SHIPPING_COUNTRIES`, ISO 3166 alpha-2).
#[derive(Debug, Clone)]
pub struct SupportedCountries(Arc<BTreeSet<String>>);

impl SupportedCountries {
    /// From a comma-separated list such as `JP,US,GB,DE,FR` (case-insensitive).
    pub fn parse(list: &str) -> Self {
        SupportedCountries(Arc::new(
            list.split(',')
                .map(|c| c.trim().to_ascii_uppercase())
                .filter(|c| !c.is_empty())
                .collect(),
        ))
    }

    pub fn contains(&self, country: &str) -> bool {
        self.0.contains(&country.to_ascii_uppercase())
    }
}

impl Default for SupportedCountries {
    fn default() -> Self {
        SupportedCountries::parse("JP,US,GB,DE,FR")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentCommand {
    /// The order was confirmed: plan its shipment to the customer's country, or fail.
    Schedule {
        order_id: Uuid,
        customer_id: Uuid,
        country: String,
    },
    /// The order was cancelled: a shipment not yet dispatched will not leave.
    Cancel {
        order_id: Uuid,
    },
    /// The customer asked to cancel the confirmed order: shipping is the pivot (SPEC §5
    /// rule 6). A parcel not yet dispatched — or a shipment not yet scheduled — is
    /// cancelled, and will never leave; a dispatched one is not, and the request is
    /// refused. One aggregate decides both this and a dispatch, so they are never both
    /// effective.
    DecideCancellation {
        order_id: Uuid,
    },
    Dispatch {
        order_id: Uuid,
    },
    Deliver {
        order_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipmentError {
    #[error("no shipment for this order")]
    NotFound,
    #[error("the shipment is not scheduled (it failed or was cancelled)")]
    NotScheduled,
    #[error("the shipment was already dispatched")]
    AlreadyDispatched,
    #[error("the shipment has not been dispatched")]
    NotDispatched,
    #[error("the shipment was already delivered")]
    AlreadyDelivered,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentState {
    #[default]
    None,
    Scheduled,
    Failed,
    Dispatched,
    Delivered,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub state: ShipmentState,
}

impl Shipment {
    /// The event a command leads to; `Ok(None)` when a saga step finds the shipment
    /// already past it (repeated or late); an admin's impossible step is an error.
    fn decide(
        &self,
        command: ShipmentCommand,
        countries: &SupportedCountries,
    ) -> Result<Option<ShippingEvent>, ShipmentError> {
        use ShipmentState as S;
        Ok(match (command, self.state) {
            (
                ShipmentCommand::Schedule {
                    order_id,
                    customer_id,
                    country,
                },
                S::None,
            ) => Some(if countries.contains(&country) {
                ShippingEvent::ShipmentScheduled(ShipmentScheduled {
                    order_id,
                    customer_id,
                    country,
                })
            } else {
                ShippingEvent::ShipmentFailed(ShipmentFailed {
                    order_id,
                    customer_id,
                    country,
                    reason: UNSUPPORTED_COUNTRY.to_string(),
                })
            }),
            (ShipmentCommand::Schedule { .. }, _) => None,
            (ShipmentCommand::Cancel { order_id }, S::Scheduled) => {
                Some(ShippingEvent::ShipmentCancelled(ShipmentCancelled {
                    order_id,
                }))
            }
            (ShipmentCommand::Cancel { .. }, _) => None,
            (ShipmentCommand::DecideCancellation { order_id }, S::None | S::Scheduled) => {
                Some(ShippingEvent::ShipmentCancelled(ShipmentCancelled {
                    order_id,
                }))
            }
            (ShipmentCommand::DecideCancellation { order_id }, S::Dispatched | S::Delivered) => {
                Some(ShippingEvent::ShipmentCancellationRefused(
                    ShipmentCancellationRefused {
                        order_id,
                        reason: ALREADY_DISPATCHED.to_string(),
                    },
                ))
            }
            // Cancelled already (the same request again), or failed (the order is
            // cancelled for that).
            (ShipmentCommand::DecideCancellation { .. }, S::Cancelled | S::Failed) => None,
            (ShipmentCommand::Dispatch { order_id }, S::Scheduled) => {
                Some(ShippingEvent::ShipmentDispatched(ShipmentDispatched {
                    order_id,
                }))
            }
            (ShipmentCommand::Deliver { order_id }, S::Dispatched) => {
                Some(ShippingEvent::ShipmentDelivered(ShipmentDelivered {
                    order_id,
                }))
            }
            (ShipmentCommand::Dispatch { .. } | ShipmentCommand::Deliver { .. }, S::None) => {
                return Err(ShipmentError::NotFound)
            }
            (ShipmentCommand::Dispatch { .. }, S::Dispatched | S::Delivered) => {
                return Err(ShipmentError::AlreadyDispatched)
            }
            (ShipmentCommand::Deliver { .. }, S::Delivered) => {
                return Err(ShipmentError::AlreadyDelivered)
            }
            (ShipmentCommand::Deliver { .. }, S::Scheduled) => {
                return Err(ShipmentError::NotDispatched)
            }
            (ShipmentCommand::Dispatch { .. } | ShipmentCommand::Deliver { .. }, _) => {
                return Err(ShipmentError::NotScheduled)
            }
        })
    }
}

impl Aggregate for Shipment {
    const TYPE: &'static str = "shipment";
    type Command = ShipmentCommand;
    type Event = ShippingEvent;
    type Error = ShipmentError;
    type Services = SupportedCountries;

    async fn handle(
        &mut self,
        command: Self::Command,
        countries: &SupportedCountries,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, countries)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.state = match event {
            // A refusal changes nothing: the parcel is on its way.
            ShippingEvent::ShipmentCancellationRefused(_) => return,
            ShippingEvent::ShipmentScheduled(_) => ShipmentState::Scheduled,
            ShippingEvent::ShipmentFailed(_) => ShipmentState::Failed,
            ShippingEvent::ShipmentDispatched(_) => ShipmentState::Dispatched,
            ShippingEvent::ShipmentDelivered(_) => ShipmentState::Delivered,
            ShippingEvent::ShipmentCancelled(_) => ShipmentState::Cancelled,
        };
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::{AggregateTestExecutor, TestFramework};

    use super::*;

    fn order() -> Uuid {
        Uuid::from_u128(5)
    }

    fn customer() -> Uuid {
        Uuid::from_u128(6)
    }

    fn schedule(country: &str) -> ShipmentCommand {
        ShipmentCommand::Schedule {
            order_id: order(),
            customer_id: customer(),
            country: country.into(),
        }
    }

    fn scheduled() -> ShippingEvent {
        ShippingEvent::ShipmentScheduled(ShipmentScheduled {
            order_id: order(),
            customer_id: customer(),
            country: "JP".into(),
        })
    }

    fn dispatched() -> ShippingEvent {
        ShippingEvent::ShipmentDispatched(ShipmentDispatched { order_id: order() })
    }

    fn given(events: Vec<ShippingEvent>) -> AggregateTestExecutor<Shipment> {
        TestFramework::<Shipment>::with(SupportedCountries::default()).given(events)
    }

    #[test]
    fn a_supported_country_is_scheduled_once() {
        given(vec![]).when(schedule("jp")).then_expect_events(vec![
            ShippingEvent::ShipmentScheduled(ShipmentScheduled {
                order_id: order(),
                customer_id: customer(),
                country: "jp".into(),
            }),
        ]);
        given(vec![scheduled()])
            .when(schedule("JP"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_unsupported_country_fails() {
        given(vec![])
            .when(schedule("BR"))
            .then_expect_events(vec![ShippingEvent::ShipmentFailed(ShipmentFailed {
                order_id: order(),
                customer_id: customer(),
                country: "BR".into(),
                reason: UNSUPPORTED_COUNTRY.into(),
            })]);
        TestFramework::<Shipment>::with(SupportedCountries::parse("BR"))
            .given_no_previous_events()
            .when(schedule("BR"))
            .then_expect_events(vec![ShippingEvent::ShipmentScheduled(ShipmentScheduled {
                order_id: order(),
                customer_id: customer(),
                country: "BR".into(),
            })]);
    }

    #[test]
    fn dispatch_then_deliver() {
        given(vec![scheduled()])
            .when(ShipmentCommand::Dispatch { order_id: order() })
            .then_expect_events(vec![dispatched()]);
        given(vec![scheduled(), dispatched()])
            .when(ShipmentCommand::Deliver { order_id: order() })
            .then_expect_events(vec![ShippingEvent::ShipmentDelivered(ShipmentDelivered {
                order_id: order(),
            })]);
    }

    #[test]
    fn impossible_steps_are_refused() {
        let dispatch = || ShipmentCommand::Dispatch { order_id: order() };
        let deliver = || ShipmentCommand::Deliver { order_id: order() };
        given(vec![])
            .when(dispatch())
            .then_expect_error(ShipmentError::NotFound);
        given(vec![scheduled(), dispatched()])
            .when(dispatch())
            .then_expect_error(ShipmentError::AlreadyDispatched);
        given(vec![scheduled()])
            .when(deliver())
            .then_expect_error(ShipmentError::NotDispatched);
        let cancelled = ShippingEvent::ShipmentCancelled(ShipmentCancelled { order_id: order() });
        given(vec![scheduled(), cancelled])
            .when(dispatch())
            .then_expect_error(ShipmentError::NotScheduled);
    }

    fn decide() -> ShipmentCommand {
        ShipmentCommand::DecideCancellation { order_id: order() }
    }

    fn cancelled() -> ShippingEvent {
        ShippingEvent::ShipmentCancelled(ShipmentCancelled { order_id: order() })
    }

    #[test]
    fn a_cancellation_request_before_dispatch_cancels_the_shipment() {
        given(vec![scheduled()])
            .when(decide())
            .then_expect_events(vec![cancelled()]);
        // Not scheduled yet (the customer's country unknown, say): it never will be.
        given(vec![])
            .when(decide())
            .then_expect_events(vec![cancelled()]);
        given(vec![cancelled()])
            .when(schedule("JP"))
            .then_expect_events(vec![]);
        // The dispatch that comes after loses.
        given(vec![scheduled(), cancelled()])
            .when(ShipmentCommand::Dispatch { order_id: order() })
            .then_expect_error(ShipmentError::NotScheduled);
        // Asked again: nothing more.
        given(vec![scheduled(), cancelled()])
            .when(decide())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_cancellation_request_after_dispatch_is_refused() {
        let refused = ShippingEvent::ShipmentCancellationRefused(ShipmentCancellationRefused {
            order_id: order(),
            reason: ALREADY_DISPATCHED.into(),
        });
        given(vec![scheduled(), dispatched()])
            .when(decide())
            .then_expect_events(vec![refused.clone()]);
        let delivered = ShippingEvent::ShipmentDelivered(ShipmentDelivered { order_id: order() });
        given(vec![scheduled(), dispatched(), delivered])
            .when(decide())
            .then_expect_events(vec![refused.clone()]);
        // A refusal leaves the parcel where it is: it can still be delivered.
        given(vec![scheduled(), dispatched(), refused])
            .when(ShipmentCommand::Deliver { order_id: order() })
            .then_expect_events(vec![ShippingEvent::ShipmentDelivered(ShipmentDelivered {
                order_id: order(),
            })]);
    }

    #[test]
    fn a_cancelled_order_stops_a_scheduled_shipment_only() {
        let cancel = || ShipmentCommand::Cancel { order_id: order() };
        given(vec![scheduled()])
            .when(cancel())
            .then_expect_events(vec![ShippingEvent::ShipmentCancelled(ShipmentCancelled {
                order_id: order(),
            })]);
        given(vec![scheduled(), dispatched()])
            .when(cancel())
            .then_expect_events(vec![]);
        given(vec![]).when(cancel()).then_expect_events(vec![]);
    }
}
