//! `GET /schemas/events/...`: the JSON Schema of every event version, public and
//! read-only, from the files compiled into `shop-schemas` — what the events' absolute
//! `dataschema` URIs (`<SHOP_SCHEMA_BASE_URL>/schemas/events/<service>/<Event>.vN.json`)
//! point at when the base is the gateway's public address.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/schemas/events/{*path}", get(schema))
}

async fn schema(Path(path): Path<String>) -> Response {
    match shop_schemas::files::schema_file(&format!("schemas/events/{path}")) {
        Some(content) => (
            [
                (header::CONTENT_TYPE, "application/schema+json"),
                // A published version never changes.
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            content,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::json!({
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": format!("no event schema schemas/events/{path}"),
            })
            .to_string(),
        )
            .into_response(),
    }
}
