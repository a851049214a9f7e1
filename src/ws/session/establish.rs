//! Before a connection is open: authentication finished (first-message auth, or the
//! refusal decided at the handshake), the store checked, the per-user connection cap
//! taken, and the `connection_established` message. A refusal is an `error` message and
//! a close frame, after which the client's close is awaited (bounded).

use chrono::Utc;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{CLOSE_LINGER, SessionDeps, discard_until_close};
use crate::auth::{AuthFailure, Identity, first_message_token};
use crate::config::{AuthMode, RejectAt};
use crate::store::Store;
use crate::wire::server;
use crate::wire::{CloseCode, ErrorCode};
use crate::ws::frames;
use crate::ws::handshake::{self, AuthState};

/// Sends one message and a close frame before the session proper exists, then waits
/// (bounded) for the client's close frame.
async fn refuse<S, E, T>(
    socket: &mut S,
    body: String,
    code: CloseCode,
    reason: &'static str,
) -> Option<T>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let _ = socket.send(Message::text(body)).await;
    let _ = socket.send(frames::close(code, reason)).await;
    let _ = tokio::time::timeout(CLOSE_LINGER, discard_until_close(socket)).await;
    let _ = socket.close().await;
    None
}

/// Refuses with an authentication failure's `error` message and close code.
async fn refuse_auth<S, E, T>(socket: &mut S, f: &AuthFailure) -> Option<T>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    refuse(
        socket,
        f.error_message().to_string(),
        f.close_code(),
        "authentication failed",
    )
    .await
}

/// Refuses a connection over the user's cap (`websocket.max_connections_per_user`).
pub(super) async fn refuse_user_limit<S, E>(deps: &SessionDeps, socket: &mut S)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let cap = deps.websocket.max_connections_per_user.unwrap_or(0);
    let message = format!(
        "this user already holds {cap} open connections (websocket.max_connections_per_user); close one, then retry"
    );
    let body = server::error(
        ErrorCode::UserConnectionLimit.as_str(),
        &message,
        None,
        true,
    );
    let _: Option<()> = refuse(
        socket,
        body,
        CloseCode::TooManyConnections,
        "user connection limit",
    )
    .await;
}

/// Reads text frames until one arrives (pings and pongs are skipped).
async fn next_text<St, E>(stream: &mut St) -> Option<Result<String, ()>>
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { return None };
        if msg.is_close() {
            return None;
        }
        if msg.is_text() {
            return Some(Ok(msg.to_text().unwrap_or_default().to_string()));
        }
        if msg.is_binary() {
            return Some(Err(()));
        }
    }
    None
}

/// Finishes authentication (first-message auth or the refusal decided at the handshake)
/// and checks the store; `None` when the connection was refused and closed.
pub(super) async fn establish<S, E>(
    deps: &SessionDeps,
    socket: &mut S,
    state: AuthState,
    remote: Option<std::net::SocketAddr>,
) -> Option<(Identity, Store)>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let identity = match state {
        AuthState::Authenticated(id) => id,
        AuthState::Failed(f) => {
            return refuse_auth(socket, &f).await;
        }
        AuthState::ConnectionLimit => {
            let (code, msg) = handshake::CONNECTION_LIMIT;
            return refuse(
                socket,
                server::error(code, msg, None, true),
                CloseCode::TooManyConnections,
                "connection limit",
            )
            .await;
        }
        AuthState::Unavailable(code, msg) => {
            return refuse(
                socket,
                server::error(code, msg, None, true),
                CloseCode::TryAgainLater,
                "try again later",
            )
            .await;
        }
        AuthState::AwaitFirstMessage => first_message(deps, socket, remote).await?,
    };
    let Some(store) = deps.store.get().cloned() else {
        return refuse(
            socket,
            server::error(
                ErrorCode::StoreUnavailable.as_str(),
                "the message store is not reachable",
                None,
                true,
            ),
            CloseCode::TryAgainLater,
            "try again later",
        )
        .await;
    };
    Some((identity, store))
}

/// First-message auth: the first text frame must be `{"type":"auth","token":…}` within
/// `auth.first_message_timeout_ms`; `None` when the connection was refused and closed.
async fn first_message<S, E>(
    deps: &SessionDeps,
    socket: &mut S,
    remote: Option<std::net::SocketAddr>,
) -> Option<Identity>
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
{
    let wait = tokio::time::timeout(deps.auth.first_message_timeout, next_text(socket)).await;
    let result = match wait {
        Err(_) => Err(AuthFailure::AuthTimeout),
        Ok(None) => return None,
        Ok(Some(Err(()))) => Err(AuthFailure::NoToken),
        Ok(Some(Ok(text))) => match (first_message_token(&text), &deps.verifier) {
            (Ok(found), Some(v)) => v.verify_found_async(&[found], Utc::now()).await,
            (Ok(_), None) => Err(AuthFailure::AuthUnavailable("no verifier configured")),
            (Err(f), _) => Err(f),
        },
    };
    match result {
        Ok(id) => Some(id),
        Err(AuthFailure::NoToken) if deps.auth.reject_at == RejectAt::Handshake => {
            deps.metrics.auth_failure(ErrorCode::NoToken.as_str());
            handshake::refused(ErrorCode::PolicyViolation.as_str(), remote);
            let body = server::error(
                ErrorCode::PolicyViolation.as_str(),
                "the first message must be {\"type\":\"auth\",\"token\":…}",
                None,
                false,
            );
            refuse(
                socket,
                body,
                CloseCode::PolicyViolation,
                "message before auth",
            )
            .await
        }
        Err(f) => {
            deps.metrics.auth_failure(f.code());
            handshake::refused(f.code(), remote);
            refuse_auth(socket, &f).await
        }
    }
}

/// The `connection_established` message, serialized at once: a `Value` kept in the
/// connection's future would cost memory per connection.
pub(super) fn established(
    deps: &SessionDeps,
    conn_id: &str,
    identity: &Identity,
    auth: &str,
) -> String {
    let s = &deps.websocket;
    server::connection_established(&server::Established {
        connection_id: conn_id,
        user_id: &identity.user_id,
        auth,
        heartbeat_ms: s.heartbeat.as_millis() as u64,
        token_expires_at: identity.expires_at.as_ref(),
        max_message_bytes: s.max_message_bytes,
        messages_per_minute: s.messages_per_minute,
    })
}

/// How the connection authenticated, as `connection_established` and the log say it.
pub(super) fn auth_label(deps: &SessionDeps, identity: &Identity) -> String {
    if deps.auth.mode == AuthMode::None {
        "none".to_string()
    } else {
        identity.method.label()
    }
}
