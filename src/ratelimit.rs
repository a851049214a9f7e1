//! Per-user message rate limit (`websocket.messages_per_minute`), shared by all of a user's
//! connections on this node. A token bucket per user; idle buckets are dropped so the map
//! does not grow with every user ever seen.

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Process-scope limiter keyed by user.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` messages per user, with bursts up to that many.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::default()),
        }
    }

    /// Takes one token for `user`; false when the user is over the limit.
    pub fn allow(&self, user: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            let full = self.per_minute;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * full / 60.0 < full
            });
        }
        let b = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_minute / 60.0;
        b.tokens = (b.tokens + refill).min(self.per_minute);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_user() {
        let l = RateLimiter::new(3);
        let t = Instant::now();
        assert!(l.allow("a", t) && l.allow("a", t) && l.allow("a", t));
        assert!(!l.allow("a", t));
        assert!(l.allow("b", t), "another user has their own bucket");
        assert!(
            l.allow("a", t + Duration::from_secs(20)),
            "one token back after 20 s at 3/min"
        );
        assert!(!l.allow("a", t + Duration::from_secs(20)));
    }
}
