//! The message rate shared by every node (`[components.rate_limiter] kind = "redis"`):
//! one token bucket per user in Redis, taken from atomically by a Lua script that reads
//! Redis's own clock (nodes' clocks never meet). Same bucket as the local limiter: bursts
//! up to `messages_per_minute`, refilled continuously.
//!
//! Redis only makes the limit shared: when it does not answer within the service's
//! connect timeout, the node falls back to its local bucket for the user (the limit then
//! holds per node), retries Redis after [`RETRY_AFTER`], and says so in `/metrics`
//! (`portcullis_rate_limiter_shared` 0, `portcullis_rate_limiter_fallbacks_total`).

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::Pool;
use deadpool_redis::redis::Script;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How long the node keeps to its local limit after Redis failed, before trying again
/// (so a blackholed Redis costs one timeout per interval, not one per message).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Takes one token from `KEYS[1]` (a hash: `tokens`, `at` in ms) refilled at `ARGV[1]`
/// per minute up to `ARGV[1]`; returns 1 when a token was taken. An idle bucket expires
/// once it would be full again.
const TAKE_LUA: &str = r"
local rate = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or rate
local at = tonumber(b[2]) or now
tokens = math.min(rate, tokens + math.max(0, now - at) * rate / 60000)
local taken = 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((rate - tokens) * 60000 / rate) + 1000)
return taken
";
/// Sent by hash (`EVALSHA`), loaded once per Redis server, not sent whole per message.
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE_LUA));

/// The `/metrics` entries of the shared limit.
#[derive(Clone, Default)]
pub struct SharedLimitMetrics {
    /// 1 while Redis answers (the limit holds across nodes), 0 while this node falls back
    /// to its local limit.
    pub shared: Gauge,
    /// Messages and connections whose limit was decided locally because Redis did not
    /// answer.
    pub fallbacks: Counter,
}

impl SharedLimitMetrics {
    /// Registers the entries (before `Metrics` is shared).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rate_limiter_shared",
            "1 while per-user limits (message rate, connections) are shared through Redis, 0 while this node falls back to its local limits",
            self.shared.clone(),
        );
        registry.register(
            "rate_limiter_fallbacks",
            "Messages and connections whose per-user limit this node decided alone because Redis did not answer",
            self.fallbacks.clone(),
        );
    }
}

/// The Redis side of a shared limiter.
pub struct Shared {
    pool: Pool,
    timeout: Duration,
    metrics: SharedLimitMetrics,
    /// While set and in the future, Redis is skipped.
    retry_at: Mutex<Option<Instant>>,
}

impl Shared {
    /// A limiter over `pool`, each call bounded by `timeout`.
    pub fn new(pool: Pool, timeout: Duration, metrics: SharedLimitMetrics) -> Shared {
        metrics.shared.set(1);
        Shared {
            pool,
            timeout,
            metrics,
            retry_at: Mutex::new(None),
        }
    }

    /// Takes a token from `user`'s shared bucket: `Some(allowed)`, or `None` when Redis
    /// did not answer (or is being skipped after a failure) and the caller must decide
    /// locally.
    pub async fn take(&self, user: &str, per_minute: u32, now: Instant) -> Option<bool> {
        let key = format!("portcullis:rate:{user}");
        let taken = self.eval(&TAKE, &key, &[per_minute.to_string()], now).await;
        if taken.is_none() {
            self.metrics.fallbacks.inc();
        }
        taken.map(|t| t == 1)
    }

    /// Runs `script` on `key` with `args`: its integer answer, or `None` when Redis did not
    /// answer in time or is being skipped after a failure.
    pub(super) async fn eval(
        &self,
        script: &Script,
        key: &str,
        args: &[String],
        now: Instant,
    ) -> Option<i64> {
        if self.skipping(now) {
            return None;
        }
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            script
                .key(key)
                .arg(args)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let answer = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match answer {
            Ok(value) => {
                self.recovered();
                Some(value)
            }
            Err(error) => {
                self.failed(now, &error);
                None
            }
        }
    }

    /// Counts a decision made locally because Redis did not answer.
    pub(super) fn fell_back(&self) {
        self.metrics.fallbacks.inc();
    }

    fn skipping(&self, now: Instant) -> bool {
        let retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        retry_at.is_some_and(|at| now < at)
    }

    fn failed(&self, now: Instant, error: &str) {
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        if retry_at.is_none() {
            tracing::warn!(%error, "Redis does not answer: per-user limits hold per node until it does");
        }
        *retry_at = Some(now + RETRY_AFTER);
        self.metrics.shared.set(0);
    }

    fn recovered(&self) {
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        if retry_at.take().is_some() {
            tracing::info!("Redis answers again: per-user limits are shared across nodes");
            self.metrics.shared.set(1);
        }
    }
}
