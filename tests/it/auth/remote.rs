//! The remote key source against a local HTTPS IdP (`idp.rs`): keys fetched at start,
//! rotation without restart, the IdP down at boot and later, a flood of unknown `kid`s,
//! `Cache-Control: max-age`, OIDC discovery and its issuer check, every supported
//! algorithm, and what is never fetched (redirects, token headers).

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::Algorithm;
use portcullis::auth::{AuthFailure, InvalidReason, KeySourceState, KeySourceStatus, Verifier};
use portcullis::config::{JwtConfig, KeySource, RemoteKeySource, RemoteLocation};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::idp::{Idp, Mode, SigningKey, TestCa};

const ISSUER: &str = "https://idp.test/";

/// A started verifier over a remote source, with what keeps it alive.
pub struct Remote {
    pub verifier: Verifier,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The configuration of a remote source at `location`, trusting `ca`.
pub fn remote_config(
    location: RemoteLocation,
    ca: &TestCa,
    algorithms: Vec<Algorithm>,
    min_refresh_s: u64,
) -> (JwtConfig, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let issuer = match &location {
        RemoteLocation::OidcIssuer(issuer) => issuer.clone(),
        RemoteLocation::JwksUrl(_) => ISSUER.to_owned(),
    };
    let config = JwtConfig {
        algorithms,
        key: KeySource::Remote(RemoteKeySource {
            location,
            ca_file: Some(ca.write_ca(dir.path())),
            min_refresh: Duration::from_secs(min_refresh_s),
            max_refresh: Duration::from_secs(600),
            timeout: Duration::from_secs(2),
            allow_http: false,
        }),
        issuer: Some(issuer),
        audience: Some("portcullis".into()),
        leeway_s: 0,
        max_token_bytes: 8192,
    };
    (config, dir)
}

/// Builds and starts a verifier for `config`.
pub fn start(config: (JwtConfig, TempDir)) -> Remote {
    let verifier = Verifier::from_config(&config.0).expect("remote key source builds");
    let shutdown = CancellationToken::new();
    verifier
        .start(shutdown.clone())
        .expect("a remote source starts a task");
    Remote {
        verifier,
        shutdown,
        _dir: config.1,
    }
}

/// A verifier of `idp`'s `/jwks.json`.
fn jwks(idp: &Idp, ca: &TestCa, alg: Algorithm, min_refresh_s: u64) -> Remote {
    let location = RemoteLocation::JwksUrl(idp.url("/jwks.json"));
    start(remote_config(location, ca, vec![alg], min_refresh_s))
}

impl Remote {
    pub fn status(&self) -> KeySourceStatus {
        self.verifier.key_source_status().expect("remote status")
    }

    /// Waits until the source reaches `state` (the fetch task runs in the background).
    pub async fn until(&self, state: KeySourceState) -> KeySourceStatus {
        let started = tokio::time::Instant::now();
        loop {
            let status = self.status();
            if status.state == state {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "key source never became {state:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the source has finished `n` failed fetches in a row.
    async fn until_failures(&self, n: u32) -> KeySourceStatus {
        let started = tokio::time::Instant::now();
        loop {
            let status = self.status();
            if status.consecutive_failures >= n {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{status:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn check(&self, token: &str) -> Result<String, AuthFailure> {
        self.verifier
            .verify_async(token, Utc::now())
            .await
            .map(|id| id.user_id)
    }
}

/// Claims valid now, with the issuer and audience the test configurations require.
pub fn claims(sub: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({"sub": sub, "iss": ISSUER, "aud": "portcullis", "iat": now, "exp": now + 600})
}

fn unknown_key() -> Result<String, AuthFailure> {
    Err(AuthFailure::InvalidToken(InvalidReason::UnknownKey))
}

#[tokio::test]
async fn a_served_key_verifies_after_one_fetch() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 30);
    let status = remote.until(KeySourceState::Fresh).await;
    assert_eq!((status.keys, status.breaker), (1, "closed"));
    for _ in 0..5 {
        assert_eq!(
            remote.check(&key.sign(&claims("alice"))).await,
            Ok("alice".into())
        );
    }
    assert_eq!(
        idp.jwks_requests(),
        1,
        "known keys are served from the cache"
    );
}

#[tokio::test]
async fn a_rotated_in_key_is_accepted_within_the_min_interval_without_restart() {
    let ca = TestCa::new();
    let old = SigningKey::generate(Algorithm::ES256, "2024-old");
    let new = SigningKey::generate(Algorithm::ES256, "2025-new");
    let idp = Idp::start(&ca, &[&old]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 1);
    remote.until(KeySourceState::Fresh).await;
    assert_eq!(remote.check(&old.sign(&claims("a"))).await, Ok("a".into()));
    idp.set_keys(&[&new]);
    // (That an unknown kid within the interval is refused without asking the IdP is
    // `a_flood_of_random_kids_causes_at_most_one_fetch_per_interval`.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(remote.check(&new.sign(&claims("a"))).await, Ok("a".into()));
    assert_eq!(idp.jwks_requests(), 2, "one refetch brought the new key");
    // The old key left the JWKS, so it left the cache too.
    assert_eq!(remote.check(&old.sign(&claims("a"))).await, unknown_key());
}

#[tokio::test]
async fn idp_down_at_boot_is_unavailable_not_invalid() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let remote = start(remote_config(
        RemoteLocation::JwksUrl(url),
        &ca,
        vec![Algorithm::ES256],
        30,
    ));
    let status = remote.until(KeySourceState::Unavailable).await;
    assert_eq!(status.breaker, "open");
    assert!(status.last_error.is_some(), "{status:?}");
    let refused = remote.check(&key.sign(&claims("a"))).await;
    assert!(
        matches!(refused, Err(AuthFailure::AuthUnavailable(_))),
        "{refused:?}"
    );
    let failure = refused.unwrap_err();
    assert_eq!(
        (failure.close_code().code(), failure.http_status().as_u16()),
        (1013, 503)
    );
    // A garbage token is still INVALID_TOKEN: no key source is needed to refuse it.
    assert!(matches!(
        remote.check("not.a.token").await,
        Err(AuthFailure::InvalidToken(_))
    ));
}

#[tokio::test]
async fn idp_down_later_keeps_verifying_with_the_cached_keys() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 1);
    remote.until(KeySourceState::Fresh).await;
    for mode in [Mode::Status(503), Mode::Hangup] {
        idp.set_mode(mode.clone());
        let before = remote.status().consecutive_failures;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // An unknown kid asks for a refetch, which fails: retryable, not INVALID_TOKEN.
        let unknown = remote.check(&key.sign_as("rotated", &claims("a"))).await;
        assert!(
            matches!(unknown, Err(AuthFailure::AuthUnavailable(_))),
            "{mode:?}: {unknown:?}"
        );
        let status = remote.until_failures(before + 1).await;
        assert_eq!(status.state, KeySourceState::Stale, "{mode:?}");
        assert_eq!(
            remote.check(&key.sign(&claims("b"))).await,
            Ok("b".into()),
            "{mode:?}"
        );
    }
    let metrics = remote.verifier.key_source_metrics().unwrap();
    assert_eq!(metrics.stale.get(), 1);
    assert!(metrics.consecutive_failures.get() >= 2);
    idp.set_mode(Mode::Up);
    remote.until(KeySourceState::Fresh).await;
    assert_eq!(metrics.stale.get(), 0);
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_at_most_one_fetch_per_interval() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    // The longest min interval, so a slow machine cannot reach its end during the test.
    let remote = jwks(&idp, &ca, Algorithm::ES256, 3600);
    remote.until(KeySourceState::Fresh).await;
    let signed = key.sign(&claims("x"));
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let kid = format!("random-{i}-{}", rand::random::<u64>());
            SigningKey::resign_header_as(&signed, Algorithm::ES256, &kid)
        })
        .collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| remote.check(t))).await;
    assert!(
        results.iter().all(|r| *r == unknown_key()),
        "every random kid is a bad token"
    );
    assert_eq!(
        idp.jwks_requests(),
        1,
        "within the interval the IdP is not asked again"
    );
    // A valid token is untouched by the flood.
    assert_eq!(
        remote.check(&key.sign(&claims("ok"))).await,
        Ok("ok".into())
    );
    let metrics = remote.verifier.key_source_metrics().unwrap();
    assert_eq!(metrics.refetches_suppressed.get(), 1000);
    assert_eq!(
        metrics.consecutive_failures.get(),
        0,
        "bad tokens are not failures"
    );
}

#[tokio::test]
async fn a_flood_after_the_interval_shares_one_refetch() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 1);
    remote.until(KeySourceState::Fresh).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let signed = key.sign(&claims("x"));
    let tokens: Vec<String> = (0..1000)
        .map(|i| SigningKey::resign_header_as(&signed, Algorithm::ES256, &format!("random-{i}")))
        .collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| remote.check(t))).await;
    assert!(results.iter().all(|r| *r == unknown_key()));
    assert_eq!(idp.jwks_requests(), 2, "1 000 unknown kids, one refetch");
    assert_eq!(remote.status().state, KeySourceState::Fresh);
}

#[tokio::test]
async fn max_age_schedules_the_refresh_within_the_bounds() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    idp.set_cache_control("public, max-age=1");
    let remote = jwks(&idp, &ca, Algorithm::ES256, 1);
    remote.until(KeySourceState::Fresh).await;
    // No token asks for anything: the refresh happens on the schedule alone.
    let started = tokio::time::Instant::now();
    while idp.jwks_requests() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "max-age=1 not obeyed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A long max-age is capped at jwks_max_refresh_s (600 s here).
    idp.set_cache_control("max-age=86400");
    let seen = idp.jwks_requests();
    while idp.jwks_requests() == seen {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = remote.status().next_fetch_in_s;
    assert!((590..=600).contains(&next), "next fetch in {next} s");
}

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_and_a_wrong_issuer_is_refused() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let idp = Idp::start(&ca, &[&key]).await;
    let location = RemoteLocation::OidcIssuer(idp.issuer());
    let remote = start(remote_config(
        location.clone(),
        &ca,
        vec![Algorithm::RS256],
        30,
    ));
    remote.until(KeySourceState::Fresh).await;
    let mut good = claims("olga");
    good["iss"] = json!(idp.issuer());
    assert_eq!(remote.check(&key.sign(&good)).await, Ok("olga".into()));
    assert_eq!((idp.discovery_requests(), idp.jwks_requests()), (1, 1));
    // The same document claiming another issuer: its keys are never fetched.
    let evil = Idp::start(&ca, &[&key]).await;
    evil.set_discovery_issuer("https://evil.example/");
    let refused = start(remote_config(
        RemoteLocation::OidcIssuer(evil.issuer()),
        &ca,
        vec![Algorithm::RS256],
        30,
    ));
    let status = refused.until(KeySourceState::Unavailable).await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("evil.example"), "{error}");
    assert_eq!(evil.jwks_requests(), 0);
    let mut token = claims("olga");
    token["iss"] = json!(evil.issuer());
    assert!(matches!(
        refused.check(&key.sign(&token)).await,
        Err(AuthFailure::AuthUnavailable(_))
    ));
}

#[tokio::test]
async fn every_supported_algorithm_verifies_from_a_remote_jwks() {
    let ca = TestCa::new();
    let cases = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    for alg in cases {
        let key = SigningKey::generate(alg, &format!("{alg:?}"));
        let idp = Idp::start(&ca, &[&key]).await;
        let remote = jwks(&idp, &ca, alg, 30);
        remote.until(KeySourceState::Fresh).await;
        assert_eq!(
            remote.check(&key.sign(&claims("u"))).await,
            Ok("u".into()),
            "{alg:?}"
        );
        // Signed by another key of the same kind under the same kid: bad signature.
        let forger = SigningKey::generate(alg, &format!("{alg:?}"));
        assert_eq!(
            remote.check(&forger.sign(&claims("u"))).await,
            Err(AuthFailure::InvalidToken(InvalidReason::BadSignature)),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn keys_that_do_not_fit_the_configured_algorithms_are_ignored() {
    let ca = TestCa::new();
    let p384 = SigningKey::generate(Algorithm::ES384, "p384");
    let p256 = SigningKey::generate(Algorithm::ES256, "p256");
    let idp = Idp::start(&ca, &[&p384, &p256]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 30);
    let status = remote.until(KeySourceState::Fresh).await;
    assert_eq!(status.keys, 1, "the P-384 key fits no configured algorithm");
    assert_eq!(remote.check(&p256.sign(&claims("u"))).await, Ok("u".into()));
}

#[tokio::test]
async fn redirects_oversized_documents_and_bad_json_are_fetch_failures() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let target = Idp::start(&ca, &[&key]).await;
    let idp = Idp::start(&ca, &[&key]).await;
    for (mode, says) in [
        (Mode::Redirect(target.url("/jwks.json")), "HTTP 302"),
        (Mode::Huge(300 * 1024), "larger than"),
        (Mode::Status(500), "HTTP 500"),
    ] {
        idp.set_mode(mode.clone());
        let remote = jwks(&idp, &ca, Algorithm::ES256, 30);
        let status = remote.until(KeySourceState::Unavailable).await;
        let error = status.last_error.unwrap_or_default();
        assert!(error.contains(says), "{mode:?}: {error}");
    }
    assert_eq!(target.jwks_requests(), 0, "the redirect was not followed");
}

#[tokio::test]
async fn nothing_in_a_token_header_decides_what_is_fetched() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let attacker = Idp::start(&ca, &[&key]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 1);
    remote.until(KeySourceState::Fresh).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some("attacker-kid".into());
    header.jku = Some(attacker.url("/jwks.json"));
    header.x5u = Some(attacker.url("/cert.pem"));
    let mut forged = claims("mallory");
    forged["iss"] = json!(attacker.issuer());
    let token = jsonwebtoken::encode(&header, &forged, &key.encoding).unwrap();
    assert!(remote.check(&token).await.is_err());
    assert_eq!(
        (
            attacker.jwks_requests(),
            attacker.discovery_requests(),
            attacker.other_requests()
        ),
        (0, 0, 0),
        "only the configured URL is ever fetched"
    );
}

#[tokio::test]
async fn an_iss_array_is_refused_even_when_it_holds_the_issuer() {
    let ca = TestCa::new();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = Idp::start(&ca, &[&key]).await;
    let remote = jwks(&idp, &ca, Algorithm::ES256, 30);
    remote.until(KeySourceState::Fresh).await;
    let mut array = claims("eve");
    array["iss"] = json!(["https://evil.example/", ISSUER]);
    assert_eq!(
        remote.check(&key.sign(&array)).await,
        Err(AuthFailure::InvalidToken(InvalidReason::MissingClaim(
            "iss"
        )))
    );
}
