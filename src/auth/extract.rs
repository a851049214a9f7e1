//! Finding tokens in an upgrade request, in protocol order (docs/PROTOCOL.md §1): the
//! `Authorization` header, the `jwt.<token>` subprotocol, the `access_token` query
//! parameter; and in a first `auth` message. Also decides which subprotocol the upgrade
//! response selects, since that is needed even when authentication then fails.
//!
//! Pure functions over headers and strings: nothing here verifies or logs.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, header};

use super::failure::{AuthFailure, InvalidReason};
use crate::config::TokenSource;
use crate::wire::PROTOCOL;

const TOKEN_PREFIX: &str = "jwt.";

/// A token found in one source, or why that source's value is unusable. Its `Debug` never
/// shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// Where it was found.
    pub source: TokenSource,
    token: Result<String, InvalidReason>,
}

impl FoundToken {
    /// A usable token from `source`.
    pub fn new(source: TokenSource, token: impl Into<String>) -> FoundToken {
        FoundToken {
            source,
            token: Ok(token.into()),
        }
    }

    /// The token, or `INVALID_TOKEN` when the source held a malformed value.
    pub fn token(&self) -> Result<&str, AuthFailure> {
        self.token
            .as_deref()
            .map_err(|r| AuthFailure::InvalidToken(*r))
    }
}

impl fmt::Debug for FoundToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token: &dyn fmt::Debug = match &self.token {
            Ok(_) => &"[redacted]",
            Err(reason) => reason,
        };
        f.debug_struct("FoundToken")
            .field("source", &self.source)
            .field("token", token)
            .finish()
    }
}

/// The `Sec-WebSocket-Protocol` value to answer with. When it is a `jwt.<token>` entry,
/// `Debug` hides it; put it in the response header and nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct SelectedSubprotocol(String);

impl SelectedSubprotocol {
    /// The exact value for the response header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SelectedSubprotocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.starts_with(TOKEN_PREFIX) {
            true => f.write_str("jwt.[redacted]"),
            false => write!(f, "{:?}", self.0),
        }
    }
}

/// Something the caller should log (the text holds no token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubprotocolWarning {
    /// Only `jwt.<token>` was offered, so that entry is echoed back.
    #[error(
        "client offered a jwt.<token> subprotocol without portcullis.v1; echoing the token entry"
    )]
    OnlyTokenEntryOffered,
}

/// What [`extract_tokens`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// Tokens (or malformed values) from enabled sources, in protocol order.
    pub found: Vec<FoundToken>,
    /// The subprotocol to select, if any.
    pub subprotocol: Option<SelectedSubprotocol>,
    /// A warning for the caller to log.
    pub warning: Option<SubprotocolWarning>,
}

/// Collects tokens from the enabled `sources` (a disabled source is not even looked at).
pub fn extract_tokens(
    headers: &HeaderMap,
    query: Option<&str>,
    sources: &[TokenSource],
) -> Extracted {
    let enabled = |source| sources.contains(&source);
    let mut out = Extracted::default();
    if enabled(TokenSource::Header) {
        out.found.extend(authorization(headers));
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let token_entries: Vec<&str> = match enabled(TokenSource::Subprotocol) {
        true => offered
            .iter()
            .copied()
            .filter(|p| p.starts_with(TOKEN_PREFIX))
            .collect(),
        false => Vec::new(),
    };
    for entry in &token_entries {
        out.found.push(FoundToken {
            source: TokenSource::Subprotocol,
            token: decode_base64url_token(&entry[TOKEN_PREFIX.len()..]),
        });
    }
    if offered.contains(&PROTOCOL) {
        out.subprotocol = Some(SelectedSubprotocol(PROTOCOL.to_owned()));
    } else if let Some(entry) = token_entries.first() {
        // Browsers fail the handshake unless one offered entry is selected.
        out.subprotocol = Some(SelectedSubprotocol((*entry).to_owned()));
        out.warning = Some(SubprotocolWarning::OnlyTokenEntryOffered);
    }
    if enabled(TokenSource::Query) {
        for (key, value) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
        {
            if percent_decode(key).as_deref() == Some("access_token") {
                out.found.push(FoundToken {
                    source: TokenSource::Query,
                    token: percent_decode(value).ok_or(InvalidReason::Malformed),
                });
            }
        }
    }
    out
}

/// Reads `{"type":"auth","token":"…"}`. Any other first message is `NO_TOKEN` (4401, as
/// docs/PROTOCOL.md §1 requires); an `auth` message without a string token is `INVALID_TOKEN`.
pub fn first_message_token(text: &str) -> Result<FoundToken, AuthFailure> {
    let message: serde_json::Value =
        serde_json::from_str(text).map_err(|_| AuthFailure::NoToken)?;
    if message.get("type").and_then(|t| t.as_str()) != Some("auth") {
        return Err(AuthFailure::NoToken);
    }
    match message.get("token").and_then(|t| t.as_str()) {
        Some(token) => Ok(FoundToken::new(TokenSource::FirstMessage, token)),
        None => Err(AuthFailure::InvalidToken(InvalidReason::Malformed)),
    }
}

/// The token inside a `jwt.` subprotocol entry: a compact JWT as is (base64url has no `.`),
/// otherwise base64url of one, padded or not.
pub fn decode_base64url_token(value: &str) -> Result<String, InvalidReason> {
    if value.contains('.') {
        return Ok(value.to_owned());
    }
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|token| token.contains('.'))
        .ok_or(InvalidReason::Malformed)
}

/// `Authorization: Bearer <token>`; anything else present in that header is malformed, and
/// so are two such headers (which one would win is not ours to guess).
fn authorization(headers: &HeaderMap) -> Option<FoundToken> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next()?;
    let token = match (first.to_str(), values.next()) {
        (Ok(value), None) => bearer(value).ok_or(InvalidReason::MalformedAuthorization),
        _ => Err(InvalidReason::MalformedAuthorization),
    };
    Some(FoundToken {
        source: TokenSource::Header,
        token,
    })
}

fn bearer(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.chars().all(token68))
        .then(|| token.to_owned())
}

/// `application/x-www-form-urlencoded` decoding of one key or value; `None` when the
/// escapes are broken or the bytes are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let hex = [input.next()?, input.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).ok()
}
