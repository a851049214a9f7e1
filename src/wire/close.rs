//! Every WebSocket close code the server sends (docs/PROTOCOL.md §3), and the one place a
//! failed read of the socket becomes one (RFC 6455 §7.4.1).

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

/// A close code the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1001: the server is shutting down (reconnect to another node or later).
    GoingAway,
    /// 1002: a frame broke RFC 6455 (unmasked, reserved bits, unknown opcode, oversized
    /// control frame), or no pong came within the pong timeout.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1008: a message before `auth` where the handshake should have carried the token.
    PolicyViolation,
    /// 1009: a message over `websocket.max_message_bytes`.
    MessageTooBig,
    /// 1013: a dependency (store, key set) is not ready; retry later.
    TryAgainLater,
    /// 4401: no valid token (missing, invalid, expired, conflicting).
    Unauthorized,
    /// 4403: a refresh token for another user.
    Forbidden,
    /// 4408: no `auth` message within `auth.first_message_timeout_ms`.
    AuthTimeout,
    /// 4429: the node's connection cap, or authentication rate limit.
    TooManyConnections,
    /// 4509: a slow consumer (its queue did not drain in time).
    SlowConsumer,
}

impl CloseCode {
    /// Every code, for documentation checks.
    pub const ALL: [CloseCode; 11] = [
        Self::GoingAway,
        Self::ProtocolError,
        Self::InvalidPayload,
        Self::PolicyViolation,
        Self::MessageTooBig,
        Self::TryAgainLater,
        Self::Unauthorized,
        Self::Forbidden,
        Self::AuthTimeout,
        Self::TooManyConnections,
        Self::SlowConsumer,
    ];

    /// The code a number stands for, when the server sends it.
    pub fn from_code(n: u16) -> Option<CloseCode> {
        Self::ALL.into_iter().find(|c| c.code() == n)
    }

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::TryAgainLater => 1013,
            Self::Unauthorized => 4401,
            Self::Forbidden => 4403,
            Self::AuthTimeout => 4408,
            Self::TooManyConnections => 4429,
            Self::SlowConsumer => 4509,
        }
    }
}

impl From<CloseCode> for u16 {
    fn from(c: CloseCode) -> u16 {
        c.code()
    }
}

/// What a failed socket read means for the connection.
pub trait ReadFailure: std::fmt::Display {
    /// The close code the client earned, or `None` when the connection is simply gone.
    fn close_code(&self) -> Option<CloseCode>;
}

impl ReadFailure for WsError {
    fn close_code(&self) -> Option<CloseCode> {
        match self {
            WsError::Utf8(_) => Some(CloseCode::InvalidPayload),
            WsError::Capacity(_) => Some(CloseCode::MessageTooBig),
            WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
                | ProtocolError::ReceivedAfterClosing
                | ProtocolError::SendAfterClosing,
            ) => None,
            WsError::Protocol(_) => Some(CloseCode::ProtocolError),
            _ => None,
        }
    }
}
