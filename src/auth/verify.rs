//! Token verification: the allow-listed algorithm, the key (local, or from the remote key
//! source, which may have to be refetched for an unknown `kid`), the signature, then the
//! claims (`exp` and `sub` required, `nbf`, `iss` a single string, `iss`/`aud` equal to the
//! configured ones) against a caller-given `now`, so expiry is testable without sleeping.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use std::sync::Arc;

use jsonwebtoken::{DecodingKey, Header};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::extract::FoundToken;
use super::failure::{AuthFailure, InvalidReason};
use super::keys::{AuthSetupError, KeySet};
use super::remote::{KeyCheckError, KeySourceMetrics, KeySourceStatus, RemoteKeys};
use super::{AuthMethod, Identity};
use crate::config::{JwtConfig, KeySource};

/// Verifies tokens with keys and a `Validation` built once at boot.
#[derive(Debug)]
pub struct Verifier {
    keys: Keys,
    validation: Validation,
    leeway_s: i64,
    max_token_bytes: usize,
}

#[derive(Debug)]
enum Keys {
    /// Read once at boot.
    Local(KeySet),
    /// Fetched over HTTPS and refreshed in the background once [`Verifier::start`] ran.
    Remote(Arc<RemoteKeys>),
}

/// The claims portcullis reads; everything else in the token is ignored. Values stay
/// untyped here because jsonwebtoken deserializes claims before its required-claim check:
/// a typed `sub: String` would turn a missing `sub` into a generic JSON error.
#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    iss: Option<Value>,
}

impl Verifier {
    /// Builds the key source and the validation rules from `auth.jwt`, without touching
    /// the network: a remote key source only gets its HTTPS client here and fetches once
    /// [`Verifier::start`] runs. Every error carries its config key, code and hint
    /// ([`AuthSetupError::finding`]).
    pub fn from_config(config: &JwtConfig) -> Result<Verifier, AuthSetupError> {
        let keys = match &config.key {
            KeySource::Remote(remote) => Keys::Remote(Arc::new(RemoteKeys::new(config, remote)?)),
            _ => Keys::Local(KeySet::load(config)?),
        };
        // Start from a one-algorithm Validation and replace its list: `new` needs a seed.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = config.algorithms.clone();
        let mut required = vec!["exp", "sub"];
        // jsonwebtoken reads the system clock for exp/nbf; we check them against the `now`
        // we are given instead (see `check_times`), so its own time checks are off.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without a configured audience there is nothing to compare `aud` with; the
        // validator requires one in staging and production.
        validation.validate_aud = config.audience.is_some();
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.required_spec_claims = required.into_iter().map(String::from).collect();
        Ok(Verifier {
            keys,
            validation,
            // The schema caps leeway at 300 s; the cap here only keeps the TimeDelta
            // arithmetic from overflowing if a Config is ever built some other way.
            leeway_s: i64::try_from(config.leeway_s.min(86_400)).unwrap_or(86_400),
            max_token_bytes: config.max_token_bytes,
        })
    }

    /// Begins fetching a remote key set in the background (at once, then on its refresh
    /// schedule) until `shutdown`; `None` for local keys, which need nothing.
    pub fn start(&self, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
        match &self.keys {
            Keys::Local(_) => None,
            Keys::Remote(remote) => Some(remote.start(shutdown)),
        }
    }

    /// One fetch of the remote key source outside its schedule, for `check --online`:
    /// the number of usable keys, or why there are none (`None` for local keys).
    pub async fn check_key_source(&self) -> Option<Result<usize, KeyCheckError>> {
        match &self.keys {
            Keys::Local(_) => None,
            Keys::Remote(remote) => Some(remote.fetch_once().await),
        }
    }

    /// The remote key source's state for `ready` (`None` for local keys).
    pub fn key_source_status(&self) -> Option<KeySourceStatus> {
        match &self.keys {
            Keys::Local(_) => None,
            Keys::Remote(remote) => Some(remote.status()),
        }
    }

    /// The remote key source's metrics, to register with the process metrics.
    pub fn key_source_metrics(&self) -> Option<&KeySourceMetrics> {
        match &self.keys {
            Keys::Local(_) => None,
            Keys::Remote(remote) => Some(remote.metrics()),
        }
    }

    /// The keys read at boot (`None` for a remote key source).
    pub fn keys(&self) -> Option<&KeySet> {
        match &self.keys {
            Keys::Local(keys) => Some(keys),
            Keys::Remote(_) => None,
        }
    }

    /// Verifies one compact JWT with the keys known now; never waits. With a remote key
    /// source, a `kid` not known yet starts a refetch (when one is allowed) and is refused
    /// as `AUTH_UNAVAILABLE`, retryable. The length cap is checked before any parsing.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthFailure> {
        let header = self.header(token)?;
        match &self.keys {
            Keys::Local(keys) => self.claims(token, keys.select(&header)?, now),
            Keys::Remote(remote) => {
                let keys = remote.keys_now(&header)?;
                self.claims(token, keys.select(&header)?, now)
            }
        }
    }

    /// Verifies one compact JWT; with a remote key source, a `kid` not known yet waits for
    /// one refetch when the refetch interval allows it (see `auth::remote`).
    pub async fn verify_async(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthFailure> {
        let header = self.header(token)?;
        match &self.keys {
            Keys::Local(keys) => self.claims(token, keys.select(&header)?, now),
            Keys::Remote(remote) => {
                let keys = remote.keys(&header).await?;
                self.claims(token, keys.select(&header)?, now)
            }
        }
    }

    /// [`Verifier::verify_found_async`] without waiting for a refetch (see
    /// [`Verifier::verify`]).
    pub fn verify_found(
        &self,
        found: &[FoundToken],
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthFailure> {
        let mut chosen = Chosen::default();
        for entry in found {
            chosen.add(entry, self.verify(entry.token()?, now)?)?;
        }
        chosen.finish()
    }

    /// Verifies every token [`super::extract_tokens`] (or [`super::first_message_token`])
    /// found: no token is `NO_TOKEN`, the first failure in protocol order wins, and valid
    /// tokens naming different subjects are `CONFLICTING_TOKENS`. The identity records the
    /// first source.
    pub async fn verify_found_async(
        &self,
        found: &[FoundToken],
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthFailure> {
        let mut chosen = Chosen::default();
        for entry in found {
            chosen.add(entry, self.verify_async(entry.token()?, now).await?)?;
        }
        chosen.finish()
    }

    /// The checks before any key is chosen: length cap, a parseable header, an allowed
    /// algorithm, no `crit`.
    fn header(&self, token: &str) -> Result<Header, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::TokenTooLarge {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthFailure::InvalidToken(header_failure(token)))?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthFailure::InvalidToken(
                InvalidReason::AlgorithmNotAllowed,
            ));
        }
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood, and we
        // understand none.
        if header.crit.is_some() {
            return Err(AuthFailure::InvalidToken(InvalidReason::Malformed));
        }
        Ok(header)
    }

    /// The signature with `key`, then the claims.
    fn claims(
        &self,
        token: &str,
        key: &DecodingKey,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthFailure> {
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| AuthFailure::InvalidToken(reason(error.kind())))?
            .claims;
        let missing = |claim| AuthFailure::InvalidToken(InvalidReason::MissingClaim(claim));
        // RFC 7519 §4.1.1: `iss` is one StringOrURI. jsonwebtoken also accepts an array
        // holding the configured issuer among others; a token naming several is refused.
        if claims.iss.as_ref().is_some_and(|iss| !iss.is_string()) {
            return Err(missing("iss"));
        }
        let user_id = match claims.sub {
            Some(Value::String(sub)) if !sub.is_empty() => sub,
            _ => return Err(missing("sub")),
        };
        let expires_at = numeric_date(claims.exp.as_ref()).ok_or(missing("exp"))?;
        let not_before = match claims.nbf {
            None => None,
            Some(nbf) => Some(numeric_date(Some(&nbf)).ok_or(missing("nbf"))?),
        };
        self.check_times(expires_at, not_before, now)?;
        Ok(Identity {
            user_id,
            expires_at: Some(expires_at),
            issued_at: numeric_date(claims.iat.as_ref()),
            method: AuthMethod::Jwt { source: None },
        })
    }

    /// `exp` is exclusive (RFC 7519 §4.1.4), `nbf` inclusive; both stretched by the leeway.
    fn check_times(
        &self,
        expires_at: DateTime<Utc>,
        not_before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthFailure> {
        let leeway = TimeDelta::seconds(self.leeway_s);
        if now >= expires_at + leeway {
            return Err(AuthFailure::TokenExpired);
        }
        if not_before.is_some_and(|nbf| nbf > now + leeway) {
            return Err(AuthFailure::InvalidToken(InvalidReason::NotYetValid));
        }
        Ok(())
    }
}

/// The identity of the first token, and the check that later ones name the same subject.
#[derive(Default)]
struct Chosen(Option<Identity>);

impl Chosen {
    fn add(&mut self, entry: &FoundToken, mut identity: Identity) -> Result<(), AuthFailure> {
        match &self.0 {
            None => {
                identity.method = AuthMethod::Jwt {
                    source: Some(entry.source),
                };
                self.0 = Some(identity);
            }
            Some(first) if first.user_id != identity.user_id => {
                return Err(AuthFailure::ConflictingTokens);
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Identity, AuthFailure> {
        self.0.ok_or(AuthFailure::NoToken)
    }
}

/// A NumericDate: seconds since the epoch, possibly fractional (RFC 7519 §2). Fractions
/// are dropped: `exp` gets stricter and `nbf` laxer by under a second, which no issuer's
/// clock is precise enough to notice.
fn numeric_date(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let seconds = value?.as_f64()?;
    if !seconds.is_finite() {
        return None;
    }
    DateTime::from_timestamp(seconds.floor() as i64, 0)
}

/// A header jsonwebtoken cannot parse is usually well-formed JSON naming an algorithm it
/// does not implement (`none` above all); say so rather than "malformed".
fn header_failure(token: &str) -> InvalidReason {
    let unknown_alg = token
        .split('.')
        .next()
        .and_then(|part| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|header| header.get("alg")?.as_str().map(str::to_owned))
        .is_some_and(|alg| alg.parse::<Algorithm>().is_err());
    if unknown_alg {
        InvalidReason::AlgorithmNotAllowed
    } else {
        InvalidReason::Malformed
    }
}

fn reason(kind: &ErrorKind) -> InvalidReason {
    match kind {
        ErrorKind::InvalidSignature => InvalidReason::BadSignature,
        ErrorKind::InvalidAlgorithm => InvalidReason::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            InvalidReason::MissingClaim(claim_name(claim))
        }
        ErrorKind::InvalidIssuer => InvalidReason::IssuerMismatch,
        ErrorKind::InvalidAudience => InvalidReason::AudienceMismatch,
        ErrorKind::ImmatureSignature => InvalidReason::NotYetValid,
        _ => InvalidReason::Malformed,
    }
}

/// Maps to a static name so the failure owns no text derived from the token.
fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "sub" => "sub",
        "iss" => "iss",
        "aud" => "aud",
        "nbf" => "nbf",
        _ => "unknown",
    }
}
