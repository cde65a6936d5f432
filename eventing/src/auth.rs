//! Identity at the HTTP edge: JWTs (HS256) carrying a subject and a role, the extractors
//! that require them, and Argon2id password hashing.
//!
//! Every component verifies the token itself (the gateway does too), so no route relies
//! on being reached only through the gateway.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::http::Problem;

/// The admin account's email (SPEC §3.1).
pub const ADMIN_EMAIL: &str = "admin@shop.local";
/// The subject of admin tokens.
pub const ADMIN_SUBJECT: &str = "admin";
const ISSUER: &str = "shop";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The customer id, or `admin`.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
}

/// Signing and verification keys (a shared secret).
#[derive(Clone)]
pub struct JwtKeys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtKeys {
    pub fn new(secret: &str, ttl_secs: u64) -> Self {
        JwtKeys {
            inner: Arc::new(KeysInner {
                encoding: EncodingKey::from_secret(secret.as_bytes()),
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                ttl_secs,
            }),
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.inner.ttl_secs
    }

    /// Issues a token for a subject.
    ///
    /// # Errors
    /// Signing fails (it does not with HS256 and a valid key).
    pub fn issue(&self, sub: &str, role: Role) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now_secs();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            iss: ISSUER.to_string(),
            iat,
            exp: iat + self.inner.ttl_secs,
        };
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )
    }

    /// Verifies signature, issuer and expiry.
    ///
    /// # Errors
    /// The token is malformed, forged or expired.
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        decode::<Claims>(token, &self.inner.decoding, &validation).map(|data| data.claims)
    }

    /// Verifies the `Authorization: Bearer` header of a request.
    ///
    /// # Errors
    /// A 401 problem when it is missing or invalid.
    pub fn verify_header(
        &self,
        value: Option<&axum::http::HeaderValue>,
    ) -> Result<Claims, Problem> {
        let value =
            value.ok_or_else(|| Problem::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| Problem::unauthorized("expected Authorization: Bearer <token>"))?;
        self.verify(token.trim())
            .map_err(|e| Problem::unauthorized(format!("invalid token: {e}")))
    }
}

/// Any authenticated caller.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    JwtKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = JwtKeys::from_ref(state);
        keys.verify_header(parts.headers.get(header::AUTHORIZATION))
            .map(Authenticated)
    }
}

/// An authenticated admin; customers get 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl<S> FromRequestParts<S> for Admin
where
    JwtKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.role == Role::Admin {
            Ok(Admin(claims))
        } else {
            Err(Problem::forbidden("this route is for admins"))
        }
    }
}

/// Hashes a password with Argon2id and a random salt (PHC string).
///
/// # Errors
/// Hashing fails (it does not with the default parameters).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a PHC hash, in constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_forgeries() {
        let keys = JwtKeys::new("secret-1", 60);
        let token = keys.issue("admin", Role::Admin).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.sub, "admin");
        assert!(JwtKeys::new("secret-2", 60).verify(&token).is_err());
        assert!(keys.verify("not.a.token").is_err());
    }

    #[test]
    fn argon2id_hashes_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
    }
}
