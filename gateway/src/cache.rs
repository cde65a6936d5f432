//! The short-lived cache of public product reads.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

use crate::Upstream;

/// A cached answer: status, headers and body.
#[derive(Clone)]
pub(crate) struct Cached {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: axum::body::Bytes,
}

impl Cached {
    pub(crate) fn response(&self, cache: &'static str) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(cache));
        response
    }
}

/// `hit` or `miss` on cacheable reads.
pub const CACHE_HEADER: &str = "x-cache";

/// Whether a request may be answered from (and stored in) the product cache: a public
/// product read that does not ask to see its own writes.
pub(crate) fn cacheable(
    parts: &axum::http::request::Parts,
    upstream: Upstream,
    public: bool,
) -> bool {
    parts.method == Method::GET
        && public
        && upstream == Upstream::ReadApi
        && parts.uri.path().starts_with("/api/products")
        && !parts
            .headers
            .contains_key(shop_web::consistency::TOKEN_HEADER)
        && !parts
            .uri
            .query()
            .is_some_and(|q| q.contains("consistency="))
}
