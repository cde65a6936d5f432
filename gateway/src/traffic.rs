//! Traffic control at run time: the weights of an upstream's two versions (`stable` and
//! `canary`, which may be labelled e.g. `blue`/`green`), promotion in steps, rollback at
//! once, automatic rollback of a canary whose 5xx-or-timeout rate over a sliding window
//! passes a threshold, sticky assignment per client, and strangler-fig routes to a legacy
//! upstream outside Shop.
//!
//! Every change is audited: one structured log line (target `audit`) and the metric
//! `gateway_traffic_changes_total{upstream,action}`; the weights are the gauge
//! `gateway_upstream_weight{upstream,version}`, automatic rollbacks the counter
//! `gateway_canary_rollbacks_total{upstream}`.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use shop_web::http::Problem;

use crate::balancer::Balancer;
#[cfg(test)]
use crate::balancer::Resilience;
use crate::Upstream;

/// The promotion steps of a canary's weight, in percent.
pub const STEPS: [u8; 5] = [10, 25, 50, 75, 100];

/// When a canary is rolled back by itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackPolicy {
    /// Share of the canary's requests in the window that failed (5xx or timeout), 0 < t ≤ 1.
    pub threshold: f64,
    /// Requests the window must hold before the rate counts (1 to 100 000).
    pub min_requests: u32,
    /// The sliding window, in seconds (1 to 3600).
    pub window_secs: u64,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        RollbackPolicy {
            threshold: 0.1,
            min_requests: 20,
            window_secs: 60,
        }
    }
}

impl RollbackPolicy {
    pub(crate) fn validate(&self) -> Result<(), Problem> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(invalid("rollback.threshold must be above 0 and at most 1"));
        }
        if !(1..=100_000).contains(&self.min_requests) {
            return Err(invalid("rollback.minRequests must be 1 to 100000"));
        }
        if !(1..=3600).contains(&self.window_secs) {
            return Err(invalid("rollback.windowSecs must be 1 to 3600"));
        }
        Ok(())
    }
}

/// Why and when a canary was last rolled back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// `automatic` or `manual`.
    pub kind: &'static str,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The canary's weight before.
    pub from_weight: u8,
}

/// One upstream's split between its versions.
pub(crate) struct Split {
    pub stable: Arc<Balancer>,
    pub canary: Option<Arc<Balancer>>,
    /// The canary's share of requests, in percent.
    pub weight: u8,
    pub stable_label: String,
    pub canary_label: String,
    pub sticky: bool,
    pub policy: RollbackPolicy,
    /// The canary's recent outcomes: when, and whether it failed.
    window: VecDeque<(Instant, bool)>,
    pub last_rollback: Option<Rollback>,
}

impl Split {
    pub fn new(stable: Arc<Balancer>, canary: Option<(Arc<Balancer>, u8)>) -> Self {
        let (canary, weight) = match canary {
            Some((b, w)) => (Some(b), w),
            None => (None, 0),
        };
        Split {
            stable,
            canary,
            weight,
            stable_label: "stable".into(),
            canary_label: "canary".into(),
            sticky: true,
            policy: RollbackPolicy::default(),
            window: VecDeque::new(),
            last_rollback: None,
        }
    }

    /// Which version serves a client: sticky by the client's key, or at random.
    pub fn pick(&self, upstream: Upstream, client: &str) -> Option<Arc<Balancer>> {
        let canary = self.canary.as_ref().filter(|_| self.weight > 0)?;
        let bucket = if self.sticky {
            bucket(upstream, client)
        } else {
            fastrand::u8(0..100)
        };
        (bucket < self.weight).then(|| canary.clone())
    }

    fn prune(&mut self, now: Instant) {
        let window = Duration::from_secs(self.policy.window_secs);
        while self
            .window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            self.window.pop_front();
        }
    }

    pub fn reset_window(&mut self) {
        self.window.clear();
    }

    /// (requests, failures) in the window now.
    pub fn window_counts(&mut self) -> (usize, usize) {
        self.prune(Instant::now());
        let failures = self.window.iter().filter(|(_, failed)| *failed).count();
        (self.window.len(), failures)
    }
}

/// The client's bucket (0–99) for an upstream: the same client always lands in the same
/// bucket, so raising a canary's weight only moves clients towards it.
pub fn bucket(upstream: Upstream, client: &str) -> u8 {
    let mut hasher = std::hash::DefaultHasher::new();
    format!("{upstream:?}").hash(&mut hasher);
    client.hash(&mut hasher);
    (hasher.finish() % 100) as u8
}

/// A strangler-fig route: requests under `prefix` (or `percent` of them) go to a legacy
/// upstream outside Shop, with headers added on the way there and back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyRoute {
    /// A path prefix starting with `/`, matched on whole segments (`/api/wishlists`
    /// matches `/api/wishlists` and `/api/wishlists/7`, not `/api/wishlistsx`).
    pub prefix: String,
    /// The legacy system's base URL, `http://` or `https://`.
    pub upstream: String,
    /// Share of the prefix's requests that go to the legacy upstream (0 to 100); the rest
    /// stay with Shop. Sticky per client.
    #[serde(default = "hundred")]
    pub percent: u8,
    /// Headers set on the request to the legacy upstream.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// Headers set on the legacy upstream's answer.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
}

fn hundred() -> u8 {
    100
}

impl LegacyRoute {
    pub fn validate(&self) -> Result<(), Problem> {
        if !self.prefix.starts_with('/')
            || self.prefix.len() > 200
            || self.prefix.contains(['?', '#', ' '])
        {
            return Err(invalid(
                "prefix must be a path starting with / (at most 200 characters)",
            ));
        }
        valid_base_url(&self.upstream, "upstream")?;
        if self.percent > 100 {
            return Err(invalid("percent must be 0 to 100"));
        }
        for (name, value) in self.request_headers.iter().chain(&self.response_headers) {
            if HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                return Err(invalid(format!(
                    "header {name:?}: not a valid header name and value"
                )));
            }
        }
        Ok(())
    }

    /// Whether `path` is under the prefix.
    pub fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.trim_end_matches('/');
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn valid_base_url(url: &str, field: &str) -> Result<(), Problem> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid(format!("{field} must be an http:// or https:// URL")))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || url.len() > 500
        || url.parse::<axum::http::Uri>().is_err()
        || rest.contains(['?', '#', ' ', '@'])
    {
        return Err(invalid(format!(
            "{field} must be a base URL such as http://legacy:8080"
        )));
    }
    Ok(())
}

pub(crate) fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
}

/// The run-time traffic table: every upstream's split and the legacy routes.
pub(crate) struct Traffic {
    pub splits: Vec<(Upstream, Mutex<Split>)>,
    pub legacy: Mutex<BTreeMap<String, LegacyRoute>>,
    /// Changes so far; with `boot`, the `ETag` a change must name in `If-Match`.
    revision: AtomicU64,
    boot: u64,
}

impl Traffic {
    pub fn new(splits: Vec<(Upstream, Split)>) -> Self {
        let traffic = Traffic {
            splits: splits
                .into_iter()
                .map(|(u, s)| (u, Mutex::new(s)))
                .collect(),
            legacy: Mutex::new(BTreeMap::new()),
            revision: AtomicU64::new(1),
            boot: fastrand::u64(..),
        };
        for (upstream, split) in &traffic.splits {
            let split = split.lock().unwrap_or_else(|e| e.into_inner());
            weight_gauges(*upstream, split.weight);
        }
        traffic
    }

    pub fn split(&self, upstream: Upstream) -> Option<&Mutex<Split>> {
        self.splits
            .iter()
            .find(|(u, _)| *u == upstream)
            .map(|(_, s)| s)
    }

    /// The current `ETag`.
    pub fn etag(&self) -> String {
        format!(
            "\"{:016x}-{}\"",
            self.boot,
            self.revision.load(Ordering::SeqCst)
        )
    }

    /// `Ok` when `if_match` names the current revision: a change needs it, so two
    /// operators do not overwrite each other's change unseen.
    pub fn check_revision(&self, if_match: Option<&str>) -> Result<(), Problem> {
        match if_match {
            None => Err(Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "send If-Match with the ETag of the last read",
            )),
            Some(tag) if tag.trim() == self.etag() => Ok(()),
            Some(_) => Err(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "the traffic table changed since that read; read it again",
            )),
        }
    }

    pub fn bump(&self) {
        self.revision.fetch_add(1, Ordering::SeqCst);
    }

    /// Records a canary's outcome; rolls it back when its failure rate passes the
    /// threshold. Outcomes of a canary that is no longer the split's are ignored.
    pub fn record(&self, upstream: Upstream, canary: &Arc<Balancer>, failed: bool) {
        let Some(split) = self.split(upstream) else {
            return;
        };
        let mut split = split.lock().unwrap_or_else(|e| e.into_inner());
        if split.weight == 0
            || !split
                .canary
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, canary))
        {
            return;
        }
        let now = Instant::now();
        split.window.push_back((now, failed));
        if split.window.len() > 100_000 {
            split.window.pop_front();
        }
        split.prune(now);
        let requests = split.window.len();
        if requests < split.policy.min_requests as usize {
            return;
        }
        let failures = split.window.iter().filter(|(_, f)| *f).count();
        let rate = failures as f64 / requests as f64;
        if rate <= split.policy.threshold {
            return;
        }
        let from = split.weight;
        let reason = format!(
            "{failures} of {requests} canary requests in the last {} s failed (5xx or timeout): {:.1} % > threshold {:.1} %",
            split.policy.window_secs,
            rate * 100.0,
            split.policy.threshold * 100.0
        );
        split.weight = 0;
        split.window.clear();
        split.last_rollback = Some(Rollback {
            kind: "automatic",
            reason: reason.clone(),
            at: unix_now(),
            from_weight: from,
        });
        drop(split);
        self.bump();
        tracing::warn!(
            target: "audit",
            action = "auto-rollback",
            upstream = upstream.name(),
            from_weight = from,
            to_weight = 0,
            failures,
            requests,
            error_rate = rate,
            reason,
            "canary rolled back automatically"
        );
        metrics::counter!("gateway_canary_rollbacks_total", "upstream" => upstream.name())
            .increment(1);
        audit_metric(upstream, "auto-rollback");
        weight_gauges(upstream, 0);
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn weight_gauges(upstream: Upstream, canary_weight: u8) {
    let name = upstream.name();
    metrics::gauge!("gateway_upstream_weight", "upstream" => name, "version" => "stable")
        .set(f64::from(100 - canary_weight));
    metrics::gauge!("gateway_upstream_weight", "upstream" => name, "version" => "canary")
        .set(f64::from(canary_weight));
}

pub(crate) fn audit_metric(upstream: Upstream, action: &'static str) {
    metrics::counter!("gateway_traffic_changes_total", "upstream" => upstream.name(), "action" => action)
        .increment(1);
}

/// The next promotion step above `weight` (100 stays 100).
pub fn next_step(weight: u8) -> u8 {
    STEPS.into_iter().find(|s| *s > weight).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_with_canary(weight: u8) -> (Split, Arc<Balancer>) {
        let canary = Balancer::new("http://canary", Resilience::default());
        (
            Split::new(
                Balancer::new("http://stable", Resilience::default()),
                Some((canary.clone(), weight)),
            ),
            canary,
        )
    }

    #[test]
    fn promotion_goes_in_steps() {
        let steps: Vec<u8> = [0, 10, 25, 50, 75, 100].map(next_step).to_vec();
        assert_eq!(steps, [10, 25, 50, 75, 100, 100]);
        assert_eq!(next_step(30), 50);
    }

    #[test]
    fn assignment_is_sticky_and_monotonic_in_the_weight() {
        let (mut split, _) = split_with_canary(25);
        let clients: Vec<String> = (0..1000).map(|i| format!("sub:customer-{i}")).collect();
        let at = |split: &Split| -> Vec<bool> {
            clients
                .iter()
                .map(|c| split.pick(Upstream::Orders, c).is_some())
                .collect()
        };
        let first = at(&split);
        assert_eq!(first, at(&split), "the same client, the same version");
        let share = first.iter().filter(|c| **c).count();
        assert!((150..350).contains(&share), "about 25 %: {share}");
        split.weight = 50;
        let later = at(&split);
        assert!(
            first.iter().zip(&later).all(|(a, b)| !a || *b),
            "raising the weight moves no client back to stable"
        );
        split.weight = 0;
        assert!(at(&split).iter().all(|c| !c));
    }

    #[test]
    fn a_failing_canary_is_rolled_back_once_enough_requests_failed() {
        let (split, canary) = split_with_canary(50);
        let traffic = Traffic::new(vec![(Upstream::Orders, split)]);
        {
            let mut s = traffic.split(Upstream::Orders).unwrap().lock().unwrap();
            s.policy = RollbackPolicy {
                threshold: 0.5,
                min_requests: 10,
                window_secs: 60,
            };
        }
        let before = traffic.etag();
        // Nine failures: below the minimum number of requests, nothing happens.
        for _ in 0..9 {
            traffic.record(Upstream::Orders, &canary, true);
        }
        assert_eq!(
            traffic
                .split(Upstream::Orders)
                .unwrap()
                .lock()
                .unwrap()
                .weight,
            50
        );
        traffic.record(Upstream::Orders, &canary, true);
        let s = traffic.split(Upstream::Orders).unwrap().lock().unwrap();
        assert_eq!(s.weight, 0);
        let rollback = s.last_rollback.clone().unwrap();
        assert_eq!((rollback.kind, rollback.from_weight), ("automatic", 50));
        assert!(rollback.reason.contains("10 of 10"), "{}", rollback.reason);
        assert_ne!(traffic.etag(), before);
    }

    #[test]
    fn a_healthy_canary_stays() {
        let (split, canary) = split_with_canary(50);
        let traffic = Traffic::new(vec![(Upstream::Orders, split)]);
        for i in 0..100 {
            traffic.record(Upstream::Orders, &canary, i % 20 == 0);
        }
        let s = traffic.split(Upstream::Orders).unwrap().lock().unwrap();
        assert_eq!(s.weight, 50, "5 % failures stay under the 10 % default");
        assert!(s.last_rollback.is_none());
    }

    #[test]
    fn legacy_routes_match_whole_segments_and_validate() {
        let route = LegacyRoute {
            prefix: "/api/wishlists".into(),
            upstream: "http://legacy:8080".into(),
            percent: 100,
            request_headers: BTreeMap::new(),
            response_headers: [("X-API-Version".to_string(), "legacy-1".to_string())].into(),
        };
        assert!(route.validate().is_ok());
        assert!(route.matches("/api/wishlists"));
        assert!(route.matches("/api/wishlists/7"));
        assert!(!route.matches("/api/wishlistsx"));
        for bad in [
            LegacyRoute {
                prefix: "api".into(),
                ..route.clone()
            },
            LegacyRoute {
                upstream: "ftp://x".into(),
                ..route.clone()
            },
            LegacyRoute {
                upstream: "http://".into(),
                ..route.clone()
            },
            LegacyRoute {
                percent: 101,
                ..route.clone()
            },
            LegacyRoute {
                request_headers: [("bad header".to_string(), "v".to_string())].into(),
                ..route.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let policy = RollbackPolicy {
                threshold: bad,
                ..RollbackPolicy::default()
            };
            assert!(policy.validate().is_err(), "{bad}");
        }
    }
}
