//! Login throttling per account: after [`MAX_FAILURES`] wrong passwords for one email
//! within [`WINDOW`], every attempt for that email — the right password included — is
//! refused with 429 and `Retry-After` until the window has passed. A success clears the
//! account's count. Kept in memory per process (several instances of the service each
//! count their own share), bounded in size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords per account and window before the account is throttled.
pub const MAX_FAILURES: u32 = 5;
/// How long failures are counted, and how long a throttled account waits.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Accounts tracked at most (older entries are dropped first when full).
const CAPACITY: usize = 100_000;

/// Failed logins by account.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    /// The process's throttle.
    pub fn global() -> &'static LoginThrottle {
        static THROTTLE: std::sync::OnceLock<LoginThrottle> = std::sync::OnceLock::new();
        THROTTLE.get_or_init(LoginThrottle::default)
    }

    /// `Some(wait)` while the account is throttled.
    pub fn check(&self, account: &str) -> Option<Duration> {
        let failures = self.failures.lock().ok()?;
        let (count, since) = failures.get(account)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then_some(left)
    }

    /// A wrong password for the account.
    pub fn failed(&self, account: &str) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= CAPACITY && !failures.contains_key(account) {
            failures.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if failures.len() >= CAPACITY {
                return;
            }
        }
        let entry = failures
            .entry(account.to_string())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// A successful login: the account's count starts again.
    pub fn succeeded(&self, account: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_throttled_after_its_failures_and_freed_by_a_success() {
        let throttle = LoginThrottle::default();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed("a@example.com");
        }
        assert_eq!(throttle.check("a@example.com"), None);
        throttle.failed("a@example.com");
        assert!(throttle.check("a@example.com").is_some_and(|w| w <= WINDOW));
        assert_eq!(throttle.check("b@example.com"), None, "per account");
        throttle.succeeded("a@example.com");
        assert_eq!(throttle.check("a@example.com"), None);
    }
}
