//! `Idempotency-Key` on the commands' routes (docs/src/idempotency.md; the conventions of
//! Stripe and of draft-ietf-httpapi-idempotency-key-header).
//!
//! A request with a key runs its command in a transaction that first claims the key
//! (`idempotency_keys`, primary key `(scope, idempotency_key)`), then appends the
//! command's events on the same connection ([`crate::command::CommandBus::execute_keyed`])
//! and writes the answer into the key's row before it commits: the key is stored exactly
//! when the effect is, on any instance, across crashes. A second request with the key
//! meets the row: the same request (method, path, body) gets the first answer again,
//! marked `Idempotent-Replayed: true`; another request gets 422. Two requests with one
//! key at the same time: the second's claim waits for the first's transaction (the row's
//! unique key; on SQLite the one writer) and then finds the row, or — when the first was
//! refused and rolled back — claims the key itself. A refused request (4xx) stores
//! nothing, its key included.

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::JwtKeys;
use crate::consistency::TOKEN_HEADER;
use crate::http::{FieldError, Problem};
use shop_sql::{self as sql, Conn, Pool};

/// The request header carrying the key (`Idempotency-Key`).
pub const HEADER: &str = "idempotency-key";
/// The header's name as documents and problems spell it.
pub const HEADER_NAME: &str = "Idempotency-Key";
/// The response header that marks an answer given again (`Idempotent-Replayed: true`).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key accepted (visible ASCII characters).
pub const MAX_KEY_LENGTH: usize = 255;
/// How long a key is kept at least.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// The scope of keys sent without a bearer token (registration).
pub const ANONYMOUS: &str = "anonymous";
/// The largest answer stored under a key (the commands' answers are a few hundred bytes).
const ANSWER_LIMIT: usize = 64 * 1024;
/// One keyed command in this many deletes the expired keys.
const EXPIRE_EVERY: u32 = 64;

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

    /// Claims the key for `scope` (the caller: a customer id, `admin`, or
    /// [`ANONYMOUS`]) in a new transaction, for the command to run in
    /// ([`KeyedCommand::transaction`]); without a key, nothing happens.
    ///
    /// # Errors
    /// The answer to give instead of running the command: the first answer again (the
    /// same request), 422 (another request under this key), or a database failure.
    pub async fn begin(self, pool: &Pool, scope: &str) -> Result<KeyedCommand, Response> {
        let Some(request) = self.0 else {
            return Ok(KeyedCommand { open: None });
        };
        let failed = |e: sqlx::Error| Problem::internal(&e).into_response();
        let now = Utc::now().trunc_subsecs(6);
        let mut tx = pool.begin().await.map_err(failed)?;
        // An expired row is taken over; a live one (committed, or committed while this
        // statement waited for its transaction) leaves the key to it.
        let claimed = sql::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, idempotency_key) DO UPDATE SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,
                 status = NULL, body = NULL, consistency_token = NULL, location = NULL
             WHERE idempotency_keys.created_at < $5
             RETURNING scope",
        )
        .bind(scope)
        .bind(request.key.as_str())
        .bind(request.fingerprint.as_str())
        .bind(now)
        .bind(now - RETENTION)
        .fetch_optional(&mut tx)
        .await
        .map_err(failed)?
        .is_some();
        if claimed {
            metrics::counter!("idempotency_keys_total", "outcome" => "claimed").increment(1);
            return Ok(KeyedCommand {
                open: Some(Open {
                    tx,
                    scope: scope.to_string(),
                    key: request.key,
                    pool: pool.clone(),
                }),
            });
        }
        tx.rollback().await.map_err(failed)?;
        let stored = sql::query_as::<(String, Option<i32>, Option<String>, Option<String>, Option<String>)>(
            "SELECT fingerprint, status, body, consistency_token, location FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(request.key.as_str())
        .fetch_optional(pool)
        .await
        .map_err(failed)?;
        let Some((fingerprint, Some(status), Some(body), token, location)) = stored else {
            // Expired and deleted between the two statements.
            return Err(Problem::conflict(format!(
                "the {HEADER_NAME} was just released; retry the request"
            ))
            .into_response());
        };
        if fingerprint != request.fingerprint {
            metrics::counter!("idempotency_keys_total", "outcome" => "reused").increment(1);
            let mut problem = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                format!("this {HEADER_NAME} was used for another request (method, path or body)"),
            );
            problem.errors = vec![FieldError {
                field: HEADER_NAME.into(),
                message: "a new key for a new request".into(),
            }];
            return Err(problem.into_response());
        }
        metrics::counter!("idempotency_keys_total", "outcome" => "replayed").increment(1);
        Err(replay(status, body, token, location))
    }
}

/// The stored answer, given again.
fn replay(status: i32, body: String, token: Option<String>, location: Option<String>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    for (name, value) in [(TOKEN_HEADER, token), (header::LOCATION.as_str(), location)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
    response
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

/// A command under a claimed key: its transaction, which the command's events join
/// ([`crate::command::CommandBus::execute_keyed`]) and [`KeyedCommand::answer`] commits.
/// Dropped without an answer (a refusal), it rolls back: the key is not stored.
pub struct KeyedCommand {
    open: Option<Open>,
}

struct Open {
    tx: Conn,
    scope: String,
    key: String,
    pool: Pool,
}

impl KeyedCommand {
    /// The key's transaction (`None` without a key).
    pub fn transaction(&mut self) -> Option<&mut Conn> {
        self.open.as_mut().map(|open| &mut open.tx)
    }

    /// Stores `response` as the key's answer and commits the transaction (the command's
    /// events with it); an answer that is not a success is not stored (rolled back).
    ///
    /// # Errors
    /// The database failed: nothing, or everything, was stored (a retry with the key
    /// tells which).
    pub async fn answer(self, response: Response) -> Result<Response, Problem> {
        let Some(mut open) = self.open else {
            return Ok(response);
        };
        if !response.status().is_success() {
            open.tx.rollback().await.ok();
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, ANSWER_LIMIT)
            .await
            .map_err(|e| Problem::internal(&e))?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        sql::query(
            "UPDATE idempotency_keys SET status = $3, body = $4, consistency_token = $5, location = $6
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(open.scope.as_str())
        .bind(open.key.as_str())
        .bind(i32::from(parts.status.as_u16()))
        .bind(String::from_utf8_lossy(&bytes).into_owned())
        .bind(header(TOKEN_HEADER))
        .bind(header(header::LOCATION.as_str()))
        .execute(&mut open.tx)
        .await
        .map_err(|e| Problem::internal(&e))?;
        crate::fault::point(crate::fault::IDEMPOTENCY_BEFORE_COMMIT);
        open.tx.commit().await.map_err(|e| Problem::internal(&e))?;
        if fastrand::u32(..EXPIRE_EVERY) == 0 {
            let pool = open.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = expire(&pool, Utc::now()).await {
                    tracing::debug!(error = %e, "expiring idempotency keys failed");
                }
            });
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }
}

/// Deletes the keys older than [`RETENTION`] at `now`; returns how many.
///
/// # Errors
/// The database fails.
pub async fn expire(pool: &Pool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(
        sql::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now.trunc_subsecs(6) - RETENTION)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn a_replay_is_the_stored_answer_marked_replayed() {
        let response = replay(
            201,
            r#"{"customer_id":"c"}"#.into(),
            Some("customers:c:1".into()),
            Some("/api/customers/c".into()),
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers().clone();
        assert_eq!(headers[REPLAYED_HEADER], "true");
        assert_eq!(headers[TOKEN_HEADER], "customers:c:1");
        assert_eq!(headers[header::LOCATION], "/api/customers/c");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], br#"{"customer_id":"c"}"#);
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
