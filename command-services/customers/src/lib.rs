//! The customers service: identity. For now it issues tokens to the admin account
//! (SPEC §3.1); customer registration and login arrive with the order saga.
//!
//! The admin password is hashed with Argon2id at start-up and the clear text is not kept.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use shop_eventing::auth::{self, JwtKeys, Role, ADMIN_EMAIL, ADMIN_SUBJECT};
use shop_eventing::http::{ops_router, with_edge_layers, ApiJson, Problem, ReadyCheck, Validation};

pub const COMPONENT: &str = "customers";

#[derive(Clone)]
struct AppState {
    jwt: JwtKeys,
    /// Argon2id PHC hash of the admin password.
    admin_hash: Arc<str>,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// Builds the service's router.
///
/// # Errors
/// Hashing the admin password failed.
pub fn router(
    jwt: JwtKeys,
    admin_password: &str,
    ready: ReadyCheck,
) -> Result<Router, argon2::password_hash::Error> {
    let state = AppState {
        jwt,
        admin_hash: auth::hash_password(admin_password)?.into(),
    };
    let api = Router::new()
        .route("/api/auth/token", post(issue_token))
        .with_state(state);
    Ok(with_edge_layers(api.merge(ops_router(ready)), COMPONENT))
}

#[derive(Deserialize)]
struct TokenRequest {
    email: Option<String>,
    password: Option<String>,
}

#[tracing::instrument(name = "issue_token", skip_all)]
async fn issue_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Json<serde_json::Value>, Problem> {
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
    let email = body.email.unwrap_or_default();
    let password = body.password.unwrap_or_default();
    // The hash is checked even for unknown emails, so timing does not tell which exist.
    let password_ok = auth::verify_password(&password, &state.admin_hash);
    if !(email.eq_ignore_ascii_case(ADMIN_EMAIL) && password_ok) {
        return Err(Problem::unauthorized("wrong email or password"));
    }
    let token = state
        .jwt
        .issue(ADMIN_SUBJECT, Role::Admin)
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.jwt.ttl_secs(),
    })))
}
