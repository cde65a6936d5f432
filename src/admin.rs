//! Operator commands that act on a running system through its admin API (the gateway):
//! `shop replay` and `shop dlq`. They work the same on both backends, and leave the work
//! to the processes that own the data (the projector fills a rebuilt version; the read
//! API re-drives a dead letter).

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::args::AdminTarget;

/// A signed-in admin client of the gateway.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// Signs in.
    ///
    /// # Errors
    /// No password, the gateway is unreachable, or the password is refused.
    pub async fn connect(target: &AdminTarget) -> anyhow::Result<Self> {
        let password = match &target.admin_password {
            Some(p) => p.clone(),
            None => {
                let file = target.data_dir.join(crate::dev::ADMIN_PASSWORD_FILE);
                std::fs::read_to_string(&file)
                    .with_context(|| format!("no admin password: set SHOP_ADMIN_PASSWORD or --admin-password (or point --data-dir at a `shop dev` directory; {} is not readable)", file.display()))?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = target
            .url
            .as_deref()
            .context("where is Shop? Give --url (or SHOP_URL), e.g. http://127.0.0.1:8080: the admin signs in there")?
            .trim_end_matches('/')
            .to_string();
        let answer = http
            .post(format!("{base}/api/auth/token"))
            .json(&json!({"email": shop_web::auth::ADMIN_EMAIL, "password": password}))
            .send()
            .await
            .with_context(|| {
                format!("cannot reach Shop at {base} (is it running? --url / SHOP_URL)")
            })?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "sign-in refused ({status}): {}",
                body["detail"].as_str().unwrap_or("")
            );
        }
        let token = body["access_token"]
            .as_str()
            .context("no access_token in the answer")?
            .to_string();
        Ok(AdminClient { http, base, token })
    }

    /// `method path` with an optional JSON body; the JSON answer, or the problem as an error.
    ///
    /// # Errors
    /// Unreachable, or a non-success answer.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let answer = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                body["detail"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    }
}
