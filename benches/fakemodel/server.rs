//! A local OpenAI-compatible model server speaking the exact chat-completions streaming
//! wire format (HTTP/1.1, chunked `text/event-stream`, `data: {json}` events, `[DONE]`),
//! for the integration tests (`tests/it/agents/`) and the benchmarks (`portcullis-fakemodel`).
//!
//! What it does is chosen by the request's `model`, so one server serves every scenario:
//! - `echo` (or any other name): with a `calculator` tool and digits in the last user
//!   message, it reasons one line and calls the calculator (arguments split over three
//!   fragments, a second call
//!   to `clock` beside it when the message says "time"); after tool messages it answers
//!   with their contents; otherwise it streams a `reasoning_content` delta and then
//!   "You said: <message>" word by word. Always a usage chunk before `[DONE]`.
//! - `deltas:N`: N one-word content deltas at once, then usage and `[DONE]`.
//! - `429:N:S`: the first N requests for it get 429 with `Retry-After: S`, then `echo`.
//! - `500`: always 500.
//! - `401`: always 401, the error message quoting the bearer key it was sent.
//! - `cut`: three deltas, then the connection is closed mid-body.
//! - `slow:MS`: one delta every MS ms (up to 100 000); a client that goes away is counted
//!   in [`FakeModel::disconnects`].
//! - `malformed`: one delta, then a chunk that is not JSON.
//! - `length`: two deltas, then `finish_reason: "length"`.
//!
//! `GET …/models` lists `echo` and `gpt-4o-mini` (the shipped environments' model), for
//! `check --online`.
//!
//! Every request is recorded ([`FakeModel::requests`]) with its `Authorization` header.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// What the server saw, shared with its tasks.
#[derive(Default)]
pub struct Seen {
    /// Every request, in arrival order.
    pub requests: Mutex<Vec<Received>>,
    /// Streams whose client went away before the answer ended.
    pub disconnects: AtomicUsize,
    /// Requests per model name (for `429:N:S`).
    attempts: Mutex<HashMap<String, usize>>,
}

/// A running fake model.
pub struct FakeModel {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
    /// `http` or `https`.
    scheme: &'static str,
}

impl FakeModel {
    /// Starts one on `127.0.0.1`, a free port.
    pub async fn start() -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        FakeModel::serve(listener)
    }

    /// Serves plain HTTP on `listener` from a spawned task.
    pub fn serve(listener: TcpListener) -> FakeModel {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(connection(socket, Arc::clone(&shared)));
            }
        });
        FakeModel {
            addr,
            seen,
            scheme: "http",
        }
    }

    /// Serves HTTPS on `listener` (TLS by `acceptor`) from a spawned task.
    pub fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> FakeModel {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&shared);
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(socket).await {
                        connection(tls, seen).await;
                    }
                });
            }
        });
        FakeModel {
            addr,
            seen,
            scheme: "https",
        }
    }

    /// The base URL agents use (`http://addr/v1`, or `https://`).
    pub fn url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.seen.requests.lock().unwrap().clone()
    }

    /// Streams abandoned by their client so far.
    pub fn disconnects(&self) -> usize {
        self.seen.disconnects.load(Ordering::SeqCst)
    }
}

/// Serves requests on one connection until the client closes it (keep-alive).
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut socket, &mut buf).await else {
            return;
        };
        seen.requests.lock().unwrap().push(request.clone());
        let keep = respond(&mut socket, &request, &seen).await;
        if !keep {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(socket: &mut S, buf: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    buf.drain(..head_end + length);
    Some(Received {
        path,
        authorization: header("authorization"),
        body,
    })
}

/// Answers one request; false when the connection must close.
async fn respond<S: AsyncWrite + Unpin>(socket: &mut S, request: &Received, seen: &Seen) -> bool {
    if request.path.ends_with("/models") {
        let list = r#"{"object":"list","data":[{"id":"echo","object":"model"},{"id":"gpt-4o-mini","object":"model"}]}"#;
        return plain(socket, 200, &[], list).await;
    }
    let model = request.body["model"].as_str().unwrap_or("echo").to_string();
    let mut parts = model.split(':');
    let kind = parts.next().unwrap_or("");
    let arg = |i: usize| model.split(':').nth(i).and_then(|v| v.parse::<u64>().ok());
    match kind {
        "500" => {
            plain(
                socket,
                500,
                &[],
                r#"{"error":{"message":"the fake model is overloaded"}}"#,
            )
            .await
        }
        "401" => {
            // As some providers do: the refusal quotes the key it was given.
            let key = request.authorization.as_deref().unwrap_or("");
            let key = key.strip_prefix("Bearer ").unwrap_or(key);
            let body = json!({"error": {"message": format!("Incorrect API key provided: {key}")}});
            plain(socket, 401, &[], &body.to_string()).await
        }
        "429" => {
            let attempt = {
                let mut attempts = seen.attempts.lock().unwrap();
                let n = attempts.entry(model.clone()).or_default();
                *n += 1;
                *n
            };
            if attempt as u64 <= arg(1).unwrap_or(1) {
                let wait = arg(2).unwrap_or(0).to_string();
                let body = r#"{"error":{"message":"rate limited"}}"#;
                return plain(socket, 429, &[("Retry-After", &wait)], body).await;
            }
            stream(socket, &model, echo(&request.body), Pace::Instant, seen).await
        }
        "deltas" => {
            let n = arg(1).unwrap_or(10) as usize;
            let events = words((0..n).map(|i| format!("w{i} ")), "stop");
            stream(socket, &model, events, Pace::Instant, seen).await
        }
        "cut" => {
            let mut events = words(["Hello ", "from ", "a "].map(String::from), "stop");
            events.truncate(3);
            stream(socket, &model, events, Pace::Cut, seen).await
        }
        "slow" => {
            let every = Duration::from_millis(arg(1).unwrap_or(100));
            let events = words((0..100_000).map(|i| format!("s{i} ")), "stop");
            stream(socket, &model, events, Pace::Every(every), seen).await
        }
        "malformed" => {
            let mut events = words(["Hello ".to_string()], "stop");
            events.truncate(1);
            events.push(Event::Raw("{\"choices\": [ {not json".into()));
            stream(socket, &model, events, Pace::Cut, seen).await
        }
        "length" => {
            let events = words(["Cut ", "short"].map(String::from), "length");
            stream(socket, &model, events, Pace::Instant, seen).await
        }
        _ => stream(socket, &model, echo(&request.body), Pace::Instant, seen).await,
    }
}

/// One SSE event of the answer.
enum Event {
    /// A chunk's `delta` and `finish_reason`.
    Delta(Value, Option<&'static str>),
    /// The usage chunk.
    Usage(u64, u64),
    /// Bytes sent as the event's data as they are.
    Raw(String),
}

enum Pace {
    Instant,
    Every(Duration),
    /// Closes the connection after the events, without the terminating chunk.
    Cut,
}

fn words(words: impl IntoIterator<Item = String>, finish: &'static str) -> Vec<Event> {
    let mut events: Vec<Event> = words
        .into_iter()
        .map(|w| Event::Delta(json!({"content": w}), None))
        .collect();
    let n = events.len() as u64;
    events.push(Event::Delta(json!({}), Some(finish)));
    events.push(Event::Usage(10, n));
    events
}

/// The `echo` scenario's answer to a conversation.
fn echo(body: &Value) -> Vec<Event> {
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let prompt = (body["messages"].to_string().len() / 4) as u64;
    if last["role"] == "tool" {
        let results: Vec<String> = messages
            .iter()
            .rev()
            .take_while(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect();
        let text = format!("The tools said: {}.", results.join(" and "));
        return with_prompt(words(split(&text), "stop"), prompt);
    }
    let user = last["content"].as_str().unwrap_or("").to_string();
    let has_tool = |name: &str| {
        body["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == name))
    };
    let expression: String = user
        .chars()
        .filter(|c| c.is_ascii_digit() || "+-*/^().".contains(*c))
        .collect();
    if has_tool("calculator") && expression.chars().any(|c| c.is_ascii_digit()) {
        let args = json!({"expression": expression}).to_string();
        let (a, rest) = args.split_at(args.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let mut events = vec![
            Event::Delta(
                json!({"role": "assistant", "reasoning_content": "I will use the calculator."}),
                None,
            ),
            Event::Delta(
                json!({"content": null, "tool_calls": [{"index": 0, "id": "call_calc", "type": "function", "function": {"name": "calculator", "arguments": ""}}]}),
                None,
            ),
        ];
        if user.contains("time") && has_tool("clock") {
            events.push(Event::Delta(
                json!({"tool_calls": [{"index": 1, "id": "call_clock", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]}),
                None,
            ));
        }
        for piece in [a, b, c] {
            events.push(Event::Delta(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                None,
            ));
        }
        events.push(Event::Delta(json!({}), Some("tool_calls")));
        events.push(Event::Usage(prompt, 12));
        return events;
    }
    let mut events = vec![Event::Delta(
        json!({"reasoning_content": "Thinking it over."}),
        None,
    )];
    events.extend(with_prompt(
        words(split(&format!("You said: {user}")), "stop"),
        prompt,
    ));
    events
}

fn with_prompt(mut events: Vec<Event>, prompt: u64) -> Vec<Event> {
    for event in &mut events {
        if let Event::Usage(p, _) = event {
            *p = prompt;
        }
    }
    events
}

fn split(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(String::from).collect()
}

async fn plain<S: AsyncWrite + Unpin>(
    socket: &mut S,
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    socket.write_all(head.as_bytes()).await.is_ok()
}

async fn stream<S: AsyncWrite + Unpin>(
    socket: &mut S,
    model: &str,
    events: Vec<Event>,
    pace: Pace,
    seen: &Seen,
) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    for event in events {
        let data = match event {
            Event::Delta(delta, finish) => json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
            .to_string(),
            Event::Usage(prompt, completion) => json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            })
            .to_string(),
            Event::Raw(raw) => raw,
        };
        chunk(&mut out, format!("data: {data}\n\n").as_bytes());
        if let Pace::Every(every) = pace {
            if socket.write_all(&out).await.is_err() || socket.flush().await.is_err() {
                seen.disconnects.fetch_add(1, Ordering::SeqCst);
                return false;
            }
            out.clear();
            tokio::time::sleep(every).await;
        }
    }
    if let Pace::Cut = pace {
        let _ = socket.write_all(&out).await;
        let _ = socket.flush().await;
        return false;
    }
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&out).await.is_ok() && socket.flush().await.is_ok()
}

/// One HTTP/1.1 chunk.
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}
