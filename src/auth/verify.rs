//! Token verification: the allow-listed algorithm, the key, the signature, then the claims
//! (`exp` and `sub` required, `nbf`, `iss`/`aud` when configured) against a caller-given
//! `now`, so expiry is testable without sleeping.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::extract::FoundToken;
use super::failure::{AuthFailure, InvalidReason};
use super::keys::{AuthSetupError, KeySet};
use super::{AuthMethod, Identity};
use crate::config::JwtConfig;

/// Verifies tokens with keys and a `Validation` built once at boot.
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    validation: Validation,
    leeway_s: i64,
    max_token_bytes: usize,
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
}

impl Verifier {
    /// Loads the key set and builds the validation rules from `auth.jwt`.
    pub fn from_config(config: &JwtConfig) -> Result<Verifier, AuthSetupError> {
        let keys = KeySet::load(config)?;
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

    /// The loaded keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Verifies one compact JWT. The length cap is checked before any parsing.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthFailure> {
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
        let key = self.keys.select(&header)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| AuthFailure::InvalidToken(reason(error.kind())))?
            .claims;
        let missing = |claim| AuthFailure::InvalidToken(InvalidReason::MissingClaim(claim));
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

    /// Verifies every token [`super::extract_tokens`] (or [`super::first_message_token`])
    /// found: no token is `NO_TOKEN`, the first failure in protocol order wins, and valid
    /// tokens naming different subjects are `CONFLICTING_TOKENS`. The identity records the
    /// first source.
    pub fn verify_found(
        &self,
        found: &[FoundToken],
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthFailure> {
        let mut chosen: Option<Identity> = None;
        for entry in found {
            let mut identity = self.verify(entry.token()?, now)?;
            match &chosen {
                None => {
                    identity.method = AuthMethod::Jwt {
                        source: Some(entry.source),
                    };
                    chosen = Some(identity);
                }
                Some(first) if first.user_id != identity.user_id => {
                    return Err(AuthFailure::ConflictingTokens);
                }
                Some(_) => {}
            }
        }
        chosen.ok_or(AuthFailure::NoToken)
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
