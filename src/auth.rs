//! Authentication: who is on the other end of a WebSocket upgrade.
//!
//! Built once at boot from the validated [`crate::config::JwtConfig`]: a [`Verifier`] (its
//! [`KeySet`] or remote key source and its `Validation` are built once, never per request;
//! a remote source fetches in the background once [`Verifier::start`] runs). Per upgrade
//! request the WebSocket layer calls, in order:
//!
//! 1. [`match_bypass`] with the declared bypass rules, the headers and the peer address; a
//!    match is the whole answer ([`Identity::bypass`]).
//! 2. [`extract_tokens`] over the headers and query string with the enabled sources; it also
//!    says which subprotocol to select, which is needed even when auth then fails.
//! 3. [`Verifier::verify_found_async`] on what was extracted, which verifies every token
//!    (awaiting one key refetch for an unknown `kid` where allowed) and refuses tokens for
//!    different subjects.
//!
//! Every refusal is an [`AuthFailure`]; [`AuthFailure::close_code`],
//! [`AuthFailure::handshake_response`] and [`AuthFailure::error_message`] are the one place
//! a failure becomes a close code, an HTTP answer or an `error` message.
//!
//! Architecture invariant: no token or secret is ever formatted into an error, a `Debug`
//! string or a log line by this module.

mod bypass;
mod extract;
mod failure;
mod jwk;
mod keys;
mod mint;
mod remote;
mod verify;

use chrono::{DateTime, Utc};

pub use crate::config::TokenSource;
pub use bypass::match_bypass;
pub use extract::{
    Extracted, FoundToken, SelectedSubprotocol, SubprotocolWarning, decode_base64url_token,
    extract_tokens, first_message_token,
};
pub use failure::{AuthFailure, InvalidReason};
pub use keys::{AuthSetupError, KeySet};
pub use mint::{MintError, MintRequest, mint_for_config, mint_token};
pub use remote::{KeyCheckError, KeySourceMetrics, KeySourceState, KeySourceStatus, check_key_url};
pub use verify::Verifier;

/// How an identity was established; `connection_established.auth` is its [`label`].
///
/// [`label`]: AuthMethod::label
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A verified JWT, with the source it was read from when known.
    Jwt {
        /// Where the token came from (`None` when verified outside extraction).
        source: Option<TokenSource>,
    },
    /// A declared bypass rule, by name.
    Bypass {
        /// The rule's `name`.
        rule: String,
    },
}

impl AuthMethod {
    /// The wire label: `"jwt"` or `"bypass:<rule name>"`.
    pub fn label(&self) -> String {
        match self {
            AuthMethod::Jwt { .. } => "jwt".to_owned(),
            AuthMethod::Bypass { rule } => format!("bypass:{rule}"),
        }
    }
}

/// A verified caller; the connection-scope factory builds the session from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub` (or the bypass rule's `user_id`).
    pub user_id: String,
    /// The token's `exp`; `None` for bypass identities, which do not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// The token's `iat`, when it had one.
    pub issued_at: Option<DateTime<Utc>>,
    /// How the identity was established.
    pub method: AuthMethod,
}

impl Identity {
    /// The identity a matched bypass rule grants.
    pub fn bypass(rule: &crate::config::BypassRule) -> Identity {
        Identity {
            user_id: rule.user_id.clone(),
            expires_at: None,
            issued_at: None,
            method: AuthMethod::Bypass {
                rule: rule.name.clone(),
            },
        }
    }

    /// Accepts `fresh` (from an `auth` message on an open connection) as the refreshed
    /// identity, refusing a token for another user: a connection never changes hands.
    pub fn refresh(&self, fresh: Identity) -> Result<Identity, AuthFailure> {
        if fresh.user_id == self.user_id {
            Ok(fresh)
        } else {
            Err(AuthFailure::Forbidden(
                "a refresh token must be for the same user as the connection",
            ))
        }
    }
}
