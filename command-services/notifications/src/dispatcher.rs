//! Sends the deliveries the [`crate::reactions`] recorded: the due ones are read from
//! the database, leased, and attempted on bounded tasks (at most `concurrency` at once;
//! the queue is the deliveries table, not memory). Each outcome is recorded through the
//! `WebhookDelivery` aggregate, and a delivery that fails for good disables its endpoint
//! in the same transaction.
//!
//! At least once: a process killed during an attempt leaves its lease, which runs out
//! (the request timeout plus [`LEASE_MARGIN`]); then any instance attempts the delivery
//! again with the same `webhook-id`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use shop_eventing::command::CommandBus;
use shop_eventing::CancellationToken;
use shop_schemas::EventMetadata;
use shop_sql::{self as sql, Pool};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::address::{AllowList, Target};
use crate::delivery::{Attempt, DeliveryCommand, WebhookDelivery};
use crate::endpoint::{EndpointCommand, WebhookEndpoint};
use crate::signing::Secret;

/// How much longer than the request timeout a lease lasts.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How deliveries go out.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Derives each endpoint's secret ([`Secret::derive`]).
    pub key: String,
    pub allow: AllowList,
    /// One attempt's limit, connection included.
    pub timeout: Duration,
    /// Attempts in flight at once, in this process.
    pub concurrency: usize,
    /// How often the due deliveries are looked for.
    pub poll: Duration,
    /// Attempts in flight at once to one endpoint, in this process.
    pub per_endpoint: usize,
    /// Certificate authorities trusted beyond the system's, for https receivers.
    pub roots: Vec<reqwest::Certificate>,
}

/// One attempt's place: a slot of the process's concurrency and of its endpoint's,
/// given back when dropped (also when the attempt is aborted).
struct Slot {
    dispatcher: Arc<Dispatcher>,
    endpoint_id: Uuid,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn take(dispatcher: Arc<Dispatcher>, endpoint_id: Uuid, permit: OwnedSemaphorePermit) -> Slot {
        *dispatcher
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(endpoint_id)
            .or_default() += 1;
        Slot {
            dispatcher,
            endpoint_id,
            _permit: permit,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_flight = self
            .dispatcher
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.endpoint_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&self.endpoint_id);
            }
        }
    }
}

/// One due delivery, as leased.
#[derive(Debug, Clone)]
struct Due {
    delivery_id: Uuid,
    endpoint_id: Uuid,
    webhook_id: String,
    payload: String,
    url: String,
    secret_nonce: String,
    /// The previous secret's nonce while it still signs (after a rotation).
    previous_nonce: Option<String>,
}

impl Due {
    /// The delivered event's correlation id and trace context: the attempt's span and
    /// the events recording it continue the trace of the event (and so of its order).
    fn trace(&self) -> (String, String) {
        let payload: serde_json::Value = serde_json::from_str(&self.payload).unwrap_or_default();
        let text = |key: &str| payload[key].as_str().unwrap_or_default().to_string();
        (text("correlationid"), text("traceparent"))
    }
}

pub struct Dispatcher {
    pub pool: Pool,
    pub deliveries: Arc<CommandBus<WebhookDelivery>>,
    pub endpoints: Arc<CommandBus<WebhookEndpoint>>,
    /// Attempts in flight in this process, per endpoint.
    pub in_flight: Mutex<HashMap<Uuid, usize>>,
    /// Wakes the loop before its next poll: a delivery was scheduled or redelivered in
    /// this process, or an attempt finished (a slot is free).
    pub wake: Arc<Notify>,
    pub settings: DeliverySettings,
}

impl Dispatcher {
    /// Dispatches until `shutdown`; then waits for the attempts in flight (up to the
    /// request timeout) so that their outcomes are recorded.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        info!(
            concurrency = self.settings.concurrency,
            timeout_ms = self.settings.timeout.as_millis() as u64,
            "webhook dispatcher started"
        );
        loop {
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.dispatch_due(&permits, &mut tasks).await {
                warn!(error = %e, "webhook dispatcher: cannot read due deliveries");
            }
            metrics::gauge!("webhook_attempts_in_flight").set(tasks.len() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = self.wake.notified() => {}
            }
        }
        let finish = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.settings.timeout, finish)
            .await
            .is_err()
        {
            // Their leases run out; another attempt follows (same webhook-id).
            tasks.abort_all();
        }
    }

    /// Leases and starts as many due deliveries as there are free slots.
    async fn dispatch_due(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), sqlx::Error> {
        let free = permits.available_permits();
        if free == 0 {
            return Ok(());
        }
        let now = Utc::now();
        // At most `per_endpoint` of each endpoint's due deliveries, oldest first, so that
        // one slow endpoint's backlog cannot take every slot from the others.
        type Row = (Uuid, Uuid, String, String, String, String, Option<String>);
        let due: Vec<Row> = sql::query_as(
            "SELECT delivery_id, endpoint_id, webhook_id, payload, url, secret_nonce, previous_nonce FROM (
                 SELECT d.delivery_id, d.endpoint_id, d.webhook_id, d.payload, e.url, e.secret_nonce,
                        CASE WHEN e.previous_until > $1 THEN e.previous_nonce END AS previous_nonce,
                        d.next_attempt_at,
                        ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at) AS n
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id
                 WHERE d.status = 'pending' AND e.status = 'active' AND d.next_attempt_at <= $1
                   AND (d.leased_until IS NULL OR d.leased_until <= $1)
             ) due WHERE n <= $3
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(free as i64)
        .bind(self.settings.per_endpoint.max(1) as i64)
        .fetch_all(&self.pool)
        .await?;
        let lease = TimeDelta::from_std(self.settings.timeout + LEASE_MARGIN)
            .unwrap_or(TimeDelta::minutes(5));
        for (delivery_id, endpoint_id, webhook_id, payload, url, secret_nonce, previous_nonce) in
            due
        {
            let busy = self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&endpoint_id)
                .copied()
                .unwrap_or(0);
            if busy >= self.settings.per_endpoint.max(1) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            // Another instance may have taken it since: the lease goes to one.
            let claimed = sql::query(
                "UPDATE webhook_deliveries SET leased_until = $2
                 WHERE delivery_id = $1 AND status = 'pending' AND (leased_until IS NULL OR leased_until <= $3)",
            )
            .bind(delivery_id)
            .bind(now + lease)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                continue;
            }
            let slot = Slot::take(self.clone(), endpoint_id, permit);
            let due = Due {
                delivery_id,
                endpoint_id,
                webhook_id,
                payload,
                url,
                secret_nonce,
                previous_nonce,
            };
            let span = tracing::info_span!("webhook_attempt", webhook_id = %due.webhook_id, endpoint_id = %endpoint_id);
            shop_web::telemetry::set_parent(&span, &due.trace().1);
            tasks.spawn(self.clone().attempt(due, slot).instrument(span));
        }
        Ok(())
    }

    /// One attempt, and its outcome recorded.
    async fn attempt(self: Arc<Self>, due: Due, slot: Slot) {
        let at = Utc::now();
        let started = Instant::now();
        let result = send(&self.settings, &due).await;
        let elapsed = started.elapsed();
        metrics::histogram!("webhook_attempt_duration_seconds").record(elapsed.as_secs_f64());
        let attempt = match result {
            Ok(code) => Attempt {
                status_code: Some(code),
                error: (!(200..300).contains(&code)).then(|| format!("HTTP {code}")),
                latency_ms: elapsed.as_millis() as u64,
                at,
            },
            Err(error) => Attempt {
                status_code: None,
                error: Some(error),
                latency_ms: elapsed.as_millis() as u64,
                at,
            },
        };
        let outcome = if attempt.succeeded() {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("webhook_attempts_total", "outcome" => outcome).increment(1);
        debug!(outcome, status = ?attempt.status_code, error = ?attempt.error, "webhook attempt");
        if let Err(e) = self.record(&due, attempt).await {
            // The lease runs out and the delivery is attempted again.
            warn!(error = %e, "cannot record a webhook attempt");
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// Records the outcome; a delivery that failed for good disables its endpoint.
    async fn record(&self, due: &Due, attempt: Attempt) -> Result<(), String> {
        let error = |e: &dyn std::fmt::Display| e.to_string();
        let (correlation_id, traceparent) = due.trace();
        let metadata = EventMetadata {
            correlation_id: if correlation_id.is_empty() {
                due.webhook_id.clone()
            } else {
                correlation_id
            },
            causation_id: due.webhook_id.clone(),
            traceparent: shop_web::telemetry::child_traceparent(&traceparent),
        };
        let mut tx = self.pool.begin().await.map_err(|e| error(&e))?;
        let command = DeliveryCommand::Record {
            delivery_id: due.delivery_id,
            attempt,
            jitter_permille: fastrand::u32(800..=1200),
        };
        self.deliveries
            .execute_in(&mut tx, &due.delivery_id.to_string(), command, &metadata)
            .await
            .map_err(|e| error(&e))?;
        let gave_up: Option<(String, i64, Option<String>)> = sql::query_as(
            "SELECT status, attempts, last_error FROM webhook_deliveries WHERE delivery_id = $1",
        )
        .bind(due.delivery_id)
        .fetch_optional(&mut tx)
        .await
        .map_err(|e| error(&e))?;
        if let Some((status, attempts, last_error)) = gave_up.filter(|(s, _, _)| s == "failed") {
            debug_assert_eq!(status, "failed");
            let reason = format!(
                "delivery {} failed after {attempts} attempts: {}",
                due.webhook_id,
                last_error.unwrap_or_default()
            );
            warn!(endpoint_id = %due.endpoint_id, %reason, "disabling a webhook endpoint");
            let disable = EndpointCommand::Disable {
                endpoint_id: due.endpoint_id,
                reason,
            };
            self.endpoints
                .execute_in(&mut tx, &due.endpoint_id.to_string(), disable, &metadata)
                .await
                .map_err(|e| error(&e))?;
        }
        tx.commit().await.map_err(|e| error(&e))
    }
}

/// The signed request; the receiver's status, or why there was none.
async fn send(settings: &DeliverySettings, due: &Due) -> Result<u16, String> {
    let target = Target::parse(&due.url).map_err(|e| e.to_string())?;
    // Checked now, on what the host resolves to now, and called at that address.
    let addrs = target
        .resolve(&settings.allow)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout);
    if IpAddr::from_str(&target.host).is_err() {
        client = client.resolve_to_addrs(&target.host, &addrs);
    }
    if !settings.roots.is_empty() {
        client = client.tls_certs_merge(settings.roots.iter().cloned());
    }
    let client = client.build().map_err(|e| describe(e.without_url()))?;
    let timestamp = Utc::now().timestamp();
    // Every secret that signs now: the current one, and the previous one for a while
    // after a rotation (Standard Webhooks: space-separated signatures).
    let signature = std::iter::once(&due.secret_nonce)
        .chain(&due.previous_nonce)
        .map(|nonce| {
            Secret::derive(&settings.key, due.endpoint_id, nonce).sign(
                &due.webhook_id,
                timestamp,
                &due.payload,
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let response = client
        .post(target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "Shop-Webhooks/1")
        .header("webhook-id", &due.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(due.payload.clone())
        .send()
        .await
        .map_err(|e| describe(e.without_url()))?;
    Ok(response.status().as_u16())
}

/// An HTTP failure in words, without the URL (it may carry the receiver's token).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn settings(allow: &str) -> DeliverySettings {
        DeliverySettings {
            key: "test-key".into(),
            allow: AllowList::parse(allow).unwrap(),
            timeout: Duration::from_secs(2),
            concurrency: 1,
            poll: Duration::from_millis(100),
            per_endpoint: 1,
            roots: Vec::new(),
        }
    }

    fn due(url: String) -> Due {
        let delivery_id = Uuid::from_u128(3);
        Due {
            delivery_id,
            endpoint_id: Uuid::from_u128(4),
            webhook_id: crate::signing::webhook_id(delivery_id),
            payload: r#"{"specversion":"1.0","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#.into(),
            url,
            secret_nonce: "00".into(),
            previous_nonce: Some("01".into()),
        }
    }

    /// Answers one request with `status`; the request's head as received.
    async fn answer_once(listener: tokio::net::TcpListener, status: &'static str) -> String {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
            let n = socket.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..n]);
        }
        let response =
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nlocation: /elsewhere\r\n\r\n");
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&request).to_lowercase()
    }

    #[tokio::test]
    async fn a_private_address_is_refused_at_delivery_before_any_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let error = send(&settings(""), &due(url)).await.unwrap_err();
        assert!(error.contains("not a public address"), "{error}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }

    #[tokio::test]
    async fn an_allowed_receiver_gets_a_signed_request_and_redirects_are_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = tokio::spawn(answer_once(listener, "307 Temporary Redirect"));
        let due = due(url);
        // A redirect is the receiver's answer (a failed attempt), not followed.
        assert_eq!(send(&settings("127.0.0.1/32"), &due).await, Ok(307));
        let head = receiver.await.unwrap();
        assert!(head.starts_with("post /hook "), "{head}");
        assert!(
            head.contains(&format!("webhook-id: {}", due.webhook_id)),
            "{head}"
        );
        assert!(head.contains("webhook-timestamp: "), "{head}");
        // The current secret's signature and, after a rotation, the previous one's.
        let signatures = head
            .lines()
            .find_map(|l| l.strip_prefix("webhook-signature: "))
            .unwrap();
        assert_eq!(signatures.split(' ').count(), 2, "{head}");
        assert!(
            signatures.split(' ').all(|s| s.starts_with("v1,")),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
    }

    #[test]
    fn an_attempt_continues_the_events_trace() {
        let (correlation, traceparent) = due(String::new()).trace();
        assert_eq!(correlation, "");
        assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    }
}
