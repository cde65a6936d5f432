//! The customer read model: account details (`customers`) and figures
//! (`customer_figures`: wallet balance, orders count, lifetime spend); the read API joins
//! them into the customer view of SPEC §3.2.

use async_trait::async_trait;
use shop_eventing::handler::{decode, EventHandler, HandlerError};
use shop_schemas::customers::CustomerEvent;
use shop_schemas::orders::OrderEvent;
use shop_schemas::payments::PaymentEvent;
use shop_schemas::{CloudEvent, Service};
use shop_sql::{Conn, RowSet};
use std::collections::HashMap;
use uuid::Uuid;

use crate::ProjectionInfo;

pub const INFO: ProjectionInfo = ProjectionInfo {
    name: "customers",
    consumer: "projection.customers",
    sources: &[Service::Customers, Service::Payments, Service::Orders],
    schema: include_str!("../sql/customers.sql"),
    tables: &["customers", "customer_figures"],
    indexes: &[],
    revision: 1,
    added_columns: &[],
};

/// Applies customer events to `customers`, and payments and orders to `customer_figures`.
pub struct CustomersProjection;

/// What an event adds to a customer's figures.
#[derive(Default)]
struct Delta {
    wallet_balance: i64,
    orders_count: i64,
    lifetime_spend: i64,
}

fn delta(event: &CloudEvent) -> Result<Option<(Uuid, Delta)>, HandlerError> {
    Ok(match event.service() {
        Some(Service::Payments) => match decode::<PaymentEvent>(Service::Payments, event)? {
            Some(PaymentEvent::FundsDeposited(e)) => Some((
                e.customer_id,
                Delta {
                    wallet_balance: e.amount,
                    ..Delta::default()
                },
            )),
            Some(PaymentEvent::PaymentCompleted(e)) => Some((
                e.customer_id,
                Delta {
                    wallet_balance: -e.amount,
                    lifetime_spend: e.amount,
                    ..Delta::default()
                },
            )),
            Some(PaymentEvent::PaymentRefunded(e)) => Some((
                e.customer_id,
                Delta {
                    wallet_balance: e.amount,
                    lifetime_spend: -e.amount,
                    ..Delta::default()
                },
            )),
            Some(PaymentEvent::PaymentDeclined(_)) | None => None,
        },
        Some(Service::Orders) => match decode::<OrderEvent>(Service::Orders, event)? {
            Some(OrderEvent::OrderPlaced(e)) => Some((
                e.customer_id,
                Delta {
                    orders_count: 1,
                    ..Delta::default()
                },
            )),
            _ => None,
        },
        _ => None,
    })
}

/// How a figures row takes a delta (`EXCLUDED`).
const FIGURES_ADDED: &str =
    "wallet_balance = customer_figures.wallet_balance + EXCLUDED.wallet_balance,
    orders_count = customer_figures.orders_count + EXCLUDED.orders_count,
    lifetime_spend = customer_figures.lifetime_spend + EXCLUDED.lifetime_spend,
    updated_at = CASE WHEN customer_figures.updated_at > EXCLUDED.updated_at
                      THEN customer_figures.updated_at ELSE EXCLUDED.updated_at END";

/// The row sets of a batch: new customers, and the figures' deltas per customer.
const REGISTERED: [(&str, &str); 6] = [
    ("customer_id", "UUID"),
    ("name", "TEXT"),
    ("email", "TEXT"),
    ("address", "JSONB"),
    ("version", "BIGINT"),
    ("at", "TIMESTAMPTZ"),
];
const FIGURES: [(&str, &str); 5] = [
    ("customer_id", "UUID"),
    ("wallet_balance", "BIGINT"),
    ("orders_count", "BIGINT"),
    ("lifetime_spend", "BIGINT"),
    ("at", "TIMESTAMPTZ"),
];

#[async_trait]
impl EventHandler for CustomersProjection {
    fn batches(&self) -> bool {
        true
    }

    /// The projection's one handler: a batch (one event is a batch of one) in two
    /// statements — new customers, and the figures' deltas summed per customer.
    async fn handle_batch(
        &self,
        tx: &mut Conn,
        events: &[&CloudEvent],
    ) -> Result<(), HandlerError> {
        let mut registered = RowSet::new(&REGISTERED);
        let mut figures: HashMap<Uuid, (Delta, chrono::DateTime<chrono::Utc>)> = HashMap::new();
        for event in events {
            if let Some((customer_id, d)) = delta(event)? {
                let (sum, at) = figures
                    .entry(customer_id)
                    .or_insert_with(|| (Delta::default(), event.time));
                sum.wallet_balance += d.wallet_balance;
                sum.orders_count += d.orders_count;
                sum.lifetime_spend += d.lifetime_spend;
                *at = (*at).max(event.time);
            } else if let Some(CustomerEvent::CustomerRegistered(e)) =
                decode::<CustomerEvent>(Service::Customers, event)?
            {
                let address = serde_json::to_string(&e.address)
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
                registered.push([
                    e.customer_id.into(),
                    e.name.into(),
                    e.email.into(),
                    address.into(),
                    (event.sequence as i64).into(),
                    event.time.into(),
                ]);
            }
        }
        registered
            .execute(
                tx,
                Vec::new(),
                |r| format!(
                    "INSERT INTO customers (customer_id, name, email, address, version, created_at, updated_at)
                     SELECT customer_id, name, email, address, version, at, at FROM {r} WHERE true
                     ON CONFLICT (customer_id) DO NOTHING"
                ),
            )
            .await?;
        let mut rows = RowSet::new(&FIGURES);
        for (customer_id, (d, at)) in figures {
            rows.push([
                customer_id.into(),
                d.wallet_balance.into(),
                d.orders_count.into(),
                d.lifetime_spend.into(),
                at.into(),
            ]);
        }
        rows.execute(
            tx,
            Vec::new(),
            |r| format!(
                "INSERT INTO customer_figures (customer_id, wallet_balance, orders_count, lifetime_spend, updated_at)
                 SELECT customer_id, wallet_balance, orders_count, lifetime_spend, at FROM {r} WHERE true
                 -- Members of the group applying other partitions update the same
                 -- customers: rows locked in one order, two of them never deadlock.
                 ORDER BY customer_id
                 ON CONFLICT (customer_id) DO UPDATE SET {FIGURES_ADDED}"
            ),
        )
        .await?;
        Ok(())
    }

    /// A batch of one.
    async fn handle(&self, tx: &mut Conn, event: &CloudEvent) -> Result<(), HandlerError> {
        self.handle_batch(tx, &[event]).await
    }
}
