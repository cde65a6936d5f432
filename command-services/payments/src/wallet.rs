//! The `Wallet` aggregate: a customer's balance.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use shop_schemas::payments::{
    FundsDeposited, PaymentCompleted, PaymentDeclined, PaymentEvent, PaymentRefunded,
};
use uuid::Uuid;

// A wallet remembers every order it settled, so its state grows with its customer's
// orders, and the command bus copies a state to cache it and to start each command from
// it. These collections share their nodes between copies (a copy costs nothing, an insert
// copies one path), where `std`'s trees were copied whole each time. They serialize as
// `std`'s do, so snapshots read the same.
use imbl::{OrdMap, OrdSet};

/// Largest single deposit (SPEC §3.2).
pub const MAX_DEPOSIT: i64 = 1_000_000_000_000;
/// Largest balance a wallet may hold (keeps every sum far from overflow).
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalletCommand {
    Deposit {
        customer_id: Uuid,
        amount: i64,
    },
    /// Take an order's total, or decline when the balance is short; once per order.
    Charge {
        customer_id: Uuid,
        order_id: Uuid,
        amount: i64,
    },
    /// Give back an order's completed charge (its order was cancelled); once per order,
    /// nothing when the order was not charged.
    Refund {
        customer_id: Uuid,
        order_id: Uuid,
    },
}

pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("amount must be between 1 and {MAX_DEPOSIT}")]
    InvalidAmount,
    #[error("the wallet would exceed its largest balance")]
    BalanceLimit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    pub balance: i64,
    /// Orders already charged or declined: a repeated charge changes nothing.
    pub settled_orders: OrdSet<Uuid>,
    /// Completed charges not refunded, by order: what a refund gives back.
    #[serde(default)]
    pub charges: OrdMap<Uuid, i64>,
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = WalletCommand;
    type Event = PaymentEvent;
    type Error = WalletError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            WalletCommand::Deposit {
                customer_id,
                amount,
            } => {
                if !(1..=MAX_DEPOSIT).contains(&amount) {
                    return Err(WalletError::InvalidAmount);
                }
                if self.balance + amount > MAX_BALANCE {
                    return Err(WalletError::BalanceLimit);
                }
                sink.write(
                    PaymentEvent::FundsDeposited(FundsDeposited {
                        customer_id,
                        amount,
                    }),
                    self,
                )
                .await;
            }
            WalletCommand::Charge {
                customer_id,
                order_id,
                amount,
            } => {
                if self.settled_orders.contains(&order_id) {
                    return Ok(());
                }
                if amount < 0 {
                    return Err(WalletError::InvalidAmount);
                }
                let event = if self.balance >= amount {
                    PaymentEvent::PaymentCompleted(PaymentCompleted {
                        order_id,
                        customer_id,
                        amount,
                    })
                } else {
                    PaymentEvent::PaymentDeclined(PaymentDeclined {
                        order_id,
                        customer_id,
                        amount,
                        reason: INSUFFICIENT_FUNDS.to_string(),
                    })
                };
                sink.write(event, self).await;
            }
            WalletCommand::Refund {
                customer_id,
                order_id,
            } => {
                if let Some(&amount) = self.charges.get(&order_id) {
                    let event = PaymentRefunded {
                        order_id,
                        customer_id,
                        amount,
                    };
                    sink.write(PaymentEvent::PaymentRefunded(event), self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::FundsDeposited(e) => self.balance += e.amount,
            PaymentEvent::PaymentCompleted(e) => {
                self.balance -= e.amount;
                self.settled_orders.insert(e.order_id);
                self.charges.insert(e.order_id, e.amount);
            }
            PaymentEvent::PaymentRefunded(e) => {
                self.balance += e.amount;
                self.charges.remove(&e.order_id);
            }
            PaymentEvent::PaymentDeclined(e) => {
                self.settled_orders.insert(e.order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn id() -> Uuid {
        Uuid::from_u128(9)
    }

    fn deposited(amount: i64) -> PaymentEvent {
        PaymentEvent::FundsDeposited(FundsDeposited {
            customer_id: id(),
            amount,
        })
    }

    #[test]
    fn a_deposit_adds_funds() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(100)])
            .when(WalletCommand::Deposit {
                customer_id: id(),
                amount: 50,
            })
            .then_expect_events(vec![deposited(50)]);
    }

    #[test]
    fn deposits_must_be_positive_and_bounded() {
        for amount in [0, -1, MAX_DEPOSIT + 1] {
            TestFramework::<Wallet>::with(())
                .given_no_previous_events()
                .when(WalletCommand::Deposit {
                    customer_id: id(),
                    amount,
                })
                .then_expect_error(WalletError::InvalidAmount);
        }
    }

    fn charge(amount: i64) -> WalletCommand {
        WalletCommand::Charge {
            customer_id: id(),
            order_id: Uuid::from_u128(7),
            amount,
        }
    }

    fn completed(amount: i64) -> PaymentEvent {
        PaymentEvent::PaymentCompleted(PaymentCompleted {
            order_id: Uuid::from_u128(7),
            customer_id: id(),
            amount,
        })
    }

    #[test]
    fn a_charge_within_the_balance_completes() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(100)])
            .when(charge(100))
            .then_expect_events(vec![completed(100)]);
    }

    #[test]
    fn a_charge_beyond_the_balance_is_declined() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(99)])
            .when(charge(100))
            .then_expect_events(vec![PaymentEvent::PaymentDeclined(PaymentDeclined {
                order_id: Uuid::from_u128(7),
                customer_id: id(),
                amount: 100,
                reason: INSUFFICIENT_FUNDS.into(),
            })]);
    }

    #[test]
    fn an_order_is_charged_once() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(500), completed(100)])
            .when(charge(100))
            .then_expect_events(vec![]);
    }

    fn refund() -> WalletCommand {
        WalletCommand::Refund {
            customer_id: id(),
            order_id: Uuid::from_u128(7),
        }
    }

    fn refunded(amount: i64) -> PaymentEvent {
        PaymentEvent::PaymentRefunded(PaymentRefunded {
            order_id: Uuid::from_u128(7),
            customer_id: id(),
            amount,
        })
    }

    #[test]
    fn a_completed_charge_is_refunded_once() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(500), completed(100)])
            .when(refund())
            .then_expect_events(vec![refunded(100)]);
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(500), completed(100), refunded(100)])
            .when(refund())
            .then_expect_events(vec![]);
    }

    #[test]
    fn nothing_is_refunded_without_a_completed_charge() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(50)])
            .when(refund())
            .then_expect_events(vec![]);
        let declined = PaymentEvent::PaymentDeclined(PaymentDeclined {
            order_id: Uuid::from_u128(7),
            customer_id: id(),
            amount: 100,
            reason: INSUFFICIENT_FUNDS.into(),
        });
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(50), declined])
            .when(refund())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_refunded_order_is_not_charged_again() {
        TestFramework::<Wallet>::with(())
            .given(vec![deposited(500), completed(100), refunded(100)])
            .when(charge(100))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_wallet_has_a_largest_balance() {
        let full: Vec<PaymentEvent> = (0..1000).map(|_| deposited(MAX_DEPOSIT)).collect();
        TestFramework::<Wallet>::with(())
            .given(full)
            .when(WalletCommand::Deposit {
                customer_id: id(),
                amount: 1,
            })
            .then_expect_error(WalletError::BalanceLimit);
    }

    /// Snapshots taken when the state was `std`'s `BTreeSet`/`BTreeMap` read the same,
    /// and are written back the same.
    #[test]
    fn a_snapshot_reads_and_writes_as_before() {
        let order = Uuid::from_u128(1);
        let settled = Uuid::from_u128(2);
        let mut before = std::collections::BTreeMap::new();
        before.insert(order, 300i64);
        let snapshot = serde_json::json!({
            "balance": 700,
            "settled_orders": std::collections::BTreeSet::from([order, settled]),
            "charges": before,
        });
        let wallet: Wallet = serde_json::from_value(snapshot.clone()).unwrap();
        assert_eq!(wallet.balance, 700);
        assert!(wallet.settled_orders.contains(&settled));
        assert_eq!(wallet.charges.get(&order), Some(&300));
        assert_eq!(serde_json::to_value(&wallet).unwrap(), snapshot);
    }
}
