//! The `Customer` aggregate: one account.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use shop_schemas::customers::{Address, CustomerEvent, CustomerRegistered};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    /// Validated fields; the email is lower-cased. The password hash travels beside the
    /// command (see `api`), never in it.
    Register {
        customer_id: Uuid,
        name: String,
        email: String,
        address: Address,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("the customer is already registered")]
    AlreadyRegistered,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub customer_id: Option<Uuid>,
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CustomerCommand::Register {
                customer_id,
                name,
                email,
                address,
            } => {
                if self.customer_id.is_some() {
                    return Err(CustomerError::AlreadyRegistered);
                }
                let event = CustomerRegistered {
                    customer_id,
                    name,
                    email,
                    address,
                };
                sink.write(CustomerEvent::CustomerRegistered(event), self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CustomerEvent::CustomerRegistered(e) => self.customer_id = Some(e.customer_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn register() -> CustomerCommand {
        CustomerCommand::Register {
            customer_id: Uuid::from_u128(1),
            name: "Hanako".into(),
            email: "hanako@example.com".into(),
            address: Address {
                line1: "1-2-3".into(),
                city: "Tokyo".into(),
                postal_code: "150".into(),
                country: "JP".into(),
            },
        }
    }

    fn registered() -> CustomerEvent {
        let CustomerCommand::Register {
            customer_id,
            name,
            email,
            address,
        } = register();
        CustomerEvent::CustomerRegistered(CustomerRegistered {
            customer_id,
            name,
            email,
            address,
        })
    }

    #[test]
    fn registration_records_the_customer() {
        TestFramework::<Customer>::with(())
            .given_no_previous_events()
            .when(register())
            .then_expect_events(vec![registered()]);
    }

    #[test]
    fn a_customer_registers_once() {
        TestFramework::<Customer>::with(())
            .given(vec![registered()])
            .when(register())
            .then_expect_error(CustomerError::AlreadyRegistered);
    }
}
