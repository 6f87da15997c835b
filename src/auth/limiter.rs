//! The login throttle: failed logins are counted per account and per client address over a
//! window; once either count reaches its limit, further attempts (even with the right
//! password) are refused until the window that started with the first failure has passed.
//! Time comes from the injected clock. Counts live in this process: each replica throttles on
//! its own, so N replicas allow at most N times the limit.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept before expired ones are swept (bounds memory under a spray of names).
const SWEEP_ABOVE: usize = 10_000;

/// Limits on failed logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: DateTime<Utc>,
    failures: u32,
}

/// Failed-login counters.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    windows: Mutex<HashMap<String, Window>>,
}

fn account_key(account: &str) -> String {
    format!("account:{}", account.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("address:{address}")
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)`: the account or the address is locked out for that long.
    pub fn check(&self, account: &str, address: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0;
        for (key, limit) in [
            (account_key(account), self.limits.per_account),
            (address_key(address), self.limits.per_address),
        ] {
            if let Some(window) = windows.get(&key) {
                let ends = window.started + self.limits.window;
                if window.failures >= limit && now < ends {
                    let millis = u64::try_from((ends - now).num_milliseconds()).unwrap_or(1);
                    wait = wait.max(millis.max(1).div_ceil(1000));
                }
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    /// Counts a failed login against the account and the address.
    pub fn failed(&self, account: &str, address: &str, now: DateTime<Utc>) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > SWEEP_ABOVE {
            let window = self.limits.window;
            windows.retain(|_, w| now < w.started + window);
        }
        for key in [account_key(account), address_key(address)] {
            let window = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now >= window.started + self.limits.window {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures += 1;
        }
    }

    /// A successful login clears the account's count (not the address's: one good password
    /// must not reset a spray from that address).
    pub fn succeeded(&self, account: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(&account_key(account));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_account_is_locked_after_its_limit_until_the_window_ends() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_account: 3,
            per_address: 100,
            window: Duration::minutes(5),
        });
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check("ada", "10.0.0.1", t0), Ok(()));
            limiter.failed("ada", "10.0.0.1", t0);
        }
        assert_eq!(limiter.check("ADA", "10.0.0.2", t0), Err(300));
        assert_eq!(
            limiter.check("ada", "10.0.0.1", t0 + Duration::seconds(299)),
            Err(1)
        );
        assert_eq!(limiter.check("bob", "10.0.0.1", t0), Ok(()));
        assert_eq!(
            limiter.check("ada", "10.0.0.1", t0 + Duration::minutes(5)),
            Ok(())
        );
    }

    #[test]
    fn an_address_is_locked_after_failures_across_accounts() {
        let limiter = LoginLimiter::new(LoginLimits {
            per_account: 100,
            per_address: 2,
            window: Duration::minutes(1),
        });
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        limiter.failed("a", "10.0.0.9", t0);
        limiter.failed("b", "10.0.0.9", t0);
        assert!(limiter.check("c", "10.0.0.9", t0).is_err());
        assert!(limiter.check("c", "10.0.0.8", t0).is_ok());
        limiter.succeeded("c");
        assert!(limiter.check("c", "10.0.0.9", t0).is_err());
    }
}
