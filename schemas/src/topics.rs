//! Services and their topics. One topic per service (`<prefix><service>.events`), keyed
//! by aggregate id so that each aggregate's events keep their order.

use std::fmt;
use std::str::FromStr;

/// A command service: the source of one topic of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Customers,
    Inventory,
    Orders,
    Payments,
    Shipping,
    Notifications,
}

impl Service {
    pub const ALL: [Service; 6] = [
        Service::Customers,
        Service::Inventory,
        Service::Orders,
        Service::Payments,
        Service::Shipping,
        Service::Notifications,
    ];

    /// The service's name as used in topics, CloudEvents sources and types.
    pub fn name(self) -> &'static str {
        match self {
            Service::Customers => "customers",
            Service::Inventory => "inventory",
            Service::Orders => "orders",
            Service::Payments => "payments",
            Service::Shipping => "shipping",
            Service::Notifications => "notifications",
        }
    }

    /// The service's topic, with the deployment's prefix (may be empty).
    pub fn topic(self, prefix: &str) -> String {
        format!("{prefix}{}.events", self.name())
    }

    /// The CloudEvents `source` attribute, e.g. `/shop/inventory`.
    pub fn source(self) -> String {
        format!("/shop/{}", self.name())
    }

    /// The service whose topic this is, given the deployment's prefix.
    pub fn from_topic(prefix: &str, topic: &str) -> Option<Service> {
        let name = topic.strip_prefix(prefix)?.strip_suffix(".events")?;
        name.parse().ok()
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == s)
            .ok_or_else(|| UnknownService(s.to_string()))
    }
}

/// A name that is not one of the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService(pub String);

impl fmt::Display for UnknownService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown service {:?} (expected one of customers, inventory, orders, payments, shipping, notifications)",
            self.0
        )
    }
}

impl std::error::Error for UnknownService {}

/// The dead-letter topic: records a consumer gave up on, with the error in headers.
pub fn dead_letter_topic(prefix: &str) -> String {
    format!("{prefix}dead-letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip_with_and_without_prefix() {
        for service in Service::ALL {
            for prefix in ["", "t42."] {
                let topic = service.topic(prefix);
                assert_eq!(Service::from_topic(prefix, &topic), Some(service));
            }
        }
        assert_eq!(Service::Orders.topic(""), "orders.events");
        assert_eq!(Service::from_topic("", "dead-letters"), None);
    }
}
