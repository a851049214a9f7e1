//! When the remote key source may fetch, as plain data over `tokio::time::Instant`s (so
//! the rules are tested with paused time and no network): the refresh schedule from
//! `Cache-Control: max-age` bounded by the configured min/max, the at-most-one-refetch-per-
//! interval rule for unknown `kid`s, and the breaker with backoff that only fetch failures
//! open.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::keymap::KeyMap;

/// The schedule's bounds (from `auth.jwt.jwks_min_refresh_s` / `jwks_max_refresh_s`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub min: Duration,
    pub max: Duration,
}

impl Bounds {
    /// How long a fetched set is used: its `max-age` (absent: the max), within the bounds.
    pub fn refresh_after(&self, max_age: Option<Duration>) -> Duration {
        max_age.unwrap_or(self.max).clamp(self.min, self.max)
    }

    /// The wait after `failures` consecutive failed fetches: 1 s, doubling, never more than
    /// the min interval, so an IdP that is down sees at most one fetch per interval.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = Duration::from_secs(1u64 << failures.saturating_sub(1).min(20));
        doubled.min(self.min).max(Duration::from_millis(1))
    }
}

/// Where the key source stands.
#[derive(Debug)]
pub(crate) struct State {
    /// The last set fetched successfully, kept while refreshes fail (stale-while-error).
    pub keys: Option<Arc<KeyMap>>,
    /// When that set was fetched.
    pub fetched_at: Option<Instant>,
    /// The next scheduled fetch: a refresh, or the retry after a failure.
    pub due: Instant,
    /// When the last fetch began.
    pub last_attempt: Option<Instant>,
    /// Consecutive failed fetches (0: the breaker is closed).
    pub failures: u32,
    /// Why the last fetch failed, while failures > 0.
    pub last_error: Option<String>,
    /// An unknown `kid` asked for a fetch before `due`.
    pub requested: bool,
    /// A fetch is under way.
    pub fetching: bool,
}

impl State {
    /// Nothing fetched yet; the first fetch is due at once.
    pub fn new(now: Instant) -> State {
        State {
            keys: None,
            fetched_at: None,
            due: now,
            last_attempt: None,
            failures: 0,
            last_error: None,
            requested: false,
            fetching: false,
        }
    }

    /// After a failure, nothing is fetched before the backoff ends.
    pub fn breaker_open(&self, now: Instant) -> bool {
        self.failures > 0 && now < self.due
    }

    /// Whether a token naming an unknown `kid` may cause a fetch now: not while the
    /// breaker is open, and at most once per min interval whatever started the last one.
    pub fn may_refetch(&self, now: Instant, bounds: Bounds) -> bool {
        !self.breaker_open(now)
            && self
                .last_attempt
                .is_none_or(|last| now.duration_since(last) >= bounds.min)
    }

    /// Whether the background task should fetch now.
    pub fn should_fetch(&self, now: Instant) -> bool {
        !self.fetching && (self.requested || now >= self.due)
    }

    /// A fetch begins.
    pub fn begin(&mut self, now: Instant) {
        self.last_attempt = Some(now);
        self.requested = false;
        self.fetching = true;
    }

    /// A fetch brought `keys`; the next is due after `max_age` within the bounds.
    pub fn succeeded(
        &mut self,
        now: Instant,
        keys: Arc<KeyMap>,
        max_age: Option<Duration>,
        bounds: Bounds,
    ) {
        self.keys = Some(keys);
        self.fetched_at = Some(now);
        self.failures = 0;
        self.last_error = None;
        self.fetching = false;
        self.due = now + bounds.refresh_after(max_age);
    }

    /// A fetch failed: the keys are kept, the breaker opens for the backoff.
    pub fn failed(&mut self, now: Instant, error: String, bounds: Bounds) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        self.fetching = false;
        self.due = now + bounds.backoff(self.failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        min: Duration::from_secs(30),
        max: Duration::from_secs(600),
    };

    fn keys() -> Arc<KeyMap> {
        Arc::new(KeyMap::empty_for_tests())
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_is_obeyed_within_the_bounds() {
        assert_eq!(
            BOUNDS.refresh_after(Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
        assert_eq!(
            BOUNDS.refresh_after(Some(Duration::from_secs(5))),
            BOUNDS.min
        );
        assert_eq!(
            BOUNDS.refresh_after(Some(Duration::from_secs(86_400))),
            BOUNDS.max
        );
        assert_eq!(BOUNDS.refresh_after(None), BOUNDS.max);
        let mut state = State::new(Instant::now());
        assert!(
            state.should_fetch(Instant::now()),
            "the first fetch is due at once"
        );
        state.begin(Instant::now());
        assert!(
            !state.should_fetch(Instant::now()),
            "never two fetches at once"
        );
        state.succeeded(
            Instant::now(),
            keys(),
            Some(Duration::from_secs(120)),
            BOUNDS,
        );
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(!state.should_fetch(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(state.should_fetch(Instant::now()), "due when max-age ends");
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_kids_refetch_at_most_once_per_min_interval() {
        let mut state = State::new(Instant::now());
        state.begin(Instant::now());
        state.succeeded(Instant::now(), keys(), None, BOUNDS);
        assert!(!state.may_refetch(Instant::now(), BOUNDS), "just fetched");
        tokio::time::advance(BOUNDS.min - Duration::from_millis(1)).await;
        assert!(!state.may_refetch(Instant::now(), BOUNDS));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(state.may_refetch(Instant::now(), BOUNDS));
        state.requested = true;
        assert!(
            state.should_fetch(Instant::now()),
            "a request makes a fetch due"
        );
        state.begin(Instant::now());
        state.succeeded(Instant::now(), keys(), None, BOUNDS);
        assert!(
            !state.may_refetch(Instant::now(), BOUNDS),
            "and restarts the interval"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_keep_the_keys_and_open_the_breaker_with_backoff() {
        let mut state = State::new(Instant::now());
        state.begin(Instant::now());
        state.succeeded(Instant::now(), keys(), None, BOUNDS);
        tokio::time::advance(BOUNDS.max).await;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let now = Instant::now();
            assert!(state.should_fetch(now));
            state.begin(now);
            state.failed(now, "connection refused".into(), BOUNDS);
            assert!(state.keys.is_some(), "stale keys are kept");
            assert!(state.breaker_open(now));
            assert!(
                !state.may_refetch(now, BOUNDS),
                "no fetch while the breaker is open"
            );
            let wait = state.due - now;
            waits.push(wait.as_secs());
            tokio::time::advance(wait).await;
            assert!(
                !state.breaker_open(Instant::now()),
                "half-open after the backoff"
            );
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        let now = Instant::now();
        state.begin(now);
        state.succeeded(now, keys(), None, BOUNDS);
        assert_eq!((state.failures, state.last_error.as_deref()), (0, None));
    }
}
