//! Watching a consumer's subscription: whether it stalled (records wait, none arrive),
//! whether the consumer's loop still comes round, and closing a subscription off the
//! async workers.

use std::sync::Arc;
use std::time::Duration;

use shop_log::{Position, Subscription};
use tracing::{warn, Instrument};

use super::{LAG_INTERVAL, STALLED_AFTER};

/// A subscription that, dropped on an async worker (a consumer failed and is subscribing
/// again), is closed on a blocking thread: closing a Kafka consumer waits for it to
/// leave its group, which after a broker restart can take seconds, and two workers
/// serve every consumer, relay and request of a process.
pub(super) struct Closing(Option<Box<dyn Subscription>>);

impl Closing {
    pub(super) fn new(subscription: Box<dyn Subscription>) -> Self {
        Closing(Some(subscription))
    }

    pub(super) fn take(&mut self) -> Option<Box<dyn Subscription>> {
        self.0.take()
    }
}

impl std::ops::Deref for Closing {
    type Target = Box<dyn Subscription>;
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("a subscription is taken only on the way out")
    }
}

impl std::ops::DerefMut for Closing {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .expect("a subscription is taken only on the way out")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(subscription) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(subscription))),
                Err(_) => drop(subscription),
            }
        }
    }
}

/// Says in the log when a consumer's loop has not come round for [`STALLED_AFTER`]:
/// the stall watchdog lives in the loop and cannot act while the loop waits on one call.
pub(super) struct LoopWatch {
    started: std::time::Instant,
    /// Milliseconds from `started` to the loop's last turn.
    turned_ms: Arc<std::sync::atomic::AtomicU64>,
    watch: tokio::task::JoinHandle<()>,
}

impl LoopWatch {
    pub(super) fn start() -> Self {
        let started = std::time::Instant::now();
        let turned_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = turned_ms.clone();
        let watch = tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(LAG_INTERVAL).await;
                    let turned =
                        Duration::from_millis(seen.load(std::sync::atomic::Ordering::Relaxed));
                    let still = started.elapsed().saturating_sub(turned);
                    if still >= STALLED_AFTER {
                        warn!(
                            seconds = still.as_secs(),
                            "the consumer's loop has not come round"
                        );
                    }
                }
            }
            .in_current_span(),
        );
        LoopWatch {
            started,
            turned_ms,
            watch,
        }
    }

    pub(super) fn turned(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.turned_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for LoopWatch {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// What a lag measurement found: the consumer's checkpoints, and how many records wait
/// on the partitions this member holds (`None` when the log did not tell its ends in
/// time).
pub(super) struct Lag {
    pub checkpoints: Vec<Position>,
    pub waiting: Option<i64>,
}

/// Whether a member that got no record for [`STALLED_AFTER`] takes its subscription
/// for stalled: records wait on its partitions (how many). While the log does not tell
/// its ends (the broker is away), the member waits: librdkafka reconnects by itself, and
/// a new subscription would connect no sooner.
pub(super) fn stalled(lag: &Lag, last_record_at: std::time::Instant) -> Option<i64> {
    match lag.waiting {
        Some(waiting) if waiting > 0 && last_record_at.elapsed() >= STALLED_AFTER => Some(waiting),
        _ => None,
    }
}
