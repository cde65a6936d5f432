//! Standard Webhooks signing: endpoint secrets, stable message ids and signatures.
//!
//! - An endpoint's secret is never stored nor put in an event: it is derived from the
//!   service's key (`SHOP_WEBHOOKS_KEY`), the endpoint id and the random `secret_nonce`
//!   its registration recorded, so a replay or an import with the same key recovers it.
//! - `webhook-id` is derived from the event id and the endpoint id: every attempt and
//!   every redelivery of one event to one endpoint carries the same id.
//! - `webhook-signature` is `v1,` + base64(HMAC-SHA256(secret, `id.timestamp.body`)).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a secret's text form (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing secret (32 bytes). Its `Debug` says nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Derives the secret of `endpoint_id` registered with `nonce` under the service's key.
    pub fn derive(key: &str, endpoint_id: Uuid, nonce: &str) -> Secret {
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(format!("shop-webhook-secret:v1:{endpoint_id}:{nonce}").as_bytes());
        Secret(mac.finalize().into_bytes().into())
    }

    /// From the text form `whsec_<base64>` (receivers' side; tests).
    pub fn parse(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text.strip_prefix(SECRET_PREFIX)?).ok()
    }

    /// The text form shown once to the admin: `whsec_` + base64.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0))
    }

    /// The `webhook-signature` header of a message.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &str) -> String {
        signature(&self.0, webhook_id, timestamp, body)
    }
}

/// `v1,` + base64(HMAC-SHA256(key, `id.timestamp.body`)).
pub fn signature(key: &[u8], webhook_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A fresh random nonce for a registration (128 bits, hex).
pub fn new_nonce() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The delivery of event `event_id` to `endpoint_id`: a name-based UUID (version 8, from
/// SHA-256), the same whoever computes it, whenever.
pub fn delivery_id(event_id: Uuid, endpoint_id: Uuid) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"shop-webhook-delivery:v1:")
        .chain_update(event_id.as_bytes())
        .chain_update(endpoint_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The `webhook-id` of a delivery: `msg_` + its id.
pub fn webhook_id(delivery_id: Uuid) -> String {
    format!("msg_{}", delivery_id.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_the_standard_webhooks_reference() {
        let key = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_derived_per_endpoint_and_nonce_and_never_printed() {
        let endpoint = Uuid::from_u128(1);
        let a = Secret::derive("key", endpoint, "n1");
        assert_eq!(a, Secret::derive("key", endpoint, "n1"));
        assert_ne!(a, Secret::derive("key", endpoint, "n2"));
        assert_ne!(a, Secret::derive("key", Uuid::from_u128(2), "n1"));
        assert_ne!(a, Secret::derive("other", endpoint, "n1"));
        let text = a.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), a.0.to_vec());
        assert_eq!(format!("{a:?}"), "Secret(..)");
        // What the receiver computes with the text form is what the sender signs.
        assert_eq!(
            a.sign("msg_x", 5, "{}"),
            signature(&Secret::parse(&text).unwrap(), "msg_x", 5, "{}")
        );
        assert_eq!(new_nonce().len(), 32);
    }

    #[test]
    fn a_delivery_id_is_stable_per_event_and_endpoint() {
        let (event, endpoint) = (Uuid::now_v7(), Uuid::now_v7());
        let id = delivery_id(event, endpoint);
        assert_eq!(id, delivery_id(event, endpoint));
        assert_ne!(id, delivery_id(endpoint, event));
        assert_eq!(id.get_version_num(), 8);
        assert!(webhook_id(id).starts_with("msg_"));
        assert_eq!(webhook_id(id).len(), 36);
    }
}
