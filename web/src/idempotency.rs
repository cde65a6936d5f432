//! `Idempotency-Key` on the commands' routes, the request's side (docs/src/idempotency.md;
//! the conventions of Stripe and of draft-ietf-httpapi-idempotency-key-header): the
//! header's rules, the request's fingerprint (method, path and canonical body) and the
//! extractors that read them. Claiming the key, storing the answer and giving it again
//! belong to the event store's side (`shop_eventing::idempotency`).

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, Uri};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::JwtKeys;
use crate::http::{FieldError, Problem};

/// The request header carrying the key (`Idempotency-Key`).
pub const HEADER: &str = "idempotency-key";
/// The header's name as documents and problems spell it.
pub const HEADER_NAME: &str = "Idempotency-Key";
/// The response header that marks an answer given again (`Idempotent-Replayed: true`).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key accepted (visible ASCII characters).
pub const MAX_KEY_LENGTH: usize = 255;

/// Whether a header value is a valid key: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY_LENGTH).contains(&key.len()) && key.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A request's body as compared under a key: JSON with every object's keys sorted, so
/// the order a client serialises them in does not matter.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// What identifies a request under its key: SHA-256 (hex) of method, path and body,
/// keyed with a secret (`key`, from the deployment's JWT secret) so that a stored
/// fingerprint tells nothing about a body (a registration's password) to a reader of the
/// database.
pub fn fingerprint(key: &[u8], method: &Method, path: &str, body: Option<&Value>) -> String {
    let mut hash = Sha256::new();
    hash.update(key);
    hash.update(method.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    if let Some(body) = body {
        hash.update(canonical_json(body).as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A request's `Idempotency-Key`, if it sent one, with the request's fingerprint.
/// Extracting it refuses an invalid key (400 naming the header).
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(Option<KeyedRequest>);

#[derive(Debug, Clone)]
struct KeyedRequest {
    key: String,
    fingerprint: String,
}

impl IdempotencyKey {
    /// The key of a request with these headers (`None` without one), fingerprinted
    /// with its method, path and body.
    ///
    /// # Errors
    /// The key is not 1 to 255 visible ASCII characters (400).
    pub fn read(
        secret: &JwtKeys,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Option<&Value>,
    ) -> Result<Self, Problem> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(IdempotencyKey(None));
        };
        if values.next().is_some() || !valid_key(value.as_bytes()) {
            let mut problem = Problem::bad_request(format!(
                "{HEADER_NAME} must be one value of 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            ));
            problem.errors = vec![FieldError {
                field: HEADER_NAME.into(),
                message: format!("1 to {MAX_KEY_LENGTH} visible ASCII characters, given once"),
            }];
            return Err(problem);
        }
        let key = String::from_utf8_lossy(value.as_bytes()).into_owned();
        Ok(IdempotencyKey(Some(KeyedRequest {
            key,
            fingerprint: fingerprint(secret.fingerprint_key(), method, uri.path(), body),
        })))
    }

    /// Whether the request carries a key.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The key and the request's fingerprint (`None` without a key), for the store that
    /// claims the key.
    pub fn into_parts(self) -> Option<(String, String)> {
        self.0.map(|request| (request.key, request.fingerprint))
    }
}

impl<S> FromRequestParts<S> for IdempotencyKey
where
    JwtKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    /// The key of a request without a body.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let secret = JwtKeys::from_ref(state);
        IdempotencyKey::read(&secret, &parts.method, &parts.uri, &parts.headers, None)
    }
}

/// A JSON body as [`crate::http::ApiJson`] reads it (the same refusals), with the
/// request's [`IdempotencyKey`] fingerprinted with that body.
pub struct KeyedJson<T>(pub T, pub IdempotencyKey);

impl<T, S> FromRequest<S> for KeyedJson<T>
where
    T: DeserializeOwned,
    JwtKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let secret = JwtKeys::from_ref(state);
        // The key is checked first (a bad key is refused whatever the body).
        IdempotencyKey::read(&secret, req.method(), req.uri(), req.headers(), None)?;
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        // Read as `Json` reads it (the same limit, the same refusal).
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            crate::http::body_rejection(rejection.status(), rejection.body_text())
        })?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        let key = IdempotencyKey::read(&secret, &method, &uri, &headers, value.as_ref())?;
        crate::http::json_body(&headers, &bytes).map(|body| KeyedJson(body, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, HeaderValue};
    use serde_json::json;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert!(valid_key(b"a"));
        assert!(valid_key(b"0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(valid_key("!~".repeat(127).as_bytes()));
        assert!(valid_key("k".repeat(255).as_bytes()));
        assert!(!valid_key(b""));
        assert!(!valid_key("k".repeat(256).as_bytes()));
        assert!(!valid_key(b"a b"));
        assert!(!valid_key(b"tab\there"));
        assert!(!valid_key("ключ".as_bytes()));
        assert!(!valid_key(b"del\x7f"));
    }

    #[test]
    fn bodies_compare_whatever_the_order_of_their_keys() {
        let a = json!({"b": 1, "a": {"y": [1, {"q": 2, "p": 1}], "x": "s"}});
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#
        );
        let post = Method::POST;
        assert_eq!(
            fingerprint(b"k", &post, "/api/orders", Some(&a)),
            fingerprint(b"k", &post, "/api/orders", Some(&b))
        );
    }

    #[test]
    fn another_body_path_or_method_is_another_request() {
        let body = json!({"amount": 100});
        let post = Method::POST;
        let first = fingerprint(b"k", &post, "/api/customers/x/wallet/deposits", Some(&body));
        assert_ne!(
            first,
            fingerprint(
                b"k",
                &post,
                "/api/customers/x/wallet/deposits",
                Some(&json!({"amount": 101}))
            )
        );
        assert_ne!(
            first,
            fingerprint(b"k", &post, "/api/customers/y/wallet/deposits", Some(&body))
        );
        assert_ne!(
            first,
            fingerprint(
                b"k",
                &Method::PUT,
                "/api/customers/x/wallet/deposits",
                Some(&body)
            )
        );
        // Another deployment's secret: another fingerprint.
        assert_ne!(
            first,
            fingerprint(b"j", &post, "/api/customers/x/wallet/deposits", Some(&body))
        );
        assert_eq!(first.len(), 64);
    }

    fn request(key: Option<&str>, body: &str) -> Request {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/api/orders")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        builder.body(Body::from(body.to_string())).unwrap()
    }

    #[derive(serde::Deserialize)]
    struct Order {
        #[allow(dead_code)]
        lines: Vec<Value>,
    }

    #[tokio::test]
    async fn a_keyed_body_is_fingerprinted_as_json_and_refused_as_api_json_refuses() {
        let read = |key, body| async move {
            KeyedJson::<Order>::from_request(request(key, body), &JwtKeys::new("secret", 60)).await
        };
        let KeyedJson(_, key) = read(Some("k"), r#"{"lines": [{"a": 1, "b": 2}]}"#)
            .await
            .unwrap();
        let KeyedJson(_, same) = read(Some("k"), r#"{"lines":[{"b":2,"a":1}]}"#)
            .await
            .unwrap();
        let KeyedJson(_, other) = read(Some("k"), r#"{"lines":[{"b":3,"a":1}]}"#)
            .await
            .unwrap();
        let fingerprint = |k: &IdempotencyKey| k.0.as_ref().unwrap().fingerprint.clone();
        assert_eq!(fingerprint(&key), fingerprint(&same));
        assert_ne!(fingerprint(&key), fingerprint(&other));
        let KeyedJson(_, none) = read(None, r#"{"lines": []}"#).await.unwrap();
        assert!(!none.is_some());
        // A bad key first, whatever the body; then the body's own refusals.
        let bad = read(Some(" "), "not json").await.err().unwrap();
        assert_eq!(
            (bad.status, bad.errors[0].field.as_str()),
            (400, HEADER_NAME)
        );
        assert_eq!(read(Some("k"), "not json").await.err().unwrap().status, 400);
        assert_eq!(
            read(Some("k"), r#"{"lines": 1}"#)
                .await
                .err()
                .unwrap()
                .status,
            422
        );
        let plain = Request::builder()
            .method(Method::POST)
            .uri("/api/orders")
            .header("Idempotency-Key", "k")
            .body(Body::from(r#"{"lines": []}"#))
            .unwrap();
        let refused = KeyedJson::<Order>::from_request(plain, &JwtKeys::new("secret", 60))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, 415);
    }

    #[test]
    fn a_bad_key_is_refused_naming_the_header() {
        let uri: Uri = "/api/orders".parse().unwrap();
        let secret = JwtKeys::new("secret", 60);
        let mut headers = HeaderMap::new();
        assert!(
            !IdempotencyKey::read(&secret, &Method::POST, &uri, &headers, None)
                .unwrap()
                .is_some()
        );
        headers.insert(HEADER, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        let problem =
            IdempotencyKey::read(&secret, &Method::POST, &uri, &headers, None).unwrap_err();
        assert_eq!(problem.status, 400);
        assert_eq!(problem.errors[0].field, HEADER_NAME);
        headers.insert(HEADER, HeaderValue::from_static("k-1"));
        assert!(
            IdempotencyKey::read(&secret, &Method::POST, &uri, &headers, None)
                .unwrap()
                .is_some()
        );
        headers.append(HEADER, HeaderValue::from_static("k-2"));
        assert!(IdempotencyKey::read(&secret, &Method::POST, &uri, &headers, None).is_err());
    }
}
