//! `shop openapi`: the public API's OpenAPI 3.1 document, the same one the gateway serves
//! at `/api/openapi.json`, assembled from every component's routes.

/// The whole document.
pub fn document() -> serde_json::Value {
    shop_web::openapi::document(
        [
            shop_customers::api::openapi(),
            shop_payments::api::openapi(),
            shop_inventory::api::openapi(),
            shop_orders::api::openapi(),
            shop_shipping::api::openapi(),
            shop_notifications::api::openapi(),
            shop_read_api::openapi(),
            shop_eventing::events_api::openapi(),
            shop_gateway::openapi(),
        ],
        env!("CARGO_PKG_VERSION"),
    )
}

/// Prints the document (pretty JSON) to stdout.
pub fn run() -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(&document())?);
    Ok(())
}
