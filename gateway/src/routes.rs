//! The routing table: which upstream serves a method and path, and whether the route is
//! public.

use axum::http::Method;
use shop_web::http::Problem;

/// Which upstream serves a request, and whether it needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Customers,
    Inventory,
    Orders,
    Payments,
    Shipping,
    Notifications,
    ReadApi,
}

impl Upstream {
    /// Every upstream, in the order the gateway lists them.
    pub const ALL: [Upstream; 7] = [
        Upstream::Customers,
        Upstream::Inventory,
        Upstream::Orders,
        Upstream::Payments,
        Upstream::Shipping,
        Upstream::Notifications,
        Upstream::ReadApi,
    ];

    /// The upstream's name in URLs, flags and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Customers => "customers",
            Upstream::Inventory => "inventory",
            Upstream::Orders => "orders",
            Upstream::Payments => "payments",
            Upstream::Shipping => "shipping",
            Upstream::Notifications => "notifications",
            Upstream::ReadApi => "read-api",
        }
    }

    /// Whether the gateway is ready only when this upstream answers. The notifications
    /// service is an add-on that only listens to the others: the shop's API does not
    /// wait for it (while it is down, `/api/webhooks` answers 503).
    pub fn needed_to_be_ready(self) -> bool {
        self != Upstream::Notifications
    }

    /// The upstream of that name.
    pub fn named(name: &str) -> Option<Upstream> {
        Upstream::ALL.into_iter().find(|u| u.name() == name)
    }

    /// Every name, comma-separated (for messages).
    pub fn names() -> String {
        Upstream::ALL.map(Upstream::name).join(", ")
    }
}

/// Routes a request: `None` for routes the gateway does not know; the flag says whether
/// the route is public (SPEC §3.1).
pub fn route(method: &Method, path: &str) -> Option<(Upstream, bool)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let is_get = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["api", "auth", "token"] => Some((Upstream::Customers, true)),
        ["api", "customers"] if method == Method::POST => Some((Upstream::Customers, true)),
        ["api", "customers", _] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "customers", _, "wallet", "deposits"] if method == Method::POST => {
            Some((Upstream::Payments, false))
        }
        ["api", "customers", _, "orders"] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "orders"] if method == Method::POST => Some((Upstream::Orders, false)),
        ["api", "orders"] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "orders", _] if is_get => Some((Upstream::ReadApi, false)),
        ["api", "orders", _, "cancel"] if method == Method::POST => Some((Upstream::Orders, false)),
        ["api", "shipments", _, "dispatch" | "deliver"] if method == Method::POST => {
            Some((Upstream::Shipping, false))
        }
        // Webhook endpoints and their delivery log (admin).
        ["api", "webhooks", ..] => Some((Upstream::Notifications, false)),
        ["api", "products"] | ["api", "products", _] if is_get => Some((Upstream::ReadApi, true)),
        ["api", "products", ..] => Some((Upstream::Inventory, false)),
        ["api", "projections", ..] | ["api", "dlq", ..] => Some((Upstream::ReadApi, false)),
        // The operator console is static; its data comes from the admin API.
        ["console", ..] if is_get => Some((Upstream::ReadApi, true)),
        _ => None,
    }
}

/// `/api/events` goes to the service its `context` names (each serves its own events).
pub(crate) fn events_context(path: &str, query: Option<&str>) -> Option<Result<Upstream, Problem>> {
    if path.trim_end_matches('/') != "/api/events" {
        return None;
    }
    let context = query.unwrap_or("").split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "context").then_some(value)
    });
    Some(match context {
        Some("customers") => Ok(Upstream::Customers),
        Some("inventory") => Ok(Upstream::Inventory),
        Some("orders") => Ok(Upstream::Orders),
        Some("payments") => Ok(Upstream::Payments),
        Some("shipping") => Ok(Upstream::Shipping),
        Some("notifications") => Ok(Upstream::Notifications),
        _ => Err(Problem::bad_request(
            "context must be one of customers, inventory, orders, payments, shipping, notifications",
        )),
    })
}
