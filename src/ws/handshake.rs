//! The decision made before the upgrade: Origin, readiness, connection cap, then the auth
//! chain (bypass rule, header, subprotocol, query), and whether a refusal is an HTTP answer
//! (`reject_at = "handshake"`) or an `error` message and close after the upgrade.

use std::net::SocketAddr;

use tokio::sync::OwnedSemaphorePermit;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;

use crate::app::App;
use crate::auth::{AuthFailure, AuthMethod, Identity, extract_tokens, match_bypass};
use crate::config::{AuthMode, RejectAt, TokenSource};
use crate::refusal::error_reply;
use crate::wire::ErrorCode;

/// Where authentication stands when the socket opens.
pub enum AuthState {
    /// Verified before the upgrade.
    Authenticated(Identity),
    /// Refused; the session sends the `error` message and closes with its code.
    Failed(AuthFailure),
    /// Wait for a first `{"type":"auth"}` message.
    AwaitFirstMessage,
    /// A dependency is not ready: `error` then close 1013.
    Unavailable(&'static str, &'static str),
    /// This node holds `server.max_connections` sockets: `error` then close 4429, with
    /// the code and message a handshake refusal would carry.
    ConnectionLimit,
}

/// What the session starts from.
pub struct PreAuth {
    /// The `Sec-WebSocket-Protocol` answer.
    pub subprotocol: Option<String>,
    /// Auth state.
    pub state: AuthState,
    /// Connection slot, released when the session ends.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Peer address.
    pub remote: Option<SocketAddr>,
}

/// The code and message of a refusal at the connection cap, in both `reject_at` modes.
pub const CONNECTION_LIMIT: (&str, &str) = (
    ErrorCode::ConnectionLimit.as_str(),
    "too many connections on this node; retry later",
);

/// Upgrade or refuse.
pub enum Decision {
    /// Complete the upgrade.
    Accept(PreAuth),
    /// Answer with this HTTP response.
    Refuse(Response),
}

fn failure_response(f: &AuthFailure) -> Response {
    let (parts, body) = f.handshake_response().into_parts();
    Response::from_parts(parts, body.into())
}

/// Logs a refused upgrade with its reason code (never a token or secret).
pub fn refused(reason: &str, remote: Option<SocketAddr>) {
    tracing::info!(reason, remote = ?remote, "refused a WebSocket upgrade");
}

/// Runs the pre-upgrade checks: Origin, token extraction, readiness, connection cap, then
/// the auth chain, in that order.
pub async fn decide(
    app: &App,
    headers: &HeaderMap,
    query: &str,
    remote: Option<SocketAddr>,
) -> Decision {
    let cfg = &app.config;
    let handshake_mode = cfg.auth.reject_at == RejectAt::Handshake;
    if let Some(refusal) = origin_refusal(app, headers, remote) {
        return refusal;
    }
    let extracted = extract_tokens(headers, Some(query), &cfg.auth.token_sources);
    if let Some(w) = extracted.warning {
        tracing::warn!(warning = %w, "subprotocol negotiation");
    }
    let subprotocol = extracted
        .subprotocol
        .as_ref()
        .map(|s| s.as_str().to_string());
    if let Some(refusal) = unready(app, handshake_mode, &subprotocol, remote) {
        return refusal;
    }
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        return connection_limit(app, handshake_mode, &subprotocol, remote);
    };
    let state = authenticate(app, headers, &extracted, remote).await;
    if let AuthState::Failed(f) = &state {
        app.metrics.auth_failure(f.code());
        refused(f.code(), remote);
        if handshake_mode {
            return Decision::Refuse(failure_response(f));
        }
    }
    Decision::Accept(PreAuth {
        subprotocol,
        state,
        permit: Some(permit),
        remote,
    })
}

/// An upgrade without a connection slot, for a session that only sends its refusal.
fn accept_without_permit(
    subprotocol: &Option<String>,
    remote: Option<SocketAddr>,
    state: AuthState,
) -> Decision {
    Decision::Accept(PreAuth {
        subprotocol: subprotocol.clone(),
        state,
        permit: None,
        remote,
    })
}

/// `ORIGIN_NOT_ALLOWED` (403, in both `reject_at` modes): refuses a browser page whose
/// Origin is not listed, so other sites cannot open sockets with the user's cookies.
fn origin_refusal(app: &App, headers: &HeaderMap, remote: Option<SocketAddr>) -> Option<Decision> {
    let cfg = &app.config;
    if !cfg.websocket.allowed_origins.is_empty()
        && let Some(origin) = headers.get("origin")
    {
        let ok = origin
            .to_str()
            .is_ok_and(|o| cfg.websocket.allowed_origins.iter().any(|a| a == o));
        if !ok {
            app.metrics
                .auth_failure(ErrorCode::OriginNotAllowed.as_str());
            // An Origin is public (the browser's page), so it is safe to log.
            tracing::info!(reason = ErrorCode::OriginNotAllowed.as_str(), origin = ?origin, remote = ?remote, "refused a WebSocket upgrade");
            return Some(Decision::Refuse(error_reply(
                StatusCode::FORBIDDEN,
                ErrorCode::OriginNotAllowed.as_str(),
                "this Origin may not open a socket here; it must be listed in websocket.allowed_origins",
            )));
        }
    }
    None
}

/// `SHUTTING_DOWN` / `STORE_UNAVAILABLE`: refuses while the node drains (always over HTTP,
/// so clients reconnect elsewhere) or before the message store is reachable.
fn unready(
    app: &App,
    handshake_mode: bool,
    subprotocol: &Option<String>,
    remote: Option<SocketAddr>,
) -> Option<Decision> {
    if app.is_draining() {
        refused(ErrorCode::ShuttingDown.as_str(), remote);
        return Some(Decision::Refuse(error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown.as_str(),
            "the server is shutting down; reconnect to another node",
        )));
    }
    if app.store.get().is_none() {
        refused(ErrorCode::StoreUnavailable.as_str(), remote);
        return Some(match handshake_mode {
            true => Decision::Refuse(error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable.as_str(),
                "the message store is not reachable yet; retry shortly",
            )),
            false => accept_without_permit(
                subprotocol,
                remote,
                AuthState::Unavailable(
                    ErrorCode::StoreUnavailable.as_str(),
                    "the message store is not reachable yet; retry shortly",
                ),
            ),
        });
    }
    None
}

/// `CONNECTION_LIMIT`: the refusal when all of the node's `server.max_connections` slots
/// are taken (429 at the handshake, else `error` then close 4429), so one node is not
/// overloaded while others have room.
fn connection_limit(
    app: &App,
    handshake_mode: bool,
    subprotocol: &Option<String>,
    remote: Option<SocketAddr>,
) -> Decision {
    app.metrics.auth_failure(CONNECTION_LIMIT.0);
    refused(CONNECTION_LIMIT.0, remote);
    match handshake_mode {
        true => Decision::Refuse(error_reply(
            StatusCode::TOO_MANY_REQUESTS,
            CONNECTION_LIMIT.0,
            CONNECTION_LIMIT.1,
        )),
        false => accept_without_permit(subprotocol, remote, AuthState::ConnectionLimit),
    }
}

async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    extracted: &crate::auth::Extracted,
    remote: Option<SocketAddr>,
) -> AuthState {
    let cfg = &app.config;
    if let Some(rule) = match_bypass(&cfg.auth.bypass, headers, remote.map(|r| r.ip())) {
        app.metrics.bypass_use(&rule.name);
        tracing::warn!(rule = %rule.name, user_id = %rule.user_id, remote = ?remote, "connection admitted by bypass rule");
        return AuthState::Authenticated(Identity::bypass(rule));
    }
    if let Some(rule) = cfg
        .auth
        .bypass
        .iter()
        .find(|r| headers.contains_key(r.header.as_str()))
    {
        // Not a refusal by itself (auth falls through to tokens), but the likely cause of
        // one: say which rule's header came without its secret or from elsewhere.
        tracing::info!(reason = "BYPASS_NOT_MATCHED", rule = %rule.name, remote = ?remote, "bypass header present but the rule did not match; trying tokens");
    }
    if cfg.auth.mode == AuthMode::None {
        return AuthState::Authenticated(Identity {
            user_id: "anonymous".into(),
            expires_at: None,
            issued_at: None,
            method: AuthMethod::Jwt { source: None },
        });
    }
    let Some(verifier) = &app.verifier else {
        return AuthState::Failed(AuthFailure::AuthUnavailable("no verifier configured"));
    };
    match verifier
        .verify_found_async(&extracted.found, chrono::Utc::now())
        .await
    {
        Ok(id) => AuthState::Authenticated(id),
        Err(AuthFailure::NoToken)
            if cfg.auth.token_sources.contains(&TokenSource::FirstMessage) =>
        {
            AuthState::AwaitFirstMessage
        }
        Err(f) => AuthState::Failed(f),
    }
}
