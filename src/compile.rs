//! The one gate: `check` and `serve` both call [`compile`], which loads an environment,
//! validates it (schema and semantic rules), then builds every component `serve` builds
//! before binding — key sets, the agent registry and its providers and tools, the store
//! and Redis targets, the event bus, the rate limiter, metrics — without opening a
//! network connection. Every failure, early or late, is a coded diagnostic with
//! `file:line` (vector's `config::compiler::compile` collects the same way), so whatever
//! `serve` would refuse, `check` refuses.
//!
//! Architecture invariant: `serve` builds nothing from configuration that this module did
//! not build; `app::App` is made only from [`Compiled`].

mod agents;
mod keys;
mod services;

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Registry;
use crate::auth::Verifier;
use crate::bus::EventBus;
use crate::config::load::{LoadOptions, Loaded, load, place};
use crate::config::raw::RawConfig;
use crate::config::{Config, RateLimiterKind, Scope};
use crate::diagnostic::{Diagnostic, Finding, Report, Severity};
use crate::keypath::KeyPath;
use crate::metrics::Metrics;
use crate::ratelimit::{Per, RateLimiter, Shared, SharedLimitMetrics};

/// Every process-scope component of a valid environment, built and ready for
/// [`crate::app::App`]; nothing in it has touched the network yet.
pub struct Compiled {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// JWT verification (absent when `auth.mode = "none"`).
    pub verifier: Option<Arc<Verifier>>,
    /// The agents, with their providers and tools.
    pub agents: Arc<Registry>,
    /// The rate limiter, keyed as `components.rate_limiter.scope` says.
    pub limiter: Arc<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The Redis pool (deadpool connects lazily), when a Redis service is declared.
    pub redis: Option<deadpool_redis::Pool>,
    /// The event bus `components.event_bus.kind` names.
    pub bus: Arc<dyn EventBus>,
}

/// The result of compiling one environment.
pub struct Outcome {
    /// Every error and warning.
    pub report: Report,
    /// Present only when there are no errors.
    pub compiled: Option<Compiled>,
    /// The loaded files (absent when loading itself failed).
    pub loaded: Option<Loaded>,
    /// The raw configuration, when it could be read.
    pub raw: Option<RawConfig>,
}

impl Outcome {
    /// The validated configuration, when there are no errors.
    pub fn config(&self) -> Option<&Config> {
        self.compiled.as_ref().map(|c| &*c.config)
    }
}

/// Loads, validates and builds one environment; see the module header.
pub fn compile(opts: &LoadOptions, env: &str) -> Outcome {
    let mut report = Report {
        env: env.to_string(),
        ..Default::default()
    };
    let loaded = match load(opts, env) {
        Ok(l) => l,
        Err(diags) => {
            report.extend(diags);
            return Outcome {
                report,
                compiled: None,
                loaded: None,
                raw: None,
            };
        }
    };
    let validated = crate::validate::validate(&loaded);
    let mut findings = validated.findings;
    let built = validated.config.map(|config| {
        let mut late = Vec::new();
        let parts = build(config, &mut late);
        late.retain(|f| !already_reported(f, &findings, &validated.reported));
        findings.extend(late);
        parts
    });
    let mut diags: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| place(&loaded, f.code, f.severity, &f.path, f.message, f.hint))
        .collect();
    crate::validate::sort(&mut diags);
    report.extend(diags);
    Outcome {
        compiled: built.filter(|_| report.is_ok()),
        report,
        loaded: Some(loaded),
        raw: validated.raw,
    }
}

/// A late failure the rules already reported says nothing new: the same code, or an error
/// at the same key or below it (an unknown algorithm at `auth.jwt.algorithms[1]` is why
/// the key set cannot be built from `auth.jwt.algorithms`).
fn already_reported(late: &Finding, findings: &[Finding], reported: &[KeyPath]) -> bool {
    crate::validate::is_poisoned(&late.path, reported)
        || findings.iter().any(|e| {
            e.severity == Severity::Error
                && (e.code == late.code || e.path.0.starts_with(&late.path.0))
        })
}

/// The message rate limiter `[components.rate_limiter]` declares. A `redis` one without a
/// pool (its service has no URL, refused by the rules) is local, and never served.
fn rate_limiter(
    config: &Config,
    redis: Option<&deadpool_redis::Pool>,
    metrics: &mut Metrics,
) -> RateLimiter {
    let limiter = &config.components.rate_limiter;
    let per_minute = config.websocket.messages_per_minute;
    match (limiter.kind, limiter.scope, redis) {
        (RateLimiterKind::Redis, _, Some(pool)) => {
            let timeout = config
                .redis()
                .map_or(Duration::from_secs(1), |(_, s)| s.connect_timeout);
            let shared_metrics = SharedLimitMetrics::default();
            metrics.add(|r| shared_metrics.register(r));
            RateLimiter::shared(
                per_minute,
                Shared::new(pool.clone(), timeout, shared_metrics),
            )
        }
        (_, Scope::Connection, _) => RateLimiter::new(per_minute, Per::Connection),
        _ => RateLimiter::new(per_minute, Per::User),
    }
}

/// Builds every component, collecting each failure as a finding.
fn build(config: Config, findings: &mut Vec<Finding>) -> Compiled {
    let verifier = keys::build(&config, findings);
    let agents = agents::build(&config, findings);
    services::check_store(&config, findings);
    let redis = services::redis_pool(&config, findings);
    let mut metrics = Metrics::new();
    let bus = crate::bus::build(&config, redis.as_ref(), &mut metrics, findings);
    if let Some(source) = verifier.as_ref().and_then(|v| v.key_source_metrics()) {
        metrics.add(|r| source.register(r));
    }
    let limiter = rate_limiter(&config, redis.as_ref(), &mut metrics)
        .with_connection_cap(config.websocket.max_connections_per_user);
    Compiled {
        limiter: Arc::new(limiter),
        metrics: Arc::new(metrics),
        verifier,
        agents: Arc::new(agents),
        redis,
        bus,
        config: Arc::new(config),
    }
}
