//! Identity at the HTTP edge: JWTs (HS256) carrying a subject and a role, the extractors
//! that require them, and Argon2id password hashing.
//!
//! Every component verifies the token itself (the gateway does too), so no route relies
//! on being reached only through the gateway.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
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
    /// A key derived from the secret for the fingerprints of idempotent requests
    /// ([`crate::idempotency`]): without it, a stored fingerprint of a registration could
    /// be matched against guessed passwords at SHA-256 speed.
    fingerprint_key: [u8; 32],
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
                fingerprint_key: {
                    use sha2::Digest;
                    let mut key = sha2::Sha256::new();
                    key.update(b"shop idempotency fingerprint\0");
                    key.update(secret.as_bytes());
                    key.finalize().into()
                },
            }),
        }
    }

    pub fn ttl_secs(&self) -> u64 {
        self.inner.ttl_secs
    }

    /// The key of request fingerprints ([`crate::idempotency::fingerprint`]).
    pub(crate) fn fingerprint_key(&self) -> &[u8; 32] {
        &self.inner.fingerprint_key
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

/// Argon2id's working memory, reused. Each hash needs `m_cost` KiB (19 MiB by default).
/// Allocated per hash, that memory stays in the allocator's per-thread arenas once freed
/// (glibc raises its mmap threshold after the first free), so every blocking thread that
/// ever hashed kept ~19 MiB: `shop serve all` grew by hundreds of MiB under sign-ups and
/// logins. Here there is one workspace per core, each hash borrows one (waiting when all
/// are busy: hashing is CPU-bound, so more at once would not be faster), and the memory
/// stays bounded at cores × 19 MiB.
struct Workspaces {
    free: std::sync::Mutex<Vec<Vec<argon2::Block>>>,
    returned: std::sync::Condvar,
}

static WORKSPACES: std::sync::LazyLock<Workspaces> = std::sync::LazyLock::new(|| {
    let slots = std::thread::available_parallelism().map_or(2, usize::from);
    Workspaces {
        // Allocated on first use.
        free: std::sync::Mutex::new((0..slots).map(|_| Vec::new()).collect()),
        returned: std::sync::Condvar::new(),
    }
});

/// Hashes into a borrowed workspace (or, for parameters larger than the default, memory of
/// its own): the same output as `PasswordHasher::hash_password_customized`.
fn argon2_output(
    argon2: &Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: argon2::password_hash::Salt<'_>,
) -> Result<argon2::password_hash::Output, argon2::password_hash::Error> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let blocks = params.block_count();
    let output_len = params
        .output_len()
        .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
    argon2::password_hash::Output::init_with(output_len, |out| {
        if blocks > argon2::Params::DEFAULT_M_COST as usize {
            return Ok(argon2.hash_password_into(password, salt, out)?);
        }
        let mut workspace = {
            let mut free = WORKSPACES.free.lock().expect("workspaces");
            loop {
                if let Some(workspace) = free.pop() {
                    break workspace;
                }
                free = WORKSPACES.returned.wait(free).expect("workspaces");
            }
        };
        if workspace.len() < blocks {
            workspace.resize(
                argon2::Params::DEFAULT_M_COST as usize,
                argon2::Block::default(),
            );
        }
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut workspace);
        WORKSPACES.free.lock().expect("workspaces").push(workspace);
        WORKSPACES.returned.notify_one();
        Ok(result?)
    })
}

/// Hashes a password with Argon2id (default parameters) and a random salt (PHC string).
///
/// # Errors
/// Hashing fails (it does not with the default parameters).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let params = argon2::Params::default();
    let argon2 = Argon2::default();
    let output = argon2_output(&argon2, &params, password.as_bytes(), salt.as_salt())?;
    Ok(PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(argon2::Version::default().into()),
        params: argon2::password_hash::ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string())
}

/// Checks a password against a PHC hash (its algorithm, version and parameters), in
/// constant time.
pub fn verify_password(password: &str, hash: &str) -> bool {
    let check = || -> Result<bool, argon2::password_hash::Error> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let params = argon2::Params::try_from(&parsed)?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(argon2::Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let argon2 = Argon2::new(algorithm, version, params.clone());
        // `Output`'s equality is constant-time.
        Ok(argon2_output(&argon2, &params, password.as_bytes(), salt)? == expected)
    };
    check().unwrap_or(false)
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

    /// Hashes through the reused workspaces are the library's own: stored hashes made by
    /// `PasswordHasher` (any parameters) verify, and ours verify with `PasswordVerifier`.
    #[test]
    fn workspace_hashes_match_the_library() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("correct horse").unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &PasswordHash::new(&ours).unwrap())
            .is_ok());
        for (m_cost, t_cost) in [(19_456, 2), (8_192, 3), (32_768, 1)] {
            let params = argon2::Params::new(m_cost, t_cost, 1, None).unwrap();
            let theirs = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"battery staple", &SaltString::generate(&mut OsRng))
                .unwrap()
                .to_string();
            assert!(
                verify_password("battery staple", &theirs),
                "m={m_cost} t={t_cost}"
            );
            assert!(
                !verify_password("battery stapler", &theirs),
                "m={m_cost} t={t_cost}"
            );
        }
        assert!(!verify_password("x", "not a hash"));
    }

    /// More hashes at once than workspaces: each waits for one and all verify.
    #[test]
    fn concurrent_hashes_share_the_workspaces() {
        let threads: Vec<_> = (0..6)
            .map(|i| {
                std::thread::spawn(move || {
                    let password = format!("password {i}");
                    verify_password(&password, &hash_password(&password).unwrap())
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().unwrap());
        }
    }
}
