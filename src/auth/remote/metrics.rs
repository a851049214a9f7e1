//! The remote key source's Prometheus metrics. The source owns them (it is built before,
//! and without, the process metrics); `Metrics::add` adds them to the
//! registry `/metrics` renders.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Label;

/// Fetch outcomes and the source's state.
#[derive(Debug, Clone, Default)]
pub struct KeySourceMetrics {
    /// Fetches by outcome (`kind` = `ok` or `error`).
    pub fetches: Family<Label, Counter>,
    /// Keys in use.
    pub keys: Gauge,
    /// 1 while refreshes fail and the last good keys are in use.
    pub stale: Gauge,
    /// 1 while fetches are held back after a failure.
    pub breaker_open: Gauge,
    /// Consecutive failed fetches.
    pub consecutive_failures: Gauge,
    /// Refetches asked for by tokens naming an unknown `kid`.
    pub refetches: Counter,
    /// Unknown `kid`s that asked for no refetch (the min interval had not passed).
    pub refetches_suppressed: Counter,
}

impl KeySourceMetrics {
    pub(super) fn record_success(&self, keys: usize) {
        self.fetches.get_or_create(&outcome("ok")).inc();
        self.keys.set(keys as i64);
        self.stale.set(0);
        self.breaker_open.set(0);
        self.consecutive_failures.set(0);
    }

    pub(super) fn record_failure(&self, failures: u32, has_keys: bool) {
        self.fetches.get_or_create(&outcome("error")).inc();
        self.stale.set(i64::from(has_keys));
        self.breaker_open.set(1);
        self.consecutive_failures.set(i64::from(failures));
    }

    /// Registers every metric under `portcullis_jwks_*`.
    pub fn register(&self, registry: &mut Registry) {
        let jwks = registry.sub_registry_with_prefix("jwks");
        jwks.register(
            "fetches",
            "Key set fetches by outcome (label kind: ok, error)",
            self.fetches.clone(),
        );
        jwks.register("keys", "Keys in use", self.keys.clone());
        jwks.register(
            "stale",
            "1 while refreshes fail and the last fetched keys are in use",
            self.stale.clone(),
        );
        jwks.register(
            "breaker_open",
            "1 while fetches are held back after a failure",
            self.breaker_open.clone(),
        );
        jwks.register(
            "consecutive_failures",
            "Consecutive failed fetches",
            self.consecutive_failures.clone(),
        );
        jwks.register(
            "refetches",
            "Refetches asked for by tokens naming an unknown kid",
            self.refetches.clone(),
        );
        jwks.register(
            "refetches_suppressed",
            "Unknown kids that caused no refetch (within the min interval)",
            self.refetches_suppressed.clone(),
        );
    }
}

fn outcome(kind: &str) -> Label {
    Label {
        kind: kind.to_owned(),
    }
}
