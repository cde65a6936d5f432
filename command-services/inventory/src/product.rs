//! The `Product` aggregate: one catalogue entry with its price and stock on hand.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::inventory::{
    InventoryEvent, ProductAdded, ProductPriceChanged, ProductRestocked,
};
use uuid::Uuid;

/// Largest price or quantity accepted (keeps sums far from overflow).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    AddProduct {
        product_id: Uuid,
        sku: String,
        name: String,
        price: i64,
        stock: i64,
        category: String,
    },
    Restock {
        quantity: i64,
    },
    ChangePrice {
        price: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("the product already exists")]
    AlreadyExists,
    #[error("no such product")]
    NotFound,
    #[error("quantity must be between 1 and {MAX_AMOUNT}")]
    InvalidQuantity,
    #[error("price must be between 0 and {MAX_AMOUNT}")]
    InvalidPrice,
    #[error("initial stock must be between 0 and {MAX_AMOUNT}")]
    InvalidStock,
}

/// State rebuilt from the product's events; only what the rules need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub product_id: Option<Uuid>,
    pub price: i64,
    /// Units on hand and not reserved.
    pub available: i64,
}

impl Aggregate for Product {
    const TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = InventoryEvent;
    type Error = ProductError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ProductCommand::AddProduct {
                product_id,
                sku,
                name,
                price,
                stock,
                category,
            } => {
                if self.product_id.is_some() {
                    return Err(ProductError::AlreadyExists);
                }
                if !(0..=MAX_AMOUNT).contains(&price) {
                    return Err(ProductError::InvalidPrice);
                }
                if !(0..=MAX_AMOUNT).contains(&stock) {
                    return Err(ProductError::InvalidStock);
                }
                let event = ProductAdded {
                    product_id,
                    sku,
                    name,
                    price,
                    stock,
                    category,
                };
                sink.write(InventoryEvent::ProductAdded(event), self).await;
            }
            ProductCommand::Restock { quantity } => {
                let product_id = self.product_id.ok_or(ProductError::NotFound)?;
                if !(1..=MAX_AMOUNT).contains(&quantity)
                    || self.available.saturating_add(quantity) > MAX_AMOUNT * 1000
                {
                    return Err(ProductError::InvalidQuantity);
                }
                sink.write(
                    InventoryEvent::ProductRestocked(ProductRestocked {
                        product_id,
                        quantity,
                    }),
                    self,
                )
                .await;
            }
            ProductCommand::ChangePrice { price } => {
                let product_id = self.product_id.ok_or(ProductError::NotFound)?;
                if !(0..=MAX_AMOUNT).contains(&price) {
                    return Err(ProductError::InvalidPrice);
                }
                if price != self.price {
                    sink.write(
                        InventoryEvent::ProductPriceChanged(ProductPriceChanged {
                            product_id,
                            price,
                        }),
                        self,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InventoryEvent::ProductAdded(e) => {
                self.product_id = Some(e.product_id);
                self.price = e.price;
                self.available = e.stock;
            }
            InventoryEvent::ProductRestocked(e) => self.available += e.quantity,
            InventoryEvent::ProductPriceChanged(e) => self.price = e.price,
            // Reservations are decided by the `Reservation` aggregate against `stock`.
            InventoryEvent::StockReserved(_)
            | InventoryEvent::StockReservationRejected(_)
            | InventoryEvent::StockCommitted(_)
            | InventoryEvent::StockReleased(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type ProductTest = TestFramework<Product>;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn added() -> InventoryEvent {
        InventoryEvent::ProductAdded(ProductAdded {
            product_id: id(),
            sku: "TEA-1".into(),
            name: "Green tea".into(),
            price: 1200,
            stock: 10,
            category: "uncategorised".into(),
        })
    }

    fn add_command(price: i64, stock: i64) -> ProductCommand {
        ProductCommand::AddProduct {
            product_id: id(),
            sku: "TEA-1".into(),
            name: "Green tea".into(),
            price,
            stock,
            category: "uncategorised".into(),
        }
    }

    #[test]
    fn adding_a_product_records_it() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(add_command(1200, 10))
            .then_expect_events(vec![added()]);
    }

    #[test]
    fn a_product_cannot_be_added_twice() {
        ProductTest::with(())
            .given(vec![added()])
            .when(add_command(1200, 10))
            .then_expect_error(ProductError::AlreadyExists);
    }

    #[test]
    fn negative_price_or_stock_is_refused() {
        ProductTest::with(())
            .given_no_previous_events()
            .when(add_command(-1, 10))
            .then_expect_error(ProductError::InvalidPrice);
        ProductTest::with(())
            .given_no_previous_events()
            .when(add_command(1, -10))
            .then_expect_error(ProductError::InvalidStock);
    }

    #[test]
    fn restock_adds_stock() {
        ProductTest::with(())
            .given(vec![added()])
            .when(ProductCommand::Restock { quantity: 5 })
            .then_expect_events(vec![InventoryEvent::ProductRestocked(ProductRestocked {
                product_id: id(),
                quantity: 5,
            })]);
    }

    #[test]
    fn restock_needs_a_positive_quantity_and_an_existing_product() {
        ProductTest::with(())
            .given(vec![added()])
            .when(ProductCommand::Restock { quantity: 0 })
            .then_expect_error(ProductError::InvalidQuantity);
        ProductTest::with(())
            .given_no_previous_events()
            .when(ProductCommand::Restock { quantity: 3 })
            .then_expect_error(ProductError::NotFound);
    }

    #[test]
    fn price_change_is_recorded_once() {
        ProductTest::with(())
            .given(vec![added()])
            .when(ProductCommand::ChangePrice { price: 900 })
            .then_expect_events(vec![InventoryEvent::ProductPriceChanged(
                ProductPriceChanged {
                    product_id: id(),
                    price: 900,
                },
            )]);
        // Setting the same price again changes nothing.
        ProductTest::with(())
            .given(vec![added()])
            .when(ProductCommand::ChangePrice { price: 1200 })
            .then_expect_events(vec![]);
    }

    #[test]
    fn apply_tracks_price_and_available() {
        let mut product = Product::default();
        product.apply(added());
        product.apply(InventoryEvent::ProductRestocked(ProductRestocked {
            product_id: id(),
            quantity: 5,
        }));
        assert_eq!(product.available, 15);
        assert_eq!(product.price, 1200);
    }
}
