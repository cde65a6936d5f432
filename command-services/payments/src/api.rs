//! REST routes of the payments service (SPEC §3.2).

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shop_eventing::command::CommandBus;
use shop_eventing::idempotency;
use shop_eventing::refusal::{Refusal, RefusalKind};
use shop_schemas::Service;
use shop_sql::{self as sql, Pool};
use shop_web::auth::{Authenticated, JwtKeys, Role};
use shop_web::consistency::{with_token, ConsistencyToken};
use shop_web::http::{Problem, Validation};
use shop_web::idempotency::KeyedJson;
use shop_web::telemetry::metadata_from_headers;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::wallet::{Wallet, WalletCommand, WalletError, MAX_DEPOSIT};

#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<CommandBus<Wallet>>,
    pub pool: Pool,
    pub jwt: JwtKeys,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The routes with their OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(deposit))
}

pub fn router(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// This service's part of the public OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

#[derive(Deserialize, ToSchema)]
#[schema(as = Deposit)]
pub struct DepositBody {
    /// In minor units.
    #[schema(
        required = true,
        nullable = false,
        minimum = 1,
        maximum = 1_000_000_000_000_i64
    )]
    amount: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DepositAccepted {
    customer_id: Uuid,
    amount: i64,
}

/// A customer deposits into its own wallet (its token proves the account exists);
/// an admin into any registered customer's wallet. Anything else is "not found".
#[utoipa::path(
    post,
    path = "/api/customers/{id}/wallet/deposits",
    tag = "customers",
    params(("id" = Uuid, Path, description = "The customer id")),
    request_body = DepositBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted.", body = DepositAccepted),
        (status = 404, description = "No such customer, or not yours."),
        (status = 409, description = "The wallet changed concurrently; retry."),
    )
)]
#[tracing::instrument(name = "deposit", skip_all, fields(customer_id = %id))]
async fn deposit(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    KeyedJson(body, key): KeyedJson<DepositBody>,
) -> Result<Response, Problem> {
    let not_found = || Problem::not_found("no such customer");
    let customer_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match claims.role {
        Role::Customer if claims.sub != customer_id.to_string() => return Err(not_found()),
        Role::Customer => {}
        Role::Admin => {
            let known: bool = sql::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM known_customers WHERE customer_id = $1)",
            )
            .bind(customer_id)
            .fetch_one(&state.pool)
            .await
            .map_err(|e| Problem::internal(&e))?;
            if !known {
                return Err(not_found());
            }
        }
    }
    let mut v = Validation::new();
    v.check(
        body.amount.is_some_and(|a| (1..=MAX_DEPOSIT).contains(&a)),
        "amount",
        "an integer amount in minor units from 1 to 10^12",
    );
    v.finish()?;
    let amount = body.amount.unwrap_or_default();
    let mut keyed = match idempotency::begin(key, &state.pool, &claims.sub).await {
        Ok(keyed) => keyed,
        Err(answer) => return Ok(answer),
    };
    let version = state
        .bus
        .execute_keyed(
            &mut keyed,
            &customer_id.to_string(),
            WalletCommand::Deposit {
                customer_id,
                amount,
            },
            &metadata_from_headers(&headers),
        )
        .await
        .map_err(Problem::from)?;
    let token = ConsistencyToken::new(Service::Payments, customer_id.to_string(), version);
    keyed
        .answer(with_token(
            (
                StatusCode::ACCEPTED,
                Json(DepositAccepted {
                    customer_id,
                    amount,
                }),
            )
                .into_response(),
            &token,
        ))
        .await
}

impl Refusal for WalletError {
    fn kind(&self) -> RefusalKind {
        match self {
            WalletError::InvalidAmount | WalletError::BalanceLimit => {
                RefusalKind::Invalid { field: "amount" }
            }
        }
    }

    fn changed_concurrently() -> &'static str {
        "the wallet was changed concurrently; retry"
    }
}
