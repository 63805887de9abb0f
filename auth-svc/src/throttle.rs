//! In-memory throttles, per replica: a token bucket per source address for login and
//! registration, and a growing delay per username after failed logins. Usernames are throttled
//! whether or not they exist, so the throttle does not reveal which accounts exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::settings::RateLimit;

/// Entries idle this long are forgotten.
const FORGET_AFTER: TimeDelta = TimeDelta::hours(1);
/// The longest delay between attempts on one username.
const MAX_DELAY: TimeDelta = TimeDelta::minutes(15);

#[derive(Debug)]
pub struct SourceLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, (f64, DateTime<Utc>)>>,
}

impl SourceLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request's worth from `source`'s bucket, or says how long to wait.
    pub fn check(&self, source: IpAddr, now: DateTime<Utc>) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, seen)| now - *seen < FORGET_AFTER);
        }
        let rate = f64::from(self.limit.per_minute) / 60.0;
        let burst = f64::from(self.limit.burst);
        let (tokens, seen) = buckets.entry(source).or_insert((burst, now));
        let elapsed = (now - *seen).num_milliseconds().max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * rate).min(burst);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - *tokens) / rate).max(0.001)))
        }
    }
}

#[derive(Debug)]
pub struct UsernameBackoff {
    free_failures: u32,
    failures: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
}

impl UsernameBackoff {
    pub fn new(free_failures: u32) -> Self {
        Self {
            free_failures,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `username` may try now, or how long it must wait.
    pub fn check(&self, username: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match failures.get(username) {
            Some((_, not_before)) if *not_before > now => {
                Err((*not_before - now).to_std().unwrap_or(Duration::from_secs(1)))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, username: &str, now: DateTime<Utc>) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() > 100_000 {
            failures.retain(|_, (_, not_before)| now - *not_before < FORGET_AFTER);
        }
        let (count, not_before) = failures.entry(username.to_owned()).or_insert((0, now));
        *count = count.saturating_add(1);
        let excess = count.saturating_sub(self.free_failures);
        *not_before = if excess == 0 {
            now
        } else {
            let delay = TimeDelta::seconds(1i64 << (excess - 1).min(20));
            now + delay.min(MAX_DELAY)
        };
    }

    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_waits() {
        let limiter = SourceLimiter::new(RateLimit {
            per_minute: 60,
            burst: 3,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Utc::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, now).is_ok());
        }
        let wait = limiter.check(ip, now).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check(ip, now + TimeDelta::seconds(1)).is_ok(), "refilled");
        assert!(
            limiter.check("192.0.2.2".parse().unwrap(), now).is_ok(),
            "other sources unaffected"
        );
    }

    #[test]
    fn failures_grow_the_delay_and_success_clears_it() {
        let backoff = UsernameBackoff::new(2);
        let now = Utc::now();
        backoff.failed("alice", now);
        backoff.failed("alice", now);
        assert!(backoff.check("alice", now).is_ok(), "free failures");
        backoff.failed("alice", now);
        assert_eq!(backoff.check("alice", now).unwrap_err(), Duration::from_secs(1));
        backoff.failed("alice", now);
        assert_eq!(backoff.check("alice", now).unwrap_err(), Duration::from_secs(2));
        assert!(backoff.check("alice", now + TimeDelta::seconds(2)).is_ok());
        backoff.succeeded("alice");
        backoff.failed("alice", now);
        assert!(backoff.check("alice", now).is_ok());
    }
}
