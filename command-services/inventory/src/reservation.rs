//! The `Reservation` aggregate: inventory's one decision per order (id = order id) —
//! every line reserved, or none — and what became of it: committed (sold) when the order
//! is confirmed, released back to available when it is cancelled.
//!
//! The no-oversell rule is stated here and only here ([`Available::shortages`], applied
//! by [`Reservation`]'s decision): an order is reserved when every line's quantity is
//! at most its product's available units, else rejected with the short lines. The
//! reaction in [`crate::reactions`] reads and locks the units the decision needs and
//! hands them in with the command; the append hook then moves them in `stock`, whose
//! `CHECK (available >= 0)` is the last guard: a decision on a wrong count aborts its
//! append instead of overselling.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::inventory::{
    InventoryEvent, StockCommitted, StockLine, StockReleased, StockReservationRejected,
    StockReserved, StockShortage, RELEASED_FROM_RESERVED, RELEASED_FROM_SOLD,
};
use uuid::Uuid;

pub const OUT_OF_STOCK: &str = "out_of_stock";

/// The units available per product, as locked by whoever asks for a decision (a product
/// it does not hold has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Available(HashMap<Uuid, i64>);

impl Available {
    /// The available units of a product.
    pub fn of(&self, product_id: Uuid) -> i64 {
        self.0.get(&product_id).copied().unwrap_or(0)
    }

    /// Whether it holds a count for the product (read, even if zero).
    pub fn knows(&self, product_id: Uuid) -> bool {
        self.0.contains_key(&product_id)
    }

    /// The no-oversell rule: the lines the available units cannot cover (none: the
    /// order can be reserved whole).
    pub fn shortages(&self, lines: &[StockLine]) -> Vec<StockShortage> {
        lines
            .iter()
            .filter_map(|line| {
                let there = self.of(line.product_id);
                (there < line.quantity).then_some(StockShortage {
                    product_id: line.product_id,
                    requested: line.quantity,
                    available: there,
                })
            })
            .collect()
    }

    /// What a decision on these lines leaves: the units of a reserved order taken, nothing
    /// taken for a rejected one. Returns whether it reserved.
    pub fn take(&mut self, lines: &[StockLine]) -> bool {
        if !self.shortages(lines).is_empty() {
            return false;
        }
        for line in lines {
            *self.0.entry(line.product_id).or_default() -= line.quantity;
        }
        true
    }

    /// The counts of these products only.
    pub fn only(&self, products: impl IntoIterator<Item = Uuid>) -> Available {
        Available(
            products
                .into_iter()
                .filter_map(|id| self.0.get(&id).map(|units| (id, *units)))
                .collect(),
        )
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl FromIterator<(Uuid, i64)> for Available {
    fn from_iter<I: IntoIterator<Item = (Uuid, i64)>>(iter: I) -> Self {
        Available(iter.into_iter().collect())
    }
}

impl Extend<(Uuid, i64)> for Available {
    fn extend<I: IntoIterator<Item = (Uuid, i64)>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationCommand {
    /// An order was placed: reserve every line if `available` (the locked units of its
    /// products) covers each, else reject it naming the short lines.
    Reserve {
        order_id: Uuid,
        lines: Vec<StockLine>,
        available: Available,
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
            (
                ReservationCommand::Reserve {
                    order_id,
                    lines,
                    available,
                },
                S::Undecided,
            ) => {
                if lines.is_empty() {
                    return Err(ReservationError::NoLines);
                }
                let shortages = available.shortages(&lines);
                Some(if shortages.is_empty() {
                    InventoryEvent::StockReserved(StockReserved { order_id, lines })
                } else {
                    InventoryEvent::StockReservationRejected(StockReservationRejected {
                        order_id,
                        reason: OUT_OF_STOCK.to_string(),
                        lines: shortages,
                    })
                })
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

    fn reserve(lines: Vec<StockLine>, available: &[(u128, i64)]) -> ReservationCommand {
        ReservationCommand::Reserve {
            order_id: order(),
            lines,
            available: available
                .iter()
                .map(|(id, units)| (Uuid::from_u128(*id), *units))
                .collect(),
        }
    }

    fn line(product: u128, quantity: i64) -> StockLine {
        StockLine {
            product_id: Uuid::from_u128(product),
            quantity,
        }
    }

    fn rejected(shortages: Vec<(u128, i64, i64)>) -> InventoryEvent {
        InventoryEvent::StockReservationRejected(StockReservationRejected {
            order_id: order(),
            reason: OUT_OF_STOCK.into(),
            lines: shortages
                .into_iter()
                .map(|(product, requested, available)| StockShortage {
                    product_id: Uuid::from_u128(product),
                    requested,
                    available,
                })
                .collect(),
        })
    }

    #[test]
    fn an_order_the_stock_covers_is_reserved_whole() {
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(lines(), &[(1, 5)]))
            .then_expect_events(vec![reserved()]);
        // Down to the last unit.
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(lines(), &[(1, 2)]))
            .then_expect_events(vec![reserved()]);
    }

    #[test]
    fn an_order_the_stock_does_not_cover_is_rejected_naming_the_short_lines() {
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(lines(), &[(1, 1)]))
            .then_expect_events(vec![rejected(vec![(1, 2, 1)])]);
        // All or nothing: one short line rejects the order; only that line is named.
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(
                vec![line(1, 2), line(2, 3), line(3, 1)],
                &[(1, 9), (2, 2), (3, 1)],
            ))
            .then_expect_events(vec![rejected(vec![(2, 3, 2)])]);
        // A product without stock has none.
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(vec![line(1, 1), line(7, 1)], &[(1, 1)]))
            .then_expect_events(vec![rejected(vec![(7, 1, 0)])]);
    }

    #[test]
    fn an_order_without_lines_is_refused() {
        TestFramework::<Reservation>::with(())
            .given_no_previous_events()
            .when(reserve(Vec::new(), &[(1, 5)]))
            .then_expect_error(ReservationError::NoLines);
    }

    #[test]
    fn taking_what_a_decision_reserved_leaves_the_rest_for_the_next_order() {
        let mut available: Available = [(Uuid::from_u128(1), 5)].into_iter().collect();
        assert!(available.take(&[line(1, 3)]));
        assert_eq!(available.of(Uuid::from_u128(1)), 2);
        // Short: nothing taken.
        assert!(!available.take(&[line(1, 3)]));
        assert_eq!(available.of(Uuid::from_u128(1)), 2);
        assert!(available.take(&[line(1, 2)]));
        assert_eq!(available.of(Uuid::from_u128(1)), 0);
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
            .when(reserve(lines(), &[(1, 5)]))
            .then_expect_events(vec![]);
        TestFramework::<Reservation>::with(())
            .given(vec![rejected(vec![(1, 2, 1)])])
            .when(reserve(lines(), &[(1, 5)]))
            .then_expect_events(vec![]);
    }
}
