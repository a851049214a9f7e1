//! The chat message rate limit (`websocket.messages_per_minute`): a token bucket per user
//! (shared by all of a user's connections on this node) or per connection, as
//! `components.rate_limiter.scope` says. Idle buckets are dropped so the map does not
//! grow with every user or connection ever seen. With `kind = "redis"` the per-user
//! bucket lives in Redis and holds across nodes (`shared.rs`); this process's buckets are
//! then the fallback while Redis does not answer.

mod connections;
mod shared;

pub use connections::{ENTRY_TTL, REFRESH_EVERY};
pub use shared::{RETRY_AFTER, Shared, SharedLimitMetrics};

use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What one bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// A user, across their connections (`scope = "process"`).
    User,
    /// One connection (`scope = "connection"`).
    Connection,
}

/// Process-scope limiter keyed by user or by connection.
pub struct RateLimiter {
    per_minute: f64,
    per: Per,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The per-user bucket shared by every node, when `kind = "redis"`.
    shared: Option<Shared>,
    /// The per-user connection cap (`websocket.max_connections_per_user`).
    connections: connections::Connections,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` messages per user (or connection), with bursts up
    /// to that many.
    pub fn new(per_minute: u32, per: Per) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            per,
            buckets: Mutex::new(HashMap::default()),
            shared: None,
            connections: connections::Connections::default(),
        }
    }

    /// This limiter with a cap on each user's open sockets (`None`: no cap).
    pub fn with_connection_cap(mut self, cap: Option<u32>) -> Self {
        self.connections = connections::Connections::new(cap);
        self
    }

    /// Takes a place for a new socket `conn_id` of `user`; false when the user already
    /// holds `websocket.max_connections_per_user` (on every node, when shared).
    pub async fn connection_opened(&self, user: &str, conn_id: &str) -> bool {
        self.connections
            .open(self.shared.as_ref(), user, conn_id)
            .await
    }

    /// Gives back the place of a socket [`Self::connection_opened`] let in.
    pub async fn connection_closed(&self, user: &str, conn_id: &str) {
        self.connections
            .close(self.shared.as_ref(), user, conn_id)
            .await;
    }

    /// Keeps this node's connection entries alive in Redis until `stop` (shared limiter
    /// with a connection cap only).
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        if self.shared.is_none() || self.connections.cap().is_none() {
            return;
        }
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Some(shared) = &limiter.shared {
                    limiter.connections.refresh(shared).await;
                }
            }
        });
    }

    /// A per-user limiter shared by every node through Redis, falling back to this
    /// process's buckets while Redis does not answer.
    pub fn shared(per_minute: u32, shared: Shared) -> Self {
        Self {
            shared: Some(shared),
            ..Self::new(per_minute, Per::User)
        }
    }

    /// Whether the limit is shared through Redis ([`Self::allow_shared`] must be used).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// [`Self::allow`] through the shared bucket when there is one and Redis answers.
    pub async fn allow_shared(&self, user: &str, conn_id: &str, now: Instant) -> bool {
        if let Some(shared) = &self.shared
            && let Some(allowed) = shared.take(user, self.per_minute as u32, now).await
        {
            return allowed;
        }
        self.allow(user, conn_id, now)
    }

    /// What a bucket limits.
    pub fn per(&self) -> Per {
        self.per
    }

    /// Takes one token for a message of `user` on connection `conn_id`; false when over
    /// the limit.
    pub fn allow(&self, user: &str, conn_id: &str, now: Instant) -> bool {
        let key = match self.per {
            Per::User => user,
            Per::Connection => conn_id,
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            let full = self.per_minute;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * full / 60.0 < full
            });
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
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
        let l = RateLimiter::new(3, Per::User);
        let t = Instant::now();
        assert!(l.allow("a", "c1", t) && l.allow("a", "c2", t) && l.allow("a", "c1", t));
        assert!(
            !l.allow("a", "c3", t),
            "a user's connections share one bucket"
        );
        assert!(l.allow("b", "c4", t), "another user has their own bucket");
        assert!(
            l.allow("a", "c1", t + Duration::from_secs(20)),
            "one token back after 20 s at 3/min"
        );
        assert!(!l.allow("a", "c1", t + Duration::from_secs(20)));
    }

    #[test]
    fn per_connection_buckets_are_per_socket() {
        let l = RateLimiter::new(1, Per::Connection);
        let t = Instant::now();
        assert!(l.allow("a", "c1", t));
        assert!(!l.allow("a", "c1", t));
        assert!(
            l.allow("a", "c2", t),
            "another socket of the same user has its own"
        );
    }
}
