//! Credentials beside the events: the append hooks that write `customer_credentials` in
//! the same transaction as `CustomerRegistered` (the password's Argon2id hash never is
//! part of an event).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use shop_eventing::store::{AppendHook, HookError, StoredEvent};
use shop_sql::{self as sql, Conn};
use uuid::Uuid;

/// Writes `customer_credentials` inside the append transaction of `CustomerRegistered`.
///
/// The Argon2id hash is staged here by the request that registers the customer (keyed
/// by the fresh customer id) just before the command runs, so it is stored atomically
/// with the event without ever being part of it.
#[derive(Default)]
pub struct Credentials {
    staged: Mutex<HashMap<Uuid, String>>,
}

impl Credentials {
    pub fn stage(&self, customer_id: Uuid, password_hash: String) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(customer_id, password_hash);
    }

    pub fn discard(&self, customer_id: Uuid) {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&customer_id);
    }

    fn staged(&self, customer_id: Uuid) -> Option<String> {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&customer_id)
            .cloned()
    }
}

impl AppendHook for Credentials {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for event in events
                .iter()
                .filter(|e| e.event_type == "CustomerRegistered")
            {
                let customer_id = registered_customer(event)?;
                let hash = self.staged(customer_id).ok_or_else(|| {
                    HookError::Refused(format!("no staged credentials for {customer_id}"))
                })?;
                if !record_credentials(tx, event, customer_id, &hash).await? {
                    return Err(HookError::Taken {
                        what: "the email".into(),
                    });
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn touches(&self, event_type: &str) -> bool {
        event_type == "CustomerRegistered"
    }
}

fn registered_customer(event: &StoredEvent) -> Result<Uuid, HookError> {
    event.data["customer_id"]
        .as_str()
        .and_then(|s| s.parse::<Uuid>().ok())
        .ok_or_else(|| HookError::Refused("CustomerRegistered without customer_id".into()))
}

/// Keeps a registered customer's credentials beside its event; false when the email is
/// already taken.
async fn record_credentials(
    tx: &mut Conn,
    event: &StoredEvent,
    customer_id: Uuid,
    hash: &str,
) -> Result<bool, HookError> {
    let inserted = sql::query(
        "INSERT INTO customer_credentials (email, customer_id, password_hash) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING",
    )
    .bind(event.data["email"].as_str().unwrap_or_default())
    .bind(customer_id)
    .bind(hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Credentials of customers imported from another instance (`shop import`): passwords do
/// not travel with events, so imported customers get the Argon2id hash of a random secret
/// nobody keeps — no password signs them in until it is reset.
pub(crate) struct ImportedCredentials {
    pub(crate) hash: String,
}

impl AppendHook for ImportedCredentials {
    fn on_append<'a>(
        &'a self,
        tx: &'a mut Conn,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), HookError>> {
        async move {
            for event in events
                .iter()
                .filter(|e| e.event_type == "CustomerRegistered")
            {
                record_credentials(tx, event, registered_customer(event)?, &self.hash).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn touches(&self, event_type: &str) -> bool {
        event_type == "CustomerRegistered"
    }
}
