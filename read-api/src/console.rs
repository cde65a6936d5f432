//! The operator console (`/console`): a static page over the admin API — search by id,
//! orders (live, paged) with their saga timeline across services, an event browser over
//! every service's store, projections with throughput and lag charts, dead letters with
//! their payload, webhook endpoints with their delivery log. Everything it loads is embedded in the binary; nothing comes from a CDN,
//! and its policy (CSP) lets it load nothing from elsewhere nor be framed.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
/// The webhooks view (endpoints and their delivery log), over console.js's helpers.
const WEBHOOKS: &str = include_str!("../console/webhooks.js");
const STYLE: &str = include_str!("../console/console.css");

/// The console's policy: everything from this origin only (no inline script or style, no
/// other host), never framed (clickjacking), forms post only here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The app is small and changes with the binary: never served from a cache.
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes (public: the page holds no data; the API checks the token).
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/webhooks.js",
            get(|| async { asset("text/javascript; charset=utf-8", WEBHOOKS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_loads_nothing_from_elsewhere() {
        for text in [INDEX, SCRIPT, WEBHOOKS, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("url("));
        }
        for id in [
            "id=\"projections\"",
            "id=\"dlq\"",
            "id=\"orders\"",
            "id=\"webhooks\"",
            "src=\"/console/webhooks.js\"",
        ] {
            assert!(INDEX.contains(id), "{id}");
        }
        assert!(SCRIPT.contains("id: \"timeline\""));
    }

    #[test]
    fn the_console_is_never_framed_sniffed_or_cached() {
        let response = asset("text/html; charset=utf-8", INDEX);
        let h = response.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"));
    }
}
