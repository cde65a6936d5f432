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
//!
//! The request's side (the header, the fingerprint, the extractors) is
//! `shop_web::idempotency`; this is the store's side.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use shop_sql::{self as sql, Conn, Pool};
use shop_web::consistency::TOKEN_HEADER;
use shop_web::http::{FieldError, Problem};
use shop_web::idempotency::{IdempotencyKey, HEADER_NAME, REPLAYED_HEADER};

/// How long a key is kept at least.
pub const RETENTION: TimeDelta = TimeDelta::hours(24);
/// The scope of keys sent without a bearer token (registration).
pub const ANONYMOUS: &str = "anonymous";
/// The largest answer stored under a key (the commands' answers are a few hundred bytes).
const ANSWER_LIMIT: usize = 64 * 1024;
/// One keyed command in this many deletes the expired keys.
const EXPIRE_EVERY: u32 = 64;

/// Claims the request's key for `scope` (the caller: a customer id, `admin`, or
/// [`ANONYMOUS`]) in a new transaction, for the command to run in
/// ([`KeyedCommand::transaction`]); without a key, nothing happens.
///
/// # Errors
/// The answer to give instead of running the command: the first answer again (the
/// same request), 422 (another request under this key), or a database failure.
pub async fn begin(
    key: IdempotencyKey,
    pool: &Pool,
    scope: &str,
) -> Result<KeyedCommand, Response> {
    let Some((key, fingerprint)) = key.into_parts() else {
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
    .bind(key.as_str())
    .bind(fingerprint.as_str())
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
                key,
                pool: pool.clone(),
            }),
        });
    }
    tx.rollback().await.map_err(failed)?;
    let stored = sql::query_as::<(String, Option<i32>, Option<String>, Option<String>, Option<String>)>(
        "SELECT fingerprint, status, body, consistency_token, location FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
    )
    .bind(scope)
    .bind(key.as_str())
    .fetch_optional(pool)
    .await
    .map_err(failed)?;
    let Some((stored_fingerprint, Some(status), Some(body), token, location)) = stored else {
        // Expired and deleted between the two statements.
        return Err(Problem::conflict(format!(
            "the {HEADER_NAME} was just released; retry the request"
        ))
        .into_response());
    };
    if stored_fingerprint != fingerprint {
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
}
