//! The socket stages: `upgrade` (101, or the refusal's status and `error_code`
//! explained), `subprotocol` (the server selected `portcullis.v1`), `established` (the
//! first frame is `connection_established`), and `ping`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::explain::{close_hint, code_hint};
use super::http1;
use super::net::{BoxIo, Dialer};
use super::target::Target;
use super::{Fail, Pass};
use crate::config::TokenSource;
use crate::wire::PROTOCOL;
use crate::wire::{CloseCode, ErrorCode};

/// How the probe authenticates one connection.
#[derive(Clone, Copy)]
pub struct Handshake<'a> {
    /// Opens connections.
    pub dialer: &'a Dialer,
    /// The WebSocket URL.
    pub target: &'a Target,
    /// The token, if any.
    pub token: Option<&'a str>,
    /// `Origin`, if any.
    pub origin: Option<&'a str>,
    /// Where the token goes.
    pub source: TokenSource,
    /// The server's `token_sources`, when `client_config` said (else empty).
    pub enabled: &'a [String],
}

impl Handshake<'_> {
    /// When a token was sent where the server does not look: the hint saying so.
    fn source_not_enabled(&self) -> Option<String> {
        let name = self.source.as_str();
        (self.token.is_some() && !self.enabled.is_empty() && !self.enabled.iter().any(|e| e == name)).then(|| {
            format!(
                "the token was sent as `{name}`, which this server does not read (auth.token_sources = {:?}): use --token-source {}, or enable `{name}` in auth.token_sources",
                self.enabled, self.enabled[0]
            )
        })
    }
}

/// An open socket and what the upgrade answered.
pub struct Socket {
    /// The WebSocket.
    pub ws: WebSocketStream<BoxIo>,
    /// `Sec-WebSocket-Protocol` of the 101.
    pub selected: Option<String>,
}

/// How a read of the next JSON frame ended without one.
pub enum Ended {
    /// A close frame (code, reason), or none.
    Closed(Option<(u16, String)>),
    /// No frame in time.
    Timeout,
    /// The connection failed.
    Broken(String),
}

impl Ended {
    /// One line saying how the socket ended.
    pub fn describe(&self) -> String {
        match self {
            Ended::Closed(Some((code, reason))) => format!("closed with {code} {reason:?}"),
            Ended::Closed(None) => "closed without a close frame".into(),
            Ended::Timeout => "no frame in time".into(),
            Ended::Broken(e) => format!("connection failed: {e}"),
        }
    }
}

/// Reads the next text frame as JSON (skipping pings, pongs and binary frames).
pub async fn next_json(ws: &mut WebSocketStream<BoxIo>, within: Duration) -> Result<Value, Ended> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| Ended::Timeout)?;
        match frame {
            None => return Err(Ended::Closed(None)),
            Some(Err(e)) => return Err(Ended::Broken(e.to_string())),
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| Ended::Broken(format!("a text frame that is not JSON ({e})")));
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(Ended::Closed(
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                ));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Sends one JSON message.
pub async fn send(ws: &mut WebSocketStream<BoxIo>, value: &Value) -> Result<(), String> {
    ws.send(Message::text(value.to_string()))
        .await
        .map_err(|e| format!("sending {}: {e}", value["type"]))
}

/// `upgrade`: the WebSocket handshake with the token where `source` says.
pub async fn upgrade(h: Handshake<'_>) -> Result<(Socket, Pass), Fail> {
    let mut io = h
        .dialer
        .dial()
        .await
        .map_err(|e| Fail::new(e, "the server stopped accepting connections"))?;
    let key = generate_key();
    let mut path = h.target.path.clone();
    let mut lines = vec![
        String::new(),
        format!("Host: {}", h.target.authority()),
        "User-Agent: portcullis-probe".into(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {key}"),
        "Sec-WebSocket-Version: 13".into(),
    ];
    let mut protocols = vec![PROTOCOL.to_string()];
    match (h.source, h.token) {
        (TokenSource::Header, Some(t)) => lines.push(format!("Authorization: Bearer {t}")),
        (TokenSource::Subprotocol, Some(t)) => protocols.push(format!("jwt.{t}")),
        (TokenSource::Query, Some(t)) => {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("access_token={t}"));
        }
        _ => {}
    }
    lines[0] = format!("GET {path} HTTP/1.1");
    lines.push(format!("Sec-WebSocket-Protocol: {}", protocols.join(", ")));
    if let Some(origin) = h.origin {
        lines.push(format!("Origin: {origin}"));
    }
    let fail = |e: String| {
        Fail::new(
            e,
            "the server did not answer the upgrade: a proxy in front may not support WebSocket (it must pass Upgrade and Connection on)",
        )
    };
    http1::write_request(&mut io, &lines).await.map_err(fail)?;
    let head = http1::read_head(&mut io).await.map_err(fail)?;
    if head.status != 101 {
        let reply = http1::read_body(&mut io, head).await.map_err(fail)?;
        return Err(refusal(&reply, h));
    }
    if head.header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(Fail::new(
            "101, but Sec-WebSocket-Accept does not match the key sent",
            "something between the client and portcullis answers the upgrade itself: check the proxy",
        ));
    }
    let selected = head.header("sec-websocket-protocol").map(str::to_string);
    let rest = head.rest;
    let ws = WebSocketStream::from_partially_read(io, rest, Role::Client, None).await;
    let detail = format!("101 Switching Protocols (token: {})", source_label(h));
    Ok((Socket { ws, selected }, Pass::new(detail)))
}

fn source_label(h: Handshake<'_>) -> &'static str {
    match h.token {
        None => "none sent",
        Some(_) => match h.source {
            TokenSource::Header => "Authorization header",
            TokenSource::Subprotocol => "jwt.<token> subprotocol",
            TokenSource::Query => "access_token query",
            TokenSource::FirstMessage => "first message, after the upgrade",
        },
    }
}

/// A refused upgrade: the status and the body's `error_code`, explained.
fn refusal(reply: &http1::Reply, h: Handshake<'_>) -> Fail {
    let origin = h.origin;
    let status = reply.status();
    let body = reply.json().unwrap_or(Value::Null);
    let code = body["error_code"].as_str().or(body["code"].as_str());
    let message = body["message"].as_str().unwrap_or("");
    let detail = match code {
        Some(c) => format!("the upgrade was refused: {status} {c}: {message}"),
        None => format!("the upgrade was refused: {status}: {}", reply.snippet()),
    };
    let misplaced = (code == Some(ErrorCode::NoToken.as_str()))
        .then(|| h.source_not_enabled())
        .flatten();
    let hint = misplaced.or_else(|| code.and_then(|c| code_hint(c, origin))).unwrap_or_else(|| match status {
        401 => "the token was refused: check auth.token_sources and auth.jwt".into(),
        403 if origin.is_some() => "403 without a code: an Origin refusal (websocket.allowed_origins) or a proxy's access rule; probe again without --origin to tell them apart".into(),
        403 => "403 without a code: a proxy's or firewall's access rule, not portcullis".into(),
        404 => "nothing upgrades on this path: client.websocket_url must name websocket.path or one of websocket.aliases".into(),
        426 => code_hint(ErrorCode::UpgradeRequired.as_str(), None).unwrap_or_default(),
        429 => "rate or connection limit: server.max_connections".into(),
        503 => "a dependency is not ready, or a proxy has no healthy upstream: GET the ready route".into(),
        502 | 504 => "a proxy could not reach portcullis: check its upstream".into(),
        _ => "see the server's log for why the upgrade was refused".into(),
    });
    Fail::new(detail, hint)
}

/// `subprotocol`: the 101 selected `portcullis.v1`, never the token.
pub fn subprotocol(socket: &Socket, source: TokenSource) -> Result<Pass, Fail> {
    match socket.selected.as_deref() {
        Some(PROTOCOL) => Ok(Pass::new(format!("selected {PROTOCOL}"))),
        Some(p) if p.starts_with("jwt.") => Err(Fail::new(
            "the server selected the jwt.<token> entry: the token is echoed back in a response header (not printed here)",
            format!(
                "docs/PROTOCOL.md §1: the server must select {PROTOCOL} and never echo the token; whatever answers this path (a proxy or an older server) picks the wrong entry"
            ),
        )),
        Some(other) => Err(Fail::new(
            format!("the server selected subprotocol {other:?}, which the client did not offer"),
            format!("browsers fail such a handshake; the server must select {PROTOCOL}"),
        )),
        None => Err(Fail::new(
            format!(
                "the server selected no subprotocol although the client offered {PROTOCOL}{}",
                if source == TokenSource::Subprotocol {
                    " and jwt.<token>"
                } else {
                    ""
                }
            ),
            "browsers that offer subprotocols fail the handshake when none is selected (Chrome: \"Sent non-empty 'Sec-WebSocket-Protocol' header but no response was received\"): the server must answer Sec-WebSocket-Protocol: portcullis.v1",
        )),
    }
}

/// `established`: the first frame is `connection_established` (after an `auth`
/// message for first-message auth).
pub async fn established(
    socket: &mut Socket,
    h: Handshake<'_>,
    within: Duration,
) -> Result<(Value, Pass), Fail> {
    if let (TokenSource::FirstMessage, Some(t)) = (h.source, h.token) {
        send(&mut socket.ws, &json!({"type": "auth", "token": t}))
            .await
            .map_err(|e| Fail::new(e, "the server closed the socket right after the upgrade"))?;
    }
    let first = match next_json(&mut socket.ws, within).await {
        Ok(v) => v,
        Err(Ended::Timeout) => {
            return Err(Fail::new(
                format!(
                    "no frame within {} ms after the upgrade",
                    within.as_millis()
                ),
                "the server waits for something: a first-message auth (auth.token_sources has first_message; use --token-source first_message), or a dependency it awaits before greeting",
            ));
        }
        Err(ended) => return Err(closed_early(&ended, None, h)),
    };
    match first["type"].as_str() {
        Some("connection_established") => Ok((first.clone(), greeting(&first))),
        Some("error") => {
            let code = first["code"].as_str().unwrap_or("?").to_string();
            let after = next_json(&mut socket.ws, within)
                .await
                .err()
                .unwrap_or(Ended::Timeout);
            let message = first["message"].as_str().unwrap_or("");
            Err(closed_early(&after, Some((&code, message)), h))
        }
        _ => Err(Fail::new(
            format!("the first frame is not connection_established: {}", first),
            format!(
                "a {PROTOCOL} server greets every authenticated connection with connection_established first; something else answers this path"
            ),
        )),
    }
}

fn greeting(v: &Value) -> Pass {
    let detail = format!(
        "connection_established: user_id {}, auth {}, connection_id {}, protocol {}, heartbeat_ms {}",
        v["user_id"], v["auth"], v["connection_id"], v["protocol"], v["heartbeat_ms"]
    );
    if v["protocol"].as_str() == Some(PROTOCOL) {
        Pass::new(detail)
    } else {
        Pass::warn(
            detail,
            format!(
                "the server announces protocol {} rather than {PROTOCOL}: client and server versions differ",
                v["protocol"]
            ),
        )
    }
}

/// The socket ended before `connection_established`: the error code and close code
/// explained.
fn closed_early(ended: &Ended, error: Option<(&str, &str)>, h: Handshake<'_>) -> Fail {
    let close = match ended {
        Ended::Closed(Some((code, _))) => Some(*code),
        _ => None,
    };
    let detail = match error {
        Some((code, message)) => format!(
            "before connection_established: error {code} ({message}), then {}",
            ended.describe()
        ),
        None => format!("before connection_established: {}", ended.describe()),
    };
    let token_refusal = matches!(error, Some((c, _)) if [ErrorCode::NoToken.as_str(), ErrorCode::AuthTimeout.as_str()].contains(&c))
        || close.is_some_and(|c| {
            [
                CloseCode::Unauthorized.code(),
                CloseCode::AuthTimeout.code(),
            ]
            .contains(&c)
        });
    let no_token = h.token.is_none() && token_refusal;
    if let Some(hint) = h.source_not_enabled().filter(|_| token_refusal) {
        return Fail::new(detail, hint);
    }
    if no_token {
        return Fail::new(
            detail,
            "the probe sent no token: pass --token T (or PORTCULLIS_PROBE_TOKEN), or --env NAME --sub USER to mint one",
        );
    }
    let hint = error
        .and_then(|(c, _)| code_hint(c, h.origin))
        .or_else(|| close.map(|c| close_hint(c).to_string()))
        .unwrap_or_else(|| "the connection was dropped without a close frame: a proxy timeout or a crashed server; check the server's log".to_string());
    Fail::new(detail, hint)
}

/// `ping`: `{"type":"ping"}` is answered by `pong`.
pub async fn ping(ws: &mut WebSocketStream<BoxIo>, within: Duration) -> Result<Pass, Fail> {
    send(ws, &json!({"type": "ping"}))
        .await
        .map_err(|e| Fail::new(e, "the socket closed after connection_established"))?;
    loop {
        match next_json(ws, within).await {
            Ok(v) if v["type"] == "pong" => {
                return Ok(Pass::new(format!("pong, server_time {}", v["server_time"])));
            }
            Ok(_) => {}
            Err(ended) => {
                let hint = match &ended {
                    Ended::Closed(Some((c, _))) => close_hint(*c),
                    _ => {
                        "an idle socket is cut: a proxy's read timeout shorter than websocket.heartbeat_ms, or the server is stuck"
                    }
                };
                return Err(Fail::new(format!("no pong: {}", ended.describe()), hint));
            }
        }
    }
}
