//! The WebSocket upgrade, done here rather than with `warp::ws()` so the socket gets our
//! own tungstenite configuration: warp does not expose the read buffer size, and its
//! 128 KiB default costs more than 128 KiB per idle connection. The handshake itself is
//! RFC 6455 §4.2: GET with `Connection: upgrade`, `Upgrade: websocket`, version 13 and a
//! key, answered with 101 and `Sec-WebSocket-Accept`.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

/// The socket type sessions run on.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Bytes read from the socket at a time. Chat frames are small; larger ones are read in
/// several chunks, so this bounds idle memory, not message size.
pub const READ_BUFFER: usize = 1024;

/// The `Sec-WebSocket-Key` of a valid upgrade request, or `None` when the request is not a
/// WebSocket upgrade (it then gets the 426 answer).
pub fn websocket_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v == "13");
    (has("connection", "upgrade") && has("upgrade", "websocket") && version_ok)
        .then(|| headers.get("sec-websocket-key"))
        .flatten()
}

/// Bytes of outgoing frames collected before tungstenite writes them to the socket; the
/// rest goes out at the flush that ends each burst, so a burst of events costs one send
/// instead of one per frame. The buffer keeps the capacity of the largest burst, which
/// bounds it per connection.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The socket configuration: small buffers, frames capped at `max_frame_bytes`.
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_frame_bytes.saturating_mul(4).max(64 * 1024))
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Answers 101 and runs `session` on the upgraded socket in its own task.
pub fn accept<F, Fut>(
    key: &HeaderValue,
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    protocol: Option<&str>,
    session: F,
) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                session(socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    let mut resp = Response::default();
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(p) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert("sec-websocket-protocol", p);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_upgrade_requests_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert!(websocket_key(&h).is_some());
        // RFC 6455's example key and accept value.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        h.insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert!(websocket_key(&h).is_none());
    }
}
