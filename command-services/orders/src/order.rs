//! The `Order` aggregate: one order and where it stands.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::orders::{OrderEvent, OrderLine, OrderPlaced};
use uuid::Uuid;

/// Lines per order, and units per line (SPEC §3.4).
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Lines already priced from the catalogue replica.
    Place {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order already exists")]
    AlreadyPlaced,
    #[error(
        "an order has 1 to {MAX_LINES} lines of distinct products, 1 to {MAX_QUANTITY} units each"
    )]
    InvalidLines,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    None,
    Pending,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub status: OrderStatus,
    pub customer_id: Option<Uuid>,
    pub total: i64,
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
        match command {
            OrderCommand::Place {
                order_id,
                customer_id,
                lines,
            } => {
                if self.status != OrderStatus::None {
                    return Err(OrderError::AlreadyPlaced);
                }
                let total = total(&lines).ok_or(OrderError::InvalidLines)?;
                let event = OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    total,
                };
                sink.write(OrderEvent::OrderPlaced(event), self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::OrderPlaced(e) => {
                self.status = OrderStatus::Pending;
                self.customer_id = Some(e.customer_id);
                self.total = e.total;
            }
        }
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
