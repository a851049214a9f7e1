//! One client connection: TCP connect, WebSocket upgrade with the token offered as a
//! subprotocol, the wait for `connection_established`, and reading JSON frames under a
//! deadline. Every failure is mapped to a stable error kind so reports can count them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use portcullis::wire::{ClientMessage, PROTOCOL};

use crate::target::Target;

pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection or a read failed, coarse enough to count.
#[derive(Debug)]
pub enum ConnError {
    Refused,
    Connect(std::io::ErrorKind),
    Status(u16),
    Closed(Option<u16>),
    Timeout,
    Protocol(&'static str),
    Ws(String),
}

impl ConnError {
    /// The key this error is counted under in reports.
    pub fn kind(&self) -> String {
        match self {
            ConnError::Refused => "refused".into(),
            ConnError::Connect(k) => format!("connect_{k:?}"),
            ConnError::Status(s) => format!("handshake_status_{s}"),
            ConnError::Closed(Some(c)) => format!("close_{c}"),
            ConnError::Closed(None) => "closed_without_code".into(),
            ConnError::Timeout => "timeout".into(),
            ConnError::Protocol(p) => format!("protocol_{p}"),
            // The error's leading phrase, e.g. `ws_space_limit_exceeded`, keeps kinds few.
            ConnError::Ws(e) => {
                let head = e.split(':').next().unwrap_or("").trim();
                format!("ws_{}", head.to_lowercase().replace(' ', "_"))
            }
        }
    }
}

fn map_ws_err(e: WsError) -> ConnError {
    match e {
        WsError::Http(resp) => ConnError::Status(resp.status().as_u16()),
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
            ConnError::Protocol("subprotocol_not_selected")
        }
        WsError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ConnError::Refused,
        WsError::Io(io) => ConnError::Connect(io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => ConnError::Closed(None),
        other => ConnError::Ws(other.to_string()),
    }
}

pub struct Opened {
    pub ws: Ws,
    /// Time from the start of TCP connect to receipt of `connection_established`.
    pub elapsed: Duration,
    /// False when the server selected something other than `portcullis.v1`.
    pub subprotocol_ok: bool,
}

/// Opens one authenticated connection, bounded by `timeout`.
pub async fn open(target: &Target, token: &str, timeout: Duration) -> Result<Opened, ConnError> {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    match tokio::time::timeout_at(deadline, upgrade(target, token)).await {
        Err(_) => Err(ConnError::Timeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok((mut ws, subprotocol_ok))) => {
            // The first frame decides: `connection_established`, or an `error` then a close.
            loop {
                let v = next_json(&mut ws, deadline).await?;
                match v["type"].as_str() {
                    Some("connection_established") => {
                        return Ok(Opened {
                            ws,
                            elapsed: t0.elapsed(),
                            subprotocol_ok,
                        });
                    }
                    // The close that follows carries the code we count.
                    Some("error") => continue,
                    _ => return Err(ConnError::Protocol("unexpected_first_message")),
                }
            }
        }
    }
}

async fn upgrade(target: &Target, token: &str) -> Result<(Ws, bool), ConnError> {
    let stream = TcpStream::connect(target.addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ConnError::Refused
        } else {
            ConnError::Connect(e.kind())
        }
    })?;
    // Small JSON frames: Nagle would only add latency to every measurement.
    let _ = stream.set_nodelay(true);
    let mut req = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnError::Ws(e.to_string()))?;
    let offer = HeaderValue::from_str(&format!("{PROTOCOL}, jwt.{token}"))
        .map_err(|_| ConnError::Protocol("token_not_header_safe"))?;
    req.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, offer);
    let (ws, resp) = client_async_with_config(req, stream, None)
        .await
        .map_err(map_ws_err)?;
    let selected = resp
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    Ok((ws, selected == Some(PROTOCOL)))
}

/// The next JSON text frame, skipping control frames; a close becomes `Closed(code)`.
pub async fn next_json(ws: &mut Ws, deadline: Instant) -> Result<Value, ConnError> {
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(ConnError::Timeout),
            Ok(None) => return Err(ConnError::Closed(None)),
            Ok(Some(Err(e))) => return Err(map_ws_err(e)),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|_| ConnError::Protocol("invalid_json"));
            }
            Message::Close(frame) => return Err(ConnError::Closed(frame.map(|f| f.code.into()))),
            // Pings are answered by tungstenite itself on the next read or write.
            _ => continue,
        }
    }
}

pub async fn send(ws: &mut Ws, message: &ClientMessage) -> Result<(), ConnError> {
    ws.send(Message::Text(message.to_text().into()))
        .await
        .map_err(map_ws_err)
}

/// Closes politely, bounded so a server that never answers cannot stall a workload.
pub async fn close(mut ws: Ws) {
    let bound = Duration::from_secs(1);
    let _ = tokio::time::timeout(bound, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
