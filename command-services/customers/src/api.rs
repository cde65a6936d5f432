//! REST routes of the customers service: registration and tokens (SPEC §3.1).

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency::{self, ANONYMOUS};
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_schemas::customers::Address;
use shop_schemas::Service;
use shop_sql::{self as sql, Pool};
use shop_web::auth::{self, JwtKeys, Role, ADMIN_EMAIL, ADMIN_SUBJECT};
use shop_web::consistency::{with_token, ConsistencyToken};
use shop_web::http::{text_field, ApiJson, Problem, Validation};
use shop_web::idempotency::KeyedJson;
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::countries::is_country;
use crate::credentials::Credentials;
use crate::customer::{Customer, CustomerCommand, CustomerError};

/// Shortest accepted password (SPEC §3.1); the longest bounds hashing work.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus<Customer>>,
    pub credentials: Arc<Credentials>,
    pub pool: Pool,
    pub jwt: JwtKeys,
    /// Argon2id PHC hash of the admin password.
    pub admin_hash: Arc<str>,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The routes with their OpenAPI description: one list, so every served route is documented.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(issue_token))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

// Request fields are optional in Rust so that every missing or bad field is named in one
// 422; the schema states what a valid request is.
#[derive(Deserialize, ToSchema)]
#[schema(as = Address)]
pub struct AddressBody {
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    line1: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    city: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 20,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[schema(
        required = true,
        nullable = false,
        pattern = "^[A-Z]{2}$",
        example = "JP"
    )]
    country: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = RegisterCustomer)]
pub struct RegisterBody {
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    name: Option<String>,
    #[schema(required = true, nullable = false, format = Email, max_length = 254, example = "hanako@example.com")]
    email: Option<String>,
    /// Kept only as an Argon2id hash.
    #[schema(required = true, nullable = false, format = Password, min_length = 8, max_length = 1024)]
    password: Option<String>,
    #[schema(required = true, nullable = false)]
    address: Option<AddressBody>,
}

#[derive(Serialize, ToSchema)]
pub struct Registered {
    customer_id: Uuid,
}

/// A pragmatic syntax check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && (1..=64).contains(&local.len())
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn text(value: &Option<String>, max: usize) -> Option<String> {
    text_field(value.as_deref(), max)
}

/// Registers a customer (public).
#[utoipa::path(
    post,
    path = "/api/customers",
    tag = "identity",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered.", body = Registered,
            headers(("location" = String, description = "The customer's resource"))),
        (status = 409, description = "The email is already registered."),
    )
)]
#[tracing::instrument(name = "register_customer", skip_all)]
async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<RegisterBody>,
) -> Result<Response, Problem> {
    let name = text(&body.name, 200);
    let email = body
        .email
        .as_deref()
        .map(|e| e.trim().to_lowercase())
        .filter(|e| valid_email(e));
    let password = body
        .password
        .filter(|p| (MIN_PASSWORD..=MAX_PASSWORD).contains(&p.chars().count()));
    let address = body.address.as_ref();
    let line1 = address.and_then(|a| text(&a.line1, 200));
    let city = address.and_then(|a| text(&a.city, 100));
    let postal_code = address.and_then(|a| text(&a.postal_code, 20));
    let country = address
        .and_then(|a| text(&a.country, 2))
        .filter(|c| is_country(c));
    let mut v = Validation::new();
    v.check(
        name.is_some(),
        "name",
        "1 to 200 characters, no control characters",
    )
    .check(
        email.is_some(),
        "email",
        "an email address such as name@example.com",
    )
    .check(password.is_some(), "password", "at least 8 characters")
    .check(
        line1.is_some(),
        "address.line1",
        "1 to 200 characters, no control characters",
    )
    .check(
        city.is_some(),
        "address.city",
        "1 to 100 characters, no control characters",
    )
    .check(
        postal_code.is_some(),
        "address.postal_code",
        "1 to 20 characters, no control characters",
    )
    .check(
        country.is_some(),
        "address.country",
        "an ISO 3166-1 alpha-2 code such as JP",
    );
    v.finish()?;
    let (
        Some(name),
        Some(email),
        Some(password),
        Some(line1),
        Some(city),
        Some(postal_code),
        Some(country),
    ) = (name, email, password, line1, city, postal_code, country)
    else {
        return Err(Problem::bad_request("invalid registration"));
    };
    // The admin's address is the admin's: no customer account may take it.
    if email == ADMIN_EMAIL {
        return Err(Problem::conflict("the email is already registered"));
    }
    // Argon2id takes tens of milliseconds of CPU: off the async workers.
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(|e| Problem::internal(&e))?;
    let customer_id = Uuid::now_v7();
    let command = CustomerCommand::Register {
        customer_id,
        name,
        email,
        address: Address {
            line1,
            city,
            postal_code,
            country,
        },
    };
    let mut keyed = match idempotency::begin(key, &state.pool, ANONYMOUS).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    state.credentials.stage(customer_id, hash);
    let result = state
        .bus
        .execute_new_keyed(
            &mut keyed,
            &customer_id.to_string(),
            command,
            &metadata_from_headers(&headers),
        )
        .await;
    state.credentials.discard(customer_id);
    let version = result.map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Customers, customer_id.to_string(), version);
    keyed
        .answer(with_token(
            (
                StatusCode::CREATED,
                [(header::LOCATION, format!("/api/customers/{customer_id}"))],
                Json(Registered { customer_id }),
            )
                .into_response(),
            &token,
        ))
        .await
}

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    #[schema(required = true, nullable = false, min_length = 1)]
    email: Option<String>,
    #[schema(required = true, nullable = false, format = Password, min_length = 1)]
    password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

/// A valid Argon2id hash of a random password: unknown emails are checked against it so
/// that timing does not tell which emails exist.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| auth::hash_password(&Uuid::new_v4().to_string()).unwrap_or_default())
}

/// 429 for a throttled account, with the seconds to wait.
fn throttled(wait: std::time::Duration) -> Problem {
    let seconds = wait.as_secs().max(1);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-attempts",
        format!("too many wrong passwords for this account; try again in {seconds} s"),
    )
    .retry_after(seconds)
}

/// Exchanges an email and password for a bearer token (public). The admin signs in as
/// `admin@shop.local`. After 5 wrong passwords for one account within a minute, every
/// attempt for it is refused (429 with `Retry-After`) until the minute has passed.
#[utoipa::path(
    post,
    path = "/api/auth/token",
    tag = "identity",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A bearer token.", body = TokenResponse),
        (status = 401, description = "Wrong email or password."),
        (status = 429, description = "Too many wrong passwords for this account; wait `Retry-After` seconds."),
    )
)]
#[tracing::instrument(name = "issue_token", skip_all)]
async fn issue_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let mut v = Validation::new();
    v.check(
        body.email.as_deref().is_some_and(|e| !e.is_empty()),
        "email",
        "required",
    )
    .check(
        body.password.as_deref().is_some_and(|p| !p.is_empty()),
        "password",
        "required",
    );
    v.finish()?;
    let email = body.email.unwrap_or_default().trim().to_lowercase();
    let password = body.password.unwrap_or_default();
    // No registered email has control characters (and PostgreSQL text cannot hold NUL).
    if email.chars().any(char::is_control) {
        return Err(Problem::unauthorized("wrong email or password"));
    }
    // Password guessing: an account with too many recent failures waits.
    let throttle = crate::throttle::LoginThrottle::global();
    if let Some(wait) = throttle.check(&email) {
        return Err(throttled(wait));
    }
    let (subject, role, hash) = if email == ADMIN_EMAIL {
        (
            ADMIN_SUBJECT.to_string(),
            Role::Admin,
            state.admin_hash.to_string(),
        )
    } else {
        let row: Option<(Uuid, String)> = sql::query_as(
            "SELECT customer_id, password_hash FROM customer_credentials WHERE email = $1",
        )
        .bind(&email)
        .fetch_optional(&state.pool)
        .await
        .map_err(|e| Problem::internal(&e))?;
        match row {
            Some((id, hash)) => (id.to_string(), Role::Customer, hash),
            None => (String::new(), Role::Customer, decoy_hash().to_string()),
        }
    };
    let matches = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(|e| Problem::internal(&e))?;
    if !matches || subject.is_empty() {
        throttle.failed(&email);
        return Err(Problem::unauthorized("wrong email or password"));
    }
    throttle.succeeded(&email);
    let token = state
        .jwt
        .issue(&subject, role)
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: state.jwt.ttl_secs(),
    }))
}

impl Refusal for CustomerError {
    fn kind(&self) -> RefusalKind {
        match self {
            CustomerError::AlreadyRegistered => RefusalKind::Conflict,
        }
    }

    /// Two registrations raced for the same fresh id: the loser is told what the winner
    /// did.
    fn changed_concurrently() -> &'static str {
        "the customer is already registered"
    }

    /// The only unique key the customers service keeps is the email.
    fn taken(_what: &str) -> String {
        "the email is already registered".into()
    }
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn email_syntax() {
        for ok in ["a@b.co", "hanako.yamada+shop@example.co.jp"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@b..co", "a@.co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
