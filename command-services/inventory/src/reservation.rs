//! The `Reservation` aggregate: inventory's one decision per order (id = order id) —
//! every line reserved, or none. Availability is read and locked by the reaction in
//! [`crate::reactions`]; the append hook moves the units in `stock`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::inventory::{
    InventoryEvent, StockLine, StockReservationRejected, StockReserved, StockShortage,
};
use uuid::Uuid;

pub const OUT_OF_STOCK: &str = "out_of_stock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationCommand {
    Reserve {
        order_id: Uuid,
        lines: Vec<StockLine>,
    },
    Reject {
        order_id: Uuid,
        shortages: Vec<StockShortage>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    #[error("a reservation needs at least one line")]
    NoLines,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    #[default]
    Undecided,
    Reserved,
    Rejected,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub state: ReservationState,
}

impl Aggregate for Reservation {
    const TYPE: &'static str = "reservation";
    type Command = ReservationCommand;
    type Event = InventoryEvent;
    type Error = ReservationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Decided once: a repeated order (a redelivery the dedup did not catch) changes nothing.
        if self.state != ReservationState::Undecided {
            return Ok(());
        }
        let event = match command {
            ReservationCommand::Reserve { order_id, lines } => {
                if lines.is_empty() {
                    return Err(ReservationError::NoLines);
                }
                InventoryEvent::StockReserved(StockReserved { order_id, lines })
            }
            ReservationCommand::Reject {
                order_id,
                shortages,
            } => {
                if shortages.is_empty() {
                    return Err(ReservationError::NoLines);
                }
                InventoryEvent::StockReservationRejected(StockReservationRejected {
                    order_id,
                    reason: OUT_OF_STOCK.to_string(),
                    lines: shortages,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InventoryEvent::StockReserved(_) => self.state = ReservationState::Reserved,
            InventoryEvent::StockReservationRejected(_) => self.state = ReservationState::Rejected,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn order() -> Uuid {
        Uuid::from_u128(42)
    }

    fn lines() -> Vec<StockLine> {
        vec![StockLine {
            product_id: Uuid::from_u128(1),
            quantity: 2,
        }]
    }

    fn reserved() -> InventoryEvent {
        InventoryEvent::StockReserved(StockReserved {
            order_id: order(),
            lines: lines(),
        })
    }

    #[test]
    fn reserving_records_every_line() {
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(ReservationCommand::Reserve {
                order_id: order(),
                lines: lines(),
            })
            .then_expect_events(vec![reserved()]);
    }

    #[test]
    fn rejecting_names_the_short_lines() {
        let shortages = vec![StockShortage {
            product_id: Uuid::from_u128(1),
            requested: 5,
            available: 1,
        }];
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(ReservationCommand::Reject {
                order_id: order(),
                shortages: shortages.clone(),
            })
            .then_expect_events(vec![InventoryEvent::StockReservationRejected(
                StockReservationRejected {
                    order_id: order(),
                    reason: OUT_OF_STOCK.into(),
                    lines: shortages,
                },
            )]);
    }

    #[test]
    fn an_order_is_decided_once() {
        TestFramework::<Reservation>::with(())
            .given(vec![reserved()])
            .when(ReservationCommand::Reserve {
                order_id: order(),
                lines: lines(),
            })
            .then_expect_events(vec![]);
    }
}
