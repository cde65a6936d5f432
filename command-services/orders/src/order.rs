//! The `Order` aggregate: one order and where it stands.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::orders::{
    OrderCancellationRefused, OrderCancellationRequested, OrderCancelled, OrderConfirmed,
    OrderDelivered, OrderEvent, OrderLine, OrderPlaced, OrderShipped,
};
use uuid::Uuid;

/// Lines per order, and units per line (SPEC §3.4).
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 1000;

/// Why an order is cancelled (SPEC §3.4); the wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CancelReason {
    OutOfStock,
    PaymentDeclined,
    ShippingFailed,
    CustomerRequest,
    Timeout,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::OutOfStock => "out_of_stock",
            CancelReason::PaymentDeclined => "payment_declined",
            CancelReason::ShippingFailed => "shipping_failed",
            CancelReason::CustomerRequest => "customer_request",
            CancelReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Lines already priced from the catalogue replica.
    Place {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
    },
    /// Stock is reserved and payment completed (the saga's reaction saw both).
    Confirm,
    /// The customer asks to cancel: allowed until the order ships. A pending order is
    /// cancelled at once; a confirmed one may have a scheduled shipment, so its
    /// cancellation is requested and shipping decides (SPEC §5 rule 6). `customer_id` is
    /// the caller (`None` for an admin); another customer's order does not exist for them.
    CancelByCustomer { customer_id: Option<Uuid> },
    /// Shipping cancelled the order's shipment before its parcel left (the answer to a
    /// cancellation request): a confirmed order is cancelled.
    ShipmentCancelled,
    /// Shipping refused the cancellation request (the parcel had left).
    CancellationRefused { reason: String },
    /// A saga step failed or the deadline passed: cancels a pending order (a confirmed one
    /// for `ShippingFailed`); otherwise changes nothing, as the order already moved on.
    CancelBySaga { reason: CancelReason },
    /// The shipment was dispatched.
    Ship,
    /// The shipment was delivered.
    Deliver,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order already exists")]
    AlreadyPlaced,
    #[error(
        "an order has 1 to {MAX_LINES} lines of distinct products, 1 to {MAX_QUANTITY} units each"
    )]
    InvalidLines,
    #[error("no such order")]
    NotFound,
    #[error("the order has shipped and can no longer be cancelled")]
    AlreadyShipped,
    #[error("the order is already cancelled")]
    AlreadyCancelled,
}

/// Where a cancellation request of a confirmed order stands (SPEC §5 rule 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cancellation {
    /// Asked; shipping has not answered yet.
    Requested,
    /// Shipping refused: the parcel had left.
    Refused,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    None,
    Pending,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub customer_id: Option<Uuid>,
    pub total: i64,
    pub order_id: Option<Uuid>,
    /// A cancellation request of the confirmed order, and shipping's answer.
    #[serde(default)]
    pub cancellation: Option<Cancellation>,
}

/// The order's total, or `None` when a line is invalid or the sum overflows.
pub fn total(lines: &[OrderLine]) -> Option<i64> {
    let distinct = lines
        .iter()
        .map(|l| l.product_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
        == lines.len();
    if !(1..=MAX_LINES).contains(&lines.len()) || !distinct {
        return None;
    }
    lines.iter().try_fold(0i64, |sum, line| {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) || line.unit_price < 0 {
            return None;
        }
        sum.checked_add(line.quantity.checked_mul(line.unit_price)?)
    })
}

impl Order {
    /// The event a command leads to: `Ok(None)` when the order has already moved past
    /// what the command is about (a late or repeated saga step changes nothing).
    fn decide(&self, command: OrderCommand) -> Result<Option<OrderEvent>, OrderError> {
        use OrderStatus as S;
        let Some(order_id) = self.order_id else {
            return match command {
                OrderCommand::Place {
                    order_id,
                    customer_id,
                    lines,
                } => {
                    let total = total(&lines).ok_or(OrderError::InvalidLines)?;
                    Ok(Some(OrderEvent::OrderPlaced(OrderPlaced {
                        order_id,
                        customer_id,
                        lines,
                        total,
                        currency: shop_schemas::orders::DEPLOYMENT_CURRENCY.to_string(),
                    })))
                }
                OrderCommand::CancelByCustomer { .. } => Err(OrderError::NotFound),
                // A saga step for an order this service never placed: nothing to do.
                _ => Ok(None),
            };
        };
        let cancelled = |reason: CancelReason| {
            Some(OrderEvent::OrderCancelled(OrderCancelled {
                order_id,
                reason: reason.as_str().to_string(),
            }))
        };
        Ok(match (command, self.status) {
            (OrderCommand::Place { .. }, _) => return Err(OrderError::AlreadyPlaced),
            (OrderCommand::Confirm, S::Pending) => {
                Some(OrderEvent::OrderConfirmed(OrderConfirmed { order_id }))
            }
            (OrderCommand::CancelByCustomer { customer_id }, status) => {
                if customer_id.is_some() && customer_id != self.customer_id {
                    return Err(OrderError::NotFound);
                }
                match (status, self.cancellation) {
                    // Nothing can be scheduled for a pending order: orders decides alone.
                    (S::Pending, _) => cancelled(CancelReason::CustomerRequest),
                    // Shipping may have scheduled (or dispatched) the parcel: it decides.
                    (S::Confirmed, None) => Some(OrderEvent::OrderCancellationRequested(
                        OrderCancellationRequested {
                            order_id,
                            reason: CancelReason::CustomerRequest.as_str().to_string(),
                        },
                    )),
                    // Asked already: the same request again changes nothing.
                    (S::Confirmed, Some(Cancellation::Requested)) => None,
                    (S::Cancelled, _) => return Err(OrderError::AlreadyCancelled),
                    // Refused (the parcel had left), shipped or delivered.
                    _ => return Err(OrderError::AlreadyShipped),
                }
            }
            (OrderCommand::ShipmentCancelled, S::Confirmed) => {
                cancelled(CancelReason::CustomerRequest)
            }
            (OrderCommand::CancellationRefused { reason }, status)
                if self.cancellation == Some(Cancellation::Requested) && status != S::Cancelled =>
            {
                Some(OrderEvent::OrderCancellationRefused(
                    OrderCancellationRefused { order_id, reason },
                ))
            }
            (OrderCommand::CancelBySaga { reason }, S::Confirmed)
                if reason == CancelReason::ShippingFailed =>
            {
                cancelled(reason)
            }
            (OrderCommand::CancelBySaga { reason }, S::Pending)
                if reason != CancelReason::ShippingFailed =>
            {
                cancelled(reason)
            }
            (OrderCommand::Ship, S::Confirmed) => {
                Some(OrderEvent::OrderShipped(OrderShipped { order_id }))
            }
            (OrderCommand::Deliver, S::Shipped) => {
                Some(OrderEvent::OrderDelivered(OrderDelivered { order_id }))
            }
            _ => None,
        })
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
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
        self.status = match event {
            OrderEvent::OrderCancellationRequested(_) => {
                self.cancellation = Some(Cancellation::Requested);
                return;
            }
            OrderEvent::OrderCancellationRefused(_) => {
                self.cancellation = Some(Cancellation::Refused);
                return;
            }
            OrderEvent::OrderPlaced(e) => {
                self.order_id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.total = e.total;
                OrderStatus::Pending
            }
            OrderEvent::OrderConfirmed(_) => OrderStatus::Confirmed,
            OrderEvent::OrderCancelled(_) => OrderStatus::Cancelled,
            OrderEvent::OrderShipped(_) => OrderStatus::Shipped,
            OrderEvent::OrderDelivered(_) => OrderStatus::Delivered,
        };
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn line(product: u128, quantity: i64, unit_price: i64) -> OrderLine {
        OrderLine {
            product_id: Uuid::from_u128(product),
            quantity,
            unit_price,
        }
    }

    fn place(lines: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::Place {
            order_id: Uuid::from_u128(100),
            customer_id: Uuid::from_u128(200),
            lines,
        }
    }

    fn placed(lines: Vec<OrderLine>, total: i64) -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced {
            order_id: Uuid::from_u128(100),
            customer_id: Uuid::from_u128(200),
            lines,
            total,
            currency: "JPY".into(),
        })
    }

    #[test]
    fn placing_an_order_prices_its_total() {
        let lines = vec![line(1, 2, 1200), line(2, 1, 500)];
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(place(lines.clone()))
            .then_expect_events(vec![placed(lines, 2900)]);
    }

    #[test]
    fn an_order_is_placed_once() {
        let lines = vec![line(1, 1, 10)];
        TestFramework::<Order>::with(())
            .given(vec![placed(lines.clone(), 10)])
            .when(place(lines))
            .then_expect_error(OrderError::AlreadyPlaced);
    }

    fn order() -> Uuid {
        Uuid::from_u128(100)
    }

    fn at(status: OrderStatus) -> Vec<OrderEvent> {
        let mut events = vec![placed(vec![line(1, 1, 10)], 10)];
        let confirmed = OrderEvent::OrderConfirmed(OrderConfirmed { order_id: order() });
        match status {
            OrderStatus::Confirmed => events.push(confirmed),
            OrderStatus::Shipped => {
                events.push(confirmed);
                events.push(OrderEvent::OrderShipped(OrderShipped { order_id: order() }));
            }
            OrderStatus::Delivered => {
                events.push(confirmed);
                events.push(OrderEvent::OrderShipped(OrderShipped { order_id: order() }));
                events.push(OrderEvent::OrderDelivered(OrderDelivered {
                    order_id: order(),
                }));
            }
            OrderStatus::Cancelled => events.push(cancelled(CancelReason::Timeout)),
            _ => {}
        }
        events
    }

    fn cancelled(reason: CancelReason) -> OrderEvent {
        OrderEvent::OrderCancelled(OrderCancelled {
            order_id: order(),
            reason: reason.as_str().into(),
        })
    }

    fn given(status: OrderStatus) -> cqrs_es::test::AggregateTestExecutor<Order> {
        TestFramework::<Order>::with(()).given(at(status))
    }

    #[test]
    fn a_pending_order_is_confirmed_once() {
        given(OrderStatus::Pending)
            .when(OrderCommand::Confirm)
            .then_expect_events(vec![OrderEvent::OrderConfirmed(OrderConfirmed {
                order_id: order(),
            })]);
        for status in [
            OrderStatus::Confirmed,
            OrderStatus::Cancelled,
            OrderStatus::Shipped,
        ] {
            given(status)
                .when(OrderCommand::Confirm)
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn saga_failures_cancel_a_pending_order_only() {
        for reason in [
            CancelReason::OutOfStock,
            CancelReason::PaymentDeclined,
            CancelReason::Timeout,
        ] {
            given(OrderStatus::Pending)
                .when(OrderCommand::CancelBySaga { reason })
                .then_expect_events(vec![cancelled(reason)]);
            for status in [OrderStatus::Confirmed, OrderStatus::Cancelled] {
                given(status)
                    .when(OrderCommand::CancelBySaga { reason })
                    .then_expect_events(vec![]);
            }
        }
    }

    #[test]
    fn a_failed_shipment_cancels_a_confirmed_order() {
        let reason = CancelReason::ShippingFailed;
        given(OrderStatus::Confirmed)
            .when(OrderCommand::CancelBySaga { reason })
            .then_expect_events(vec![cancelled(reason)]);
        for status in [
            OrderStatus::Pending,
            OrderStatus::Cancelled,
            OrderStatus::Shipped,
        ] {
            given(status)
                .when(OrderCommand::CancelBySaga { reason })
                .then_expect_events(vec![]);
        }
    }

    fn requested() -> OrderEvent {
        OrderEvent::OrderCancellationRequested(OrderCancellationRequested {
            order_id: order(),
            reason: "customer_request".into(),
        })
    }

    fn refused() -> OrderEvent {
        OrderEvent::OrderCancellationRefused(OrderCancellationRefused {
            order_id: order(),
            reason: "already_dispatched".into(),
        })
    }

    fn given_after(
        status: OrderStatus,
        more: Vec<OrderEvent>,
    ) -> cqrs_es::test::AggregateTestExecutor<Order> {
        let mut events = at(status);
        events.extend(more);
        TestFramework::<Order>::with(()).given(events)
    }

    #[test]
    fn a_customer_cancels_a_pending_order_at_once() {
        given(OrderStatus::Pending)
            .when(OrderCommand::CancelByCustomer {
                customer_id: Some(Uuid::from_u128(200)),
            })
            .then_expect_events(vec![cancelled(CancelReason::CustomerRequest)]);
    }

    #[test]
    fn a_confirmed_orders_cancellation_is_requested_from_shipping() {
        let owner = Some(Uuid::from_u128(200));
        given(OrderStatus::Confirmed)
            .when(OrderCommand::CancelByCustomer { customer_id: owner })
            .then_expect_events(vec![requested()]);
        // Asked twice: one request.
        given_after(OrderStatus::Confirmed, vec![requested()])
            .when(OrderCommand::CancelByCustomer { customer_id: owner })
            .then_expect_events(vec![]);
        // Shipping cancelled the shipment: the order is cancelled, compensations follow.
        given_after(OrderStatus::Confirmed, vec![requested()])
            .when(OrderCommand::ShipmentCancelled)
            .then_expect_events(vec![cancelled(CancelReason::CustomerRequest)]);
        // Shipping refused (the parcel had left): the order goes on, shipped.
        given_after(OrderStatus::Confirmed, vec![requested()])
            .when(OrderCommand::CancellationRefused {
                reason: "already_dispatched".into(),
            })
            .then_expect_events(vec![refused()]);
        given_after(OrderStatus::Confirmed, vec![requested(), refused()])
            .when(OrderCommand::Ship)
            .then_expect_events(vec![OrderEvent::OrderShipped(OrderShipped {
                order_id: order(),
            })]);
        given_after(OrderStatus::Confirmed, vec![requested(), refused()])
            .when(OrderCommand::CancelByCustomer { customer_id: owner })
            .then_expect_error(OrderError::AlreadyShipped);
        // A dispatch that won the race shows before the refusal: shipped, then refused.
        given_after(OrderStatus::Shipped, vec![requested()])
            .when(OrderCommand::CancellationRefused {
                reason: "already_dispatched".into(),
            })
            .then_expect_events(vec![refused()]);
    }

    #[test]
    fn a_refusal_without_a_request_or_after_a_cancellation_changes_nothing() {
        for status in [OrderStatus::Confirmed, OrderStatus::Shipped] {
            given(status)
                .when(OrderCommand::CancellationRefused {
                    reason: "already_dispatched".into(),
                })
                .then_expect_events(vec![]);
        }
        given(OrderStatus::Cancelled)
            .when(OrderCommand::ShipmentCancelled)
            .then_expect_events(vec![]);
        given(OrderStatus::Pending)
            .when(OrderCommand::ShipmentCancelled)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_customer_cancels_until_shipping() {
        let owner = Some(Uuid::from_u128(200));
        for status in [OrderStatus::Shipped, OrderStatus::Delivered] {
            given(status)
                .when(OrderCommand::CancelByCustomer { customer_id: owner })
                .then_expect_error(OrderError::AlreadyShipped);
        }
        given(OrderStatus::Cancelled)
            .when(OrderCommand::CancelByCustomer { customer_id: owner })
            .then_expect_error(OrderError::AlreadyCancelled);
    }

    #[test]
    fn another_customers_order_does_not_exist() {
        given(OrderStatus::Pending)
            .when(OrderCommand::CancelByCustomer {
                customer_id: Some(Uuid::from_u128(201)),
            })
            .then_expect_error(OrderError::NotFound);
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(OrderCommand::CancelByCustomer { customer_id: None })
            .then_expect_error(OrderError::NotFound);
        // An admin may cancel any order.
        given(OrderStatus::Confirmed)
            .when(OrderCommand::CancelByCustomer { customer_id: None })
            .then_expect_events(vec![requested()]);
        given(OrderStatus::Pending)
            .when(OrderCommand::CancelByCustomer { customer_id: None })
            .then_expect_events(vec![cancelled(CancelReason::CustomerRequest)]);
    }

    #[test]
    fn shipping_moves_a_confirmed_order_forward() {
        given(OrderStatus::Confirmed)
            .when(OrderCommand::Ship)
            .then_expect_events(vec![OrderEvent::OrderShipped(OrderShipped {
                order_id: order(),
            })]);
        given(OrderStatus::Shipped)
            .when(OrderCommand::Deliver)
            .then_expect_events(vec![OrderEvent::OrderDelivered(OrderDelivered {
                order_id: order(),
            })]);
        // A dispatch after a cancellation (a race with the customer) moves nothing.
        given(OrderStatus::Cancelled)
            .when(OrderCommand::Ship)
            .then_expect_events(vec![]);
        given(OrderStatus::Confirmed)
            .when(OrderCommand::Deliver)
            .then_expect_events(vec![]);
    }

    #[test]
    fn saga_steps_for_an_unknown_order_change_nothing() {
        TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(OrderCommand::Confirm)
            .then_expect_events(vec![]);
    }

    #[test]
    fn lines_must_be_valid() {
        let too_many: Vec<OrderLine> = (0..101).map(|i| line(i, 1, 1)).collect();
        for lines in [
            vec![],
            vec![line(1, 0, 1)],
            vec![line(1, 1001, 1)],
            vec![line(1, 1, 1), line(1, 2, 1)],
            too_many,
        ] {
            TestFramework::<Order>::with(())
                .given_no_previous_events()
                .when(place(lines))
                .then_expect_error(OrderError::InvalidLines);
        }
    }
}
