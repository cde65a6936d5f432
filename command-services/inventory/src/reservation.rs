//! The `Reservation` aggregate: inventory's one decision per order (id = order id) —
//! every line reserved, or none — and what became of it: committed (sold) when the order
//! is confirmed, released back to available when it is cancelled. Availability is read and locked by the reaction in
//! [`crate::reactions`]; the append hook moves the units in `stock`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::inventory::{
    InventoryEvent, StockCommitted, StockLine, StockReleased, StockReservationRejected,
    StockReserved, StockShortage, RELEASED_FROM_RESERVED, RELEASED_FROM_SOLD,
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
    /// The order was confirmed: its reserved units become sold.
    Commit { order_id: Uuid },
    /// The order was cancelled: its reserved or sold units return to available.
    Release { order_id: Uuid },
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
    Committed,
    Released,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub state: ReservationState,
    /// The units held for the order (reserved, then sold).
    pub lines: Vec<StockLine>,
}

impl Reservation {
    /// The event a command leads to; `None` when the reservation already moved past it
    /// (a repeated or late saga step changes nothing).
    fn decide(
        &self,
        command: ReservationCommand,
    ) -> Result<Option<InventoryEvent>, ReservationError> {
        use ReservationState as S;
        Ok(match (command, self.state) {
            (ReservationCommand::Reserve { order_id, lines }, S::Undecided) => {
                if lines.is_empty() {
                    return Err(ReservationError::NoLines);
                }
                Some(InventoryEvent::StockReserved(StockReserved {
                    order_id,
                    lines,
                }))
            }
            (
                ReservationCommand::Reject {
                    order_id,
                    shortages,
                },
                S::Undecided,
            ) => {
                if shortages.is_empty() {
                    return Err(ReservationError::NoLines);
                }
                Some(InventoryEvent::StockReservationRejected(
                    StockReservationRejected {
                        order_id,
                        reason: OUT_OF_STOCK.to_string(),
                        lines: shortages,
                    },
                ))
            }
            (ReservationCommand::Commit { order_id }, S::Reserved) => {
                Some(InventoryEvent::StockCommitted(StockCommitted {
                    order_id,
                    lines: self.lines.clone(),
                }))
            }
            (ReservationCommand::Release { order_id }, state @ (S::Reserved | S::Committed)) => {
                let released_from = if state == S::Reserved {
                    RELEASED_FROM_RESERVED
                } else {
                    RELEASED_FROM_SOLD
                };
                Some(InventoryEvent::StockReleased(StockReleased {
                    order_id,
                    lines: self.lines.clone(),
                    released_from: released_from.to_string(),
                }))
            }
            _ => None,
        })
    }
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
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InventoryEvent::StockReserved(e) => {
                self.state = ReservationState::Reserved;
                self.lines = e.lines;
            }
            InventoryEvent::StockReservationRejected(_) => self.state = ReservationState::Rejected,
            InventoryEvent::StockCommitted(_) => self.state = ReservationState::Committed,
            InventoryEvent::StockReleased(_) => self.state = ReservationState::Released,
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

    fn committed() -> InventoryEvent {
        InventoryEvent::StockCommitted(StockCommitted {
            order_id: order(),
            lines: lines(),
        })
    }

    fn released(from: &str) -> InventoryEvent {
        InventoryEvent::StockReleased(StockReleased {
            order_id: order(),
            lines: lines(),
            released_from: from.into(),
        })
    }

    #[test]
    fn a_confirmed_order_commits_its_reservation_once() {
        let commit = ReservationCommand::Commit { order_id: order() };
        TestFramework::<Reservation>::with(())
            .given(vec![reserved()])
            .when(commit.clone())
            .then_expect_events(vec![committed()]);
        TestFramework::<Reservation>::with(())
            .given(vec![reserved(), committed()])
            .when(commit.clone())
            .then_expect_events(vec![]);
        TestFramework::<Reservation>::with(())
            .given(vec![reserved(), released(RELEASED_FROM_RESERVED)])
            .when(commit)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_cancelled_order_releases_what_it_held_once() {
        let release = ReservationCommand::Release { order_id: order() };
        TestFramework::<Reservation>::with(())
            .given(vec![reserved()])
            .when(release.clone())
            .then_expect_events(vec![released(RELEASED_FROM_RESERVED)]);
        TestFramework::<Reservation>::with(())
            .given(vec![reserved(), committed()])
            .when(release.clone())
            .then_expect_events(vec![released(RELEASED_FROM_SOLD)]);
        TestFramework::<Reservation>::with(())
            .given(vec![reserved(), released(RELEASED_FROM_RESERVED)])
            .when(release.clone())
            .then_expect_events(vec![]);
        // Nothing was reserved: nothing to give back.
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(release)
            .then_expect_events(vec![]);
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
