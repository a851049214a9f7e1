//! The remote key source: a JWKS fetched over HTTPS from `auth.jwt.jwks_url`, or from the
//! `jwks_uri` that OIDC discovery on `auth.jwt.oidc_issuer` names.
//!
//! Built without network ([`RemoteKeys::new`]); [`RemoteKeys::start`] spawns the one task
//! that ever fetches, at once and then on the schedule of [`state`]: the response's
//! `max-age` bounded by the configured min/max, a backoff after failures (the breaker),
//! and a fetch on request when a token names an unknown `kid`, at most once per min
//! interval. Failed refreshes keep the last good keys (stale-while-error).
//!
//! How a token's key is answered:
//! - no key fetched yet: `AUTH_UNAVAILABLE` (1013 / 503), never `INVALID_TOKEN`;
//! - a known `kid`: its key (keys are filed by (issuer, `kid`), see [`keymap`]);
//! - an unknown `kid`: one refetch is awaited if the interval allows (or one is under
//!   way); still unknown, it is `INVALID_TOKEN` while the source is healthy and
//!   `AUTH_UNAVAILABLE` while its fetches fail. Bad tokens never count as failures.

mod fetch;
mod keymap;
mod metrics;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failure::AuthFailure;
use super::keys::{AuthSetupError, log_skipped, single_family};
use crate::config::{JwtConfig, RemoteKeySource};
pub use fetch::check_url as check_key_url;
use fetch::{FetchError, Fetcher};
pub(crate) use keymap::KeyMap;
pub use metrics::KeySourceMetrics;
use state::{Bounds, State};

/// A remote key set, shared by every verification.
pub(crate) struct RemoteKeys {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Fetcher,
    issuer: Arc<str>,
    algorithms: Vec<Algorithm>,
    bounds: Bounds,
    /// How long a verification waits for a refetch it asked for.
    wait: Duration,
    state: Mutex<State>,
    /// Wakes the fetch task for a requested refetch.
    wake: Notify,
    /// Counts finished fetches; waiters watch it.
    done: watch::Sender<u64>,
    metrics: KeySourceMetrics,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.inner.fetcher.configured_url())
            .finish_non_exhaustive()
    }
}

/// The state `ready` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySourceState {
    /// The first fetch has not finished.
    Starting,
    /// The last fetch succeeded.
    Fresh,
    /// Refreshes fail; the last good keys are in use.
    Stale,
    /// No key was ever fetched and fetches fail: tokens get `AUTH_UNAVAILABLE`.
    Unavailable,
}

/// The remote key source as `/ready` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeySourceStatus {
    /// `jwks_url` or `oidc_issuer`.
    pub source: &'static str,
    /// The configured URL.
    pub url: String,
    /// Where it stands.
    pub state: KeySourceState,
    /// Keys in use.
    pub keys: usize,
    /// Consecutive failed fetches.
    pub consecutive_failures: u32,
    /// `open` while fetches are held back after a failure, else `closed`.
    pub breaker: &'static str,
    /// Why the last fetch failed, while fetches fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds since the keys in use were fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_s_ago: Option<u64>,
    /// Seconds until the next scheduled fetch.
    pub next_fetch_in_s: u64,
}

/// Why a one-off fetch (`check --online`) found no usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyCheckError {
    /// No answer, a transport failure or an HTTP error status.
    #[error("{0}")]
    Unreachable(String),
    /// A document came back, but not one with a key for the configured algorithms.
    #[error("{0}")]
    NoUsableKey(String),
}

impl KeySourceStatus {
    /// Verification works (fresh or stale keys).
    pub fn has_keys(&self) -> bool {
        matches!(self.state, KeySourceState::Fresh | KeySourceState::Stale)
    }
}

impl RemoteKeys {
    /// Checks the URL and builds the HTTPS client; fetches nothing.
    pub fn new(config: &JwtConfig, source: &RemoteKeySource) -> Result<RemoteKeys, AuthSetupError> {
        single_family(&config.algorithms)?;
        let fetcher = Fetcher::new(source)?;
        let issuer: Arc<str> = Arc::from(
            config
                .issuer
                .as_deref()
                .unwrap_or_else(|| fetcher.configured_url()),
        );
        Ok(RemoteKeys {
            inner: Arc::new(Inner {
                issuer,
                algorithms: config.algorithms.clone(),
                bounds: Bounds {
                    min: source.min_refresh,
                    max: source.max_refresh.max(source.min_refresh),
                },
                // Discovery and the JWKS are two requests, each bounded by the timeout.
                wait: source.timeout * 2 + Duration::from_millis(500),
                fetcher,
                state: Mutex::new(State::new(Instant::now())),
                wake: Notify::new(),
                done: watch::Sender::new(0),
                metrics: KeySourceMetrics::default(),
            }),
        })
    }

    /// One fetch and parse outside the schedule, touching no state (`check --online`).
    pub async fn fetch_once(&self) -> Result<usize, KeyCheckError> {
        let inner = &self.inner;
        let fetched = inner.fetcher.fetch().await.map_err(|e| match e {
            FetchError::Document { .. } | FetchError::TooLarge { .. } => {
                KeyCheckError::NoUsableKey(e.to_string())
            }
            _ => KeyCheckError::Unreachable(e.to_string()),
        })?;
        let parsed = super::jwk::parse(&fetched.body, &inner.algorithms)
            .map_err(|e| KeyCheckError::NoUsableKey(format!("not a JWKS document: {e}")))?;
        if parsed.keys.is_empty() {
            return Err(KeyCheckError::NoUsableKey(format!(
                "{}: no signing key for algorithms {:?} ({} entries skipped)",
                inner.fetcher.configured_url(),
                inner.algorithms,
                parsed.skipped.len()
            )));
        }
        Ok(parsed.keys.len())
    }

    /// Spawns the fetch task (one per key source), which runs until `shutdown`.
    pub fn start(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.run(shutdown).await })
    }

    /// The metrics of this source.
    pub fn metrics(&self) -> &KeySourceMetrics {
        &self.inner.metrics
    }

    /// The keys to select from for `header`, waiting for one refetch when its `kid` is
    /// unknown and a refetch is allowed or under way.
    pub async fn keys(&self, header: &Header) -> Result<Arc<KeyMap>, AuthFailure> {
        let waiter = match self.inner.lookup(header, true)? {
            Lookup::Ready(keys) => return Ok(keys),
            Lookup::Wait(waiter) => waiter,
        };
        self.inner.await_fetch(waiter).await;
        match self.inner.lookup(header, false)? {
            Lookup::Ready(keys) => Ok(keys),
            Lookup::Wait(_) => Err(unavailable()),
        }
    }

    /// The keys to select from for `header`, never waiting: an unknown `kid` that starts
    /// (or finds) a refetch is `AUTH_UNAVAILABLE`, so the client retries shortly.
    pub fn keys_now(&self, header: &Header) -> Result<Arc<KeyMap>, AuthFailure> {
        match self.inner.lookup(header, true)? {
            Lookup::Ready(keys) => Ok(keys),
            Lookup::Wait(_) => Err(AuthFailure::AuthUnavailable(
                "the key set is being refreshed; retry shortly",
            )),
        }
    }

    /// The source's state for `ready`.
    pub fn status(&self) -> KeySourceStatus {
        let inner = &self.inner;
        let state = inner.lock();
        let now = Instant::now();
        let keys = state.keys.as_ref().map_or(0, |k| k.len());
        KeySourceStatus {
            source: inner.fetcher.kind(),
            url: inner.fetcher.configured_url().to_owned(),
            state: match (state.keys.is_some(), state.failures) {
                (false, 0) => KeySourceState::Starting,
                (false, _) => KeySourceState::Unavailable,
                (true, 0) => KeySourceState::Fresh,
                (true, _) => KeySourceState::Stale,
            },
            keys,
            consecutive_failures: state.failures,
            breaker: if state.breaker_open(now) {
                "open"
            } else {
                "closed"
            },
            last_error: state.last_error.clone(),
            fetched_s_ago: state.fetched_at.map(|t| now.duration_since(t).as_secs()),
            next_fetch_in_s: state.due.saturating_duration_since(now).as_secs(),
        }
    }
}

fn unavailable() -> AuthFailure {
    AuthFailure::AuthUnavailable("the identity provider's keys cannot be fetched; retry later")
}

/// What a lookup found.
enum Lookup {
    /// The keys, holding the token's `kid` (or the token names none).
    Ready(Arc<KeyMap>),
    /// The `kid` is unknown and a fetch is coming: wait on this, then look again.
    Wait(watch::Receiver<u64>),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the keys for `header`. With `may_request`, an unknown `kid` asks for a fetch
    /// when the interval allows (or joins one under way); otherwise it is refused.
    fn lookup(&self, header: &Header, may_request: bool) -> Result<Lookup, AuthFailure> {
        let mut state = self.lock();
        let Some(keys) = state.keys.clone() else {
            return Err(AuthFailure::AuthUnavailable(
                "the identity provider's keys have not been fetched yet; retry shortly",
            ));
        };
        let Some(kid) = &header.kid else {
            return Ok(Lookup::Ready(keys));
        };
        if keys.knows(kid) {
            return Ok(Lookup::Ready(keys));
        }
        let now = Instant::now();
        if may_request && (state.fetching || state.requested) {
            return Ok(Lookup::Wait(self.done.subscribe()));
        }
        if may_request && state.may_refetch(now, self.bounds) {
            state.requested = true;
            self.metrics.refetches.inc();
            self.wake.notify_one();
            return Ok(Lookup::Wait(self.done.subscribe()));
        }
        if may_request {
            self.metrics.refetches_suppressed.inc();
        }
        match state.failures {
            // The source answers and does not have this key: the token is bad.
            0 => Ok(Lookup::Ready(keys)),
            _ => Err(unavailable()),
        }
    }

    /// Waits until the fetch under way (or requested) has finished, bounded by the fetch
    /// time limit.
    async fn await_fetch(&self, mut waiter: watch::Receiver<u64>) {
        let _ = tokio::time::timeout(self.wait, waiter.changed()).await;
    }

    /// The fetch task: sleeps until a fetch is due or requested, fetches, records.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let due = {
                let state = self.lock();
                (!state.should_fetch(Instant::now())).then_some(state.due)
            };
            if let Some(due) = due {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                    _ = self.wake.notified() => {}
                }
            }
            {
                let mut state = self.lock();
                if !state.should_fetch(Instant::now()) {
                    continue;
                }
                state.begin(Instant::now());
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.fetcher.fetch() => result,
            };
            self.record(result);
            self.done.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Parses a fetched document and updates the state, metrics and log.
    fn record(&self, result: Result<fetch::Fetched, FetchError>) {
        let parsed = result.and_then(|fetched| {
            let keys = self.parse(&fetched.body)?;
            Ok((keys, fetched.max_age))
        });
        let now = Instant::now();
        let mut state = self.lock();
        match parsed {
            Ok((keys, max_age)) => {
                let count = keys.len();
                let recovered = state.failures > 0;
                state.succeeded(now, Arc::new(keys), max_age, self.bounds);
                self.metrics.record_success(count);
                match recovered {
                    true => tracing::info!(
                        url = self.fetcher.configured_url(),
                        keys = count,
                        "JWKS fetched again; key source recovered"
                    ),
                    false => tracing::debug!(
                        url = self.fetcher.configured_url(),
                        keys = count,
                        "JWKS fetched"
                    ),
                }
            }
            Err(error) => {
                state.failed(now, error.to_string(), self.bounds);
                self.metrics
                    .record_failure(state.failures, state.keys.is_some());
                tracing::warn!(
                    url = self.fetcher.configured_url(),
                    %error,
                    consecutive_failures = state.failures,
                    keeping_keys = state.keys.as_ref().map_or(0, |k| k.len()),
                    retry_in_ms = state.due.saturating_duration_since(now).as_millis() as u64,
                    "JWKS fetch failed"
                );
            }
        }
    }

    /// A fetched document with no usable key is a failure: keeping the old keys beats
    /// refusing every token.
    fn parse(&self, body: &[u8]) -> Result<KeyMap, FetchError> {
        let url = self.fetcher.configured_url().to_owned();
        let parsed =
            super::jwk::parse(body, &self.algorithms).map_err(|e| FetchError::Document {
                url: url.clone(),
                reason: format!("not a JWKS document: {e}"),
            })?;
        log_skipped(&url, &parsed.skipped);
        if parsed.keys.is_empty() {
            return Err(FetchError::Document {
                url,
                reason: format!("no signing key for algorithms {:?}", self.algorithms),
            });
        }
        Ok(KeyMap::new(Arc::clone(&self.issuer), parsed.keys))
    }
}
