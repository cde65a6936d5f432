//! Upstream instances and their health (SPEC §3.8): each upstream is a list of instances
//! (`SHOP_INVENTORY_URL=http://a:8082,http://b:8082`) used round robin; a background
//! check of `/ready`, and any failed request, mark an instance unhealthy so it is
//! skipped, and a passing check readmits it. `/ready`, not `/health`: an instance that is
//! still starting, or draining before it stops (SIGTERM), answers `/health` but should get
//! no new requests. A circuit breaker per upstream opens after
//! consecutive failures (requests get 503 at once), and after its cool-down lets one
//! probe through (half-open): success closes it, failure opens it again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Circuit-breaker and health-check settings.
#[derive(Debug, Clone, Copy)]
pub struct Resilience {
    /// Consecutive failed requests that open an upstream's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses before letting a probe through.
    pub breaker_cooldown: Duration,
    /// How often every instance's `/ready` is checked.
    pub health_interval: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
        }
    }
}

struct Instance {
    base: String,
    healthy: AtomicBool,
}

/// One upstream: its instances, the round-robin cursor and the circuit breaker.
pub struct Balancer {
    instances: Vec<Instance>,
    next: AtomicUsize,
    breaker: Breaker,
    /// Every instance has been checked once (until then each counts as healthy).
    checked: AtomicBool,
}

impl Balancer {
    /// From a comma-separated list of base URLs.
    pub fn new(list: &str, settings: Resilience) -> Arc<Self> {
        Arc::new(Balancer {
            instances: list
                .split(',')
                .map(|b| b.trim().trim_end_matches('/'))
                .filter(|b| !b.is_empty())
                .map(|base| Instance {
                    base: base.to_string(),
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
            breaker: Breaker::new(settings),
            checked: AtomicBool::new(false),
        })
    }

    /// Instances to try, in order: the healthy ones round robin (all of them when none
    /// is healthy, so a wrong health verdict never blocks every request).
    pub fn candidates(&self) -> Vec<String> {
        let n = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let ordered: Vec<&Instance> = (0..n).map(|i| &self.instances[(start + i) % n]).collect();
        let healthy: Vec<String> = ordered
            .iter()
            .filter(|i| i.healthy.load(Ordering::Relaxed))
            .map(|i| i.base.clone())
            .collect();
        if healthy.is_empty() {
            ordered.iter().map(|i| i.base.clone()).collect()
        } else {
            healthy
        }
    }

    /// Every instance's base URL.
    pub fn bases(&self) -> impl Iterator<Item = &str> {
        self.instances.iter().map(|i| i.base.as_str())
    }

    pub fn mark(&self, base: &str, healthy: bool) {
        if let Some(instance) = self.instances.iter().find(|i| i.base == base) {
            instance.healthy.store(healthy, Ordering::Relaxed);
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Whether every instance has been checked at least once.
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Checks every instance's `/ready` at once and then every `interval`, for as long as
    /// the process runs: an instance that is starting, draining or gone is out of
    /// rotation until it is ready again.
    pub fn spawn_health_checks(self: &Arc<Self>, client: reqwest::Client, interval: Duration) {
        let balancer = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let checks = balancer.instances.iter().map(|instance| {
                    let client = client.clone();
                    async move {
                        let ok = client
                            .get(format!("{}/ready", instance.base))
                            .timeout(Duration::from_secs(2))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        instance.healthy.store(ok, Ordering::Relaxed);
                    }
                });
                futures::future::join_all(checks).await;
                balancer.checked.store(true, Ordering::Release);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

/// A circuit breaker: closed, open until an instant, or half-open with one probe out.
pub struct Breaker {
    settings: Resilience,
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
    probing: AtomicBool,
}

impl Breaker {
    fn new(settings: Resilience) -> Self {
        Breaker {
            settings,
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    /// `Ok` to go ahead, or how long the circuit stays open.
    pub fn allow(&self) -> Result<(), Duration> {
        let open_until = *self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match open_until {
            None => Ok(()),
            Some(until) if Instant::now() < until => Err(until - Instant::now()),
            // Half-open: one probe at a time.
            Some(_) => match self.probing.compare_exchange(
                false,
                true,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Ok(()),
                Err(_) => Err(Duration::from_secs(1)),
            },
        }
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
        *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        if probe_failed || failures >= self.settings.breaker_failures {
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + self.settings.breaker_cooldown);
        }
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self) -> bool {
        self.open_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Resilience {
        Resilience {
            breaker_failures: 2,
            breaker_cooldown: Duration::from_millis(50),
            health_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn round_robin_skips_unhealthy_instances_and_readmits_them() {
        let b = Balancer::new("http://a, http://b/ ,http://c", settings());
        let firsts: Vec<String> = (0..3).map(|_| b.candidates()[0].clone()).collect();
        assert_eq!(firsts, ["http://a", "http://b", "http://c"]);
        b.mark("http://b", false);
        for _ in 0..6 {
            assert!(!b.candidates().contains(&"http://b".to_string()));
        }
        b.mark("http://b", true);
        assert!((0..3).any(|_| b.candidates()[0] == "http://b"));
        for base in ["http://a", "http://b", "http://c"] {
            b.mark(base, false);
        }
        assert_eq!(b.candidates().len(), 3, "none healthy: try them all");
    }

    #[test]
    fn the_breaker_opens_then_lets_one_probe_through() {
        let b = Breaker::new(settings());
        b.failure();
        assert!(b.allow().is_ok());
        b.failure();
        assert!(b.is_open() && b.allow().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow().is_ok(), "half-open: the probe");
        assert!(b.allow().is_err(), "one probe at a time");
        b.failure();
        assert!(b.is_open(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow().is_ok());
        b.success();
        assert!(!b.is_open() && b.allow().is_ok() && b.allow().is_ok());
    }
}
