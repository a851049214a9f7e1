//! A real server per test (port 0, its own SQLite file) and a small WebSocket client that
//! reads JSON frames with a timeout, so a hung test fails fast instead of hanging.
//!
//! Every frame the client reads is checked for the one close code that may never appear:
//! 1011 means a server bug (PROTOCOL.md §3).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::config::load::LoadOptions;
use portcullis::server::Server;
use portcullis::wire::ClientMessage;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret, issuer and audience of `environments/test.toml`.
pub const SECRET: &str = "test-only-secret-0123456789abcdef-0123456789";
pub const ISSUER: &str = "portcullis-test";
pub const AUDIENCE: &str = "portcullis";
pub const BYPASS_HEADER: &str = "X-Portcullis-Bypass";
pub const BYPASS_SECRET: &str = "test-bypass-secret-0123456789";
/// An Origin the test environment allows.
pub const ORIGIN: &str = "http://localhost:8080";

/// How long any single awaited frame may take before the test fails.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server with its own database directory.
pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl TestServer {
    /// Starts the `test` environment with `overrides` (`("WEBSOCKET__SEND_TIMEOUT_MS", "500")`
    /// becomes `PORTCULLIS_WEBSOCKET__SEND_TIMEOUT_MS=500`) and waits until the store is connected.
    pub async fn start(overrides: &[(&str, &str)]) -> TestServer {
        TestServer::start_in("environments", overrides).await
    }

    /// Like [`TestServer::start`], with the `test` environment of another config directory.
    pub async fn start_in(config_dir: &str, overrides: &[(&str, &str)]) -> TestServer {
        let s = TestServer::start_unready_in(config_dir, overrides).await;
        let app = s.app();
        let started = tokio::time::Instant::now();
        while app.store.get().is_none() {
            assert!(started.elapsed() < FRAME_TIMEOUT, "store never connected");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s
    }

    /// Like [`TestServer::start`], without waiting for the store.
    pub async fn start_unready(overrides: &[(&str, &str)]) -> TestServer {
        TestServer::start_unready_in("environments", overrides).await
    }

    async fn start_unready_in(config_dir: &str, overrides: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = BTreeMap::new();
        env.insert(
            "PORTCULLIS_SERVICES__DATABASE__URL".to_string(),
            format!("sqlite://{}", dir.path().join("ws.db").display()),
        );
        env.insert(
            "PORTCULLIS_SERVER__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        );
        for (k, v) in overrides {
            env.insert(format!("PORTCULLIS_{k}"), (*v).to_string());
        }
        let opts = LoadOptions::new(config_dir, env);
        let server = crate::support::serve(&opts, "test").await;
        let addr = server.addr;
        TestServer {
            server: Some(server),
            addr,
            _dir: dir,
        }
    }

    /// The directory holding the server's SQLite database (`ws.db`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn app(&self) -> &portcullis::app::App {
        &self.server.as_ref().expect("server running").app
    }

    /// `ws://<addr><path>`; `path` may carry a query string.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A connect builder for `/websocket`.
    pub fn connect(&self) -> Connect {
        Connect::new(self.url("/websocket"))
    }

    /// Connects `user` with a header token and reads `connection_established`.
    pub async fn user(&self, user: &str) -> Client {
        let (mut c, _) = self
            .connect()
            .bearer(&token(user, 600))
            .open()
            .await
            .expect("connect");
        let est = c.recv().await;
        assert_eq!(est["type"], "connection_established", "{est}");
        assert_eq!(est["user_id"], user);
        c
    }

    /// A raw HTTP/1.1 request; returns status, headers and body.
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpReply {
        http_request(self.addr, method, path, headers).await
    }
}

/// A parsed raw HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpReply {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.expect("write request");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read response");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        HttpReply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(FRAME_TIMEOUT, work)
        .await
        .expect("HTTP request timed out")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Claims of a valid token for `sub` expiring `ttl_s` seconds from now.
pub fn claims(sub: &str, ttl_s: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({ "sub": sub, "iat": now, "exp": now + ttl_s, "iss": ISSUER, "aud": AUDIENCE })
}

/// Signs `claims` with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    sign_with(claims, SECRET)
}

pub fn sign_with(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A valid token for `sub`.
pub fn token(sub: &str, ttl_s: i64) -> String {
    sign(&claims(sub, ttl_s))
}

/// An unsigned token (`alg: none`) with otherwise valid claims.
pub fn alg_none_token(sub: &str) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims(sub, 600))
    )
}

/// Builds an upgrade request.
pub struct Connect {
    url: String,
    headers: Vec<(String, String)>,
    origin: Option<String>,
}

impl Connect {
    pub fn new(url: String) -> Connect {
        Connect {
            url,
            headers: Vec::new(),
            origin: Some(ORIGIN.to_string()),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Connect {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn bearer(self, token: &str) -> Connect {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn subprotocols(self, offered: &[&str]) -> Connect {
        self.header("Sec-WebSocket-Protocol", &offered.join(", "))
    }

    /// `None` sends no Origin header at all.
    pub fn origin(mut self, origin: Option<&str>) -> Connect {
        self.origin = origin.map(str::to_string);
        self
    }

    /// Performs the handshake.
    pub async fn open(self) -> Result<(Client, Response<Option<Vec<u8>>>), tungstenite::Error> {
        let mut req = self.url.into_client_request()?;
        let h = req.headers_mut();
        if let Some(o) = &self.origin {
            h.insert("origin", HeaderValue::from_str(o).expect("origin value"));
        }
        for (k, v) in &self.headers {
            h.append(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        let (ws, resp) = tokio::time::timeout(FRAME_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("handshake timed out")?;
        Ok((Client { ws }, resp))
    }

    /// Performs the handshake and expects an HTTP refusal; returns it.
    pub async fn refused(self) -> HttpReply {
        match self.open().await {
            Ok((_, resp)) => panic!("expected an HTTP refusal, got {}", resp.status()),
            Err(tungstenite::Error::Http(resp)) => HttpReply {
                status: resp.status().as_u16(),
                headers: resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
                body: String::from_utf8(resp.body().clone().unwrap_or_default())
                    .expect("utf-8 body"),
            },
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
        }
    }
}

/// What the server sent next.
#[derive(Debug)]
pub enum Frame {
    Json(Value),
    /// A close frame (code, reason). The reason is only read through `Debug`, in the
    /// message of a failed assertion.
    Close(u16, #[allow(dead_code)] String),
    /// The connection ended without a close frame.
    Ended(String),
}

/// A connected client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Wraps a stream taken with [`Client::into_inner`] again.
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws }
    }

    /// Sends any JSON, such as a malformed message.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Sends a client message, written by `portcullis::wire`.
    pub async fn send_msg(&mut self, message: ClientMessage) {
        self.send_text(&message.to_text()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends a `user_message` for a new thread (or `thread`).
    pub async fn ask(&mut self, id: &str, content: &str, thread: Option<&str>) {
        self.send_msg(ClientMessage::user_message(id, content, thread, None))
            .await;
    }

    /// The next text frame or close, within `wait`; `None` on timeout.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let read = async {
            loop {
                match self.ws.next().await {
                    None => return Frame::Ended("stream ended".into()),
                    Some(Err(e)) => return Frame::Ended(e.to_string()),
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str())
                            .unwrap_or_else(|e| panic!("server sent non-JSON text ({e}): {t}"));
                        return Frame::Json(v);
                    }
                    Some(Ok(Message::Close(c))) => {
                        let (code, reason) = c
                            .map(|c| (u16::from(c.code), c.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        assert_ne!(code, 1011, "the server closed with 1011: {reason}");
                        return Frame::Close(code, reason);
                    }
                    Some(Ok(Message::Binary(_))) => panic!("the server sent a binary frame"),
                    Some(Ok(_)) => continue,
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok()
    }

    /// The next frame; fails the test after [`FRAME_TIMEOUT`].
    pub async fn next(&mut self) -> Frame {
        self.next_within(FRAME_TIMEOUT)
            .await
            .expect("no frame from the server within the timeout")
    }

    /// The next JSON message; fails on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Frame::Json(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next JSON message, which must have `type`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected a `{kind}` message, got {v}");
        v
    }

    /// Reads messages (collected) until a close frame arrives.
    pub async fn until_close(&mut self) -> (Vec<Value>, u16) {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Frame::Json(v) => seen.push(v),
                Frame::Close(code, _) => {
                    self.finish_close().await;
                    return (seen, code);
                }
                Frame::Ended(e) => panic!(
                    "connection ended without a close frame: {e}; after {} messages of types {:?}",
                    seen.len(),
                    types(&seen)
                ),
            }
        }
    }

    /// After the server's close frame: keep reading, which sends our answer (completing
    /// the closing handshake, as a browser does), until the server drops the connection.
    pub async fn finish_close(&mut self) {
        let end = async {
            if let Some(Ok(msg)) = self.ws.next().await {
                panic!("a frame after the close frame: {msg:?}");
            }
        };
        tokio::time::timeout(FRAME_TIMEOUT, end)
            .await
            .expect("the server kept the connection after the closing handshake");
    }

    /// Asserts nothing arrives for `wait` (for "no second run" and similar negatives).
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(f) = self.next_within(wait).await {
            panic!("expected silence, got {f:?}");
        }
    }

    /// Sends a ping and expects the pong as the very next message: proves the connection is
    /// open and everything queued before it has been read.
    pub async fn ping_pong(&mut self) {
        self.send_msg(ClientMessage::Ping {}).await;
        let pong = self.recv_type("pong").await;
        assert!(pong["server_time"].is_string(), "{pong}");
    }

    /// Sends a message and returns its ack.
    pub async fn ask_acked(&mut self, id: &str, content: &str, thread: Option<&str>) -> Value {
        self.ask(id, content, thread).await;
        let ack = self.recv_type("ack").await;
        assert_eq!(ack["id"], id, "{ack}");
        ack
    }

    /// Reads a run's events up to and including its `agent_completed`, checking the run
    /// invariants (one thread, seq +1 each, started first, nothing after completed).
    pub async fn run_events(&mut self, run_id: &str) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        loop {
            let v = self.recv().await;
            assert_eq!(v["run_id"], run_id, "an event of another run: {v}");
            if let Some(prev) = events.last() {
                // Merged deltas cover `seq..=seq_to` (docs/PROTOCOL.md, delta coalescing).
                assert_eq!(
                    v["seq"].as_i64().expect("seq"),
                    last_seq(prev) + 1,
                    "seq must increase by one: {prev} then {v}"
                );
                assert_eq!(v["thread_id"], prev["thread_id"]);
            } else {
                assert_eq!(
                    v["type"], "agent_started",
                    "a run starts with agent_started: {v}"
                );
            }
            let done = v["type"] == "agent_completed";
            events.push(v);
            if done {
                return events;
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Stops reading and writing without closing (for slow-consumer tests).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// The last seq a frame covers: `seq_to` of merged deltas, else `seq`.
pub fn last_seq(event: &Value) -> i64 {
    event["seq_to"]
        .as_i64()
        .or_else(|| event["seq"].as_i64())
        .expect("seq")
}

/// Types of a run's events, in order.
pub fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}
