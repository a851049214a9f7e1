//! Small constructors for WebSocket frames the server sends.

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A close frame with a code and a short reason.
pub fn close(code: impl Into<u16>, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code.into()),
        reason: reason.into(),
    }))
}
