//! One connection (connection scope): finishes authentication, registers with the hub,
//! sends `connection_established`, then reads client messages until the socket, the
//! token, the queue or the server ends it. Every handler error becomes an `error` reply
//! or a specific close code; nothing here becomes 1011.
//!
//! Generic over the socket's `Sink`/`Stream`, so it runs over warp's `WebSocket` and over
//! anything else speaking tungstenite's `Message`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::frames;

use super::handshake::{AuthState, PreAuth};
use super::protocol::{self, ClientMessage, ParseError};
use super::writer::{self, Close, WriterCtx};
use crate::app::App;
use crate::auth::{AuthFailure, Identity, first_message_token};
use crate::config::{AuthMode, RejectAt};
use crate::hub::Outbound;

/// Sends one message and a close frame before the session proper exists, then waits
/// (bounded) for the client's close frame, as in [`run`].
async fn refuse<S, St, E, T>(
    sink: &mut S,
    stream: &mut St,
    body: String,
    code: u16,
    reason: &'static str,
) -> Option<T>
where
    S: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = sink.send(Message::text(body)).await;
    let _ = sink.send(frames::close(code, reason)).await;
    let _ = tokio::time::timeout(CLOSE_LINGER, discard_until_close(stream)).await;
    let _ = sink.close().await;
    None
}

/// Refuses with an authentication failure's `error` message and close code.
async fn refuse_auth<S, St, E, T>(sink: &mut S, stream: &mut St, f: &AuthFailure) -> Option<T>
where
    S: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    refuse(
        sink,
        stream,
        f.error_message().to_string(),
        f.close_code(),
        "authentication failed",
    )
    .await
}

/// How long a closing connection waits for the writer to flush and the client to answer
/// the close frame before the socket is dropped regardless.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards until the client's close frame (or the end of the stream).
async fn discard_until_close<St, E>(stream: &mut St)
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
    }
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

/// Runs a connection to its end.
pub async fn run<S, E>(app: App, socket: S, pre: PreAuth)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + 'static,
    E: std::fmt::Display,
{
    let (mut sink, mut stream) = socket.split();
    // Boxed: the authentication phase (first-message wait, refusals) would otherwise
    // stay part of every idle session's future and cost memory per connection.
    let Some((identity, store)) =
        Box::pin(establish(&app, &mut sink, &mut stream, pre.state)).await
    else {
        return;
    };
    let cfg = Arc::clone(&app.config);
    let conn_id = format!("c_{:016x}", rand::random::<u64>());
    let user = identity.user_id.clone();
    let (tx, rx) = mpsc::channel(cfg.websocket.send_queue);
    let (ctrl_tx, ctrl_rx) = tokio::sync::oneshot::channel::<Close>();
    let slow = CancellationToken::new();
    let pong_seen = Arc::new(AtomicBool::new(true));
    let auth_label = if cfg.auth.mode == AuthMode::None {
        "none".to_string()
    } else {
        identity.method.label()
    };
    // Serialized at once: a `Value` kept in this future would cost memory per connection.
    let established = json!({
        "type": "connection_established",
        "protocol": protocol::PROTOCOL,
        "connection_id": conn_id,
        "user_id": user,
        "auth": auth_label,
        "server_time": protocol::now_rfc3339(),
        "heartbeat_ms": cfg.websocket.heartbeat.as_millis() as u64,
        "token_expires_at": identity.expires_at.map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "limits": { "max_message_bytes": cfg.websocket.max_message_bytes, "messages_per_minute": cfg.websocket.messages_per_minute },
    })
    .to_string();
    let _ = tx.try_send(Outbound::Reply(Arc::from(established)));
    app.hub.register(&user, &conn_id, tx.clone(), slow.clone());
    app.metrics.connections_open.inc();
    app.metrics.connections_total.inc();
    tracing::debug!(user_id = %user, conn_id = %conn_id, auth = %auth_label, "connection established");
    // The writer can end the connection on its own (no pong in time, a failed write); the
    // reader then has nothing left to wait for, since a dead client never sends again.
    let writer_done = CancellationToken::new();
    let writer_task = writer::run(
        sink,
        rx,
        ctrl_rx,
        WriterCtx {
            store,
            user_id: user.clone(),
            metrics: Arc::clone(&app.metrics),
            heartbeat: cfg.websocket.heartbeat,
            pong_timeout: cfg.websocket.pong_timeout,
            pong_seen: Arc::clone(&pong_seen),
        },
    );
    let done = writer_done.clone().drop_guard();
    let writer = tokio::spawn(async move {
        writer_task.await;
        drop(done);
    });
    let mut session = Session {
        app: app.clone(),
        identity,
        tx,
        warned_expiry: false,
    };
    let close = session
        .read_loop(&mut stream, &slow, &pong_seen, &writer_done)
        .await;
    let closing = close.is_some();
    match close {
        Some(c) => {
            let _ = ctrl_tx.send(c);
        }
        None => drop(ctrl_tx),
    }
    drop(session);
    // The writer sends what it must and the close frame; meanwhile keep reading when we
    // started the close, so the client's answer completes the closing handshake. A socket
    // dropped with unread input is reset, and the reset can destroy the close frame (and
    // its code) before the client reads it. A client that reads nothing at all gets the
    // writer aborted after the linger, so it cannot hold the socket open forever.
    let mut writer = writer;
    let finish = async {
        let linger = async {
            if closing {
                discard_until_close(&mut stream).await;
            }
        };
        let _ = tokio::join!(&mut writer, linger);
    };
    if tokio::time::timeout(CLOSE_LINGER, finish).await.is_err() {
        writer.abort();
    }
    app.hub.unregister(&user, &conn_id);
    app.metrics.connections_open.dec();
    drop(pre.permit);
}

/// Finishes authentication (first-message auth or the refusal decided at the handshake)
/// and checks the store; `None` when the connection was refused and closed.
async fn establish<Si, St, E>(
    app: &App,
    sink: &mut Si,
    stream: &mut St,
    state: AuthState,
) -> Option<(Identity, crate::store::Store)>
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let identity = match state {
        AuthState::Authenticated(id) => id,
        AuthState::Failed(f) => {
            return refuse_auth(sink, stream, &f).await;
        }
        AuthState::ConnectionLimit => {
            let (code, msg) = super::handshake::CONNECTION_LIMIT;
            return refuse(
                sink,
                stream,
                protocol::error(code, msg, None, true),
                4429,
                "connection limit",
            )
            .await;
        }
        AuthState::Unavailable(code, msg) => {
            return refuse(
                sink,
                stream,
                protocol::error(code, msg, None, true),
                1013,
                "try again later",
            )
            .await;
        }
        AuthState::AwaitFirstMessage => {
            let wait =
                tokio::time::timeout(app.config.auth.first_message_timeout, next_text(stream))
                    .await;
            let result = match wait {
                Err(_) => Err(AuthFailure::AuthTimeout),
                Ok(None) => return None,
                Ok(Some(Err(()))) => Err(AuthFailure::NoToken),
                Ok(Some(Ok(text))) => {
                    first_message_token(&text).and_then(|found| match &app.verifier {
                        Some(v) => v.verify_found(&[found], Utc::now()),
                        None => Err(AuthFailure::AuthUnavailable("no verifier configured")),
                    })
                }
            };
            match result {
                Ok(id) => id,
                Err(AuthFailure::NoToken) if app.config.auth.reject_at == RejectAt::Handshake => {
                    app.metrics.auth_failure("NO_TOKEN");
                    let body = protocol::error(
                        "POLICY_VIOLATION",
                        "the first message must be {\"type\":\"auth\",\"token\":…}",
                        None,
                        false,
                    );
                    return refuse(sink, stream, body, 1008, "message before auth").await;
                }
                Err(f) => {
                    app.metrics.auth_failure(f.code());
                    return refuse_auth(sink, stream, &f).await;
                }
            }
        }
    };
    let Some(store) = app.store.get().cloned() else {
        return refuse(
            sink,
            stream,
            protocol::error(
                "STORE_UNAVAILABLE",
                "the message store is not reachable",
                None,
                true,
            ),
            1013,
            "try again later",
        )
        .await;
    };
    Some((identity, store))
}

struct Session {
    app: App,
    identity: Identity,
    tx: mpsc::Sender<Outbound>,
    warned_expiry: bool,
}

fn close(code: u16, reason: &'static str) -> Option<Close> {
    Some(Close {
        code,
        reason,
        flush_first: false,
    })
}

impl Session {
    /// Queues a reply; a full queue means the client is not reading.
    fn reply(&self, text: String, slow: &CancellationToken) {
        if let Err(mpsc::error::TrySendError::Full(_)) =
            self.tx.try_send(Outbound::Reply(Arc::from(text)))
        {
            slow.cancel();
        }
    }

    /// When to send `token_expiring` and when to close: the close comes at `exp` plus the
    /// verifier's leeway, the same rule that admitted the token, so a token accepted inside
    /// the leeway is not declared expired the moment the connection opens.
    fn expiry_at(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let exp = self.identity.expires_at?;
        let lifetime = self
            .identity
            .issued_at
            .map_or(chrono::Duration::seconds(120), |iat| exp - iat);
        let margin = (lifetime / 5)
            .min(chrono::Duration::seconds(60))
            .max(chrono::Duration::seconds(1));
        let leeway = self.app.config.auth.jwt.as_ref().map_or(0, |j| j.leeway_s);
        // The schema caps leeway at 300 s.
        let leeway = chrono::Duration::seconds(i64::try_from(leeway.min(300)).unwrap_or(300));
        Some((exp - margin, exp + leeway))
    }

    async fn read_loop<St, E>(
        &mut self,
        stream: &mut St,
        slow: &CancellationToken,
        pong_seen: &AtomicBool,
        writer_done: &CancellationToken,
    ) -> Option<Close>
    where
        St: Stream<Item = Result<Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        let max = self.app.config.websocket.max_message_bytes;
        loop {
            let (warn_at, expire_at) = match self.expiry_at() {
                Some((w, e)) => (Some(w), Some(e)),
                None => (None, None),
            };
            let until = |t: Option<DateTime<Utc>>| async move {
                match t {
                    Some(t) => {
                        tokio::time::sleep((t - Utc::now()).to_std().unwrap_or_default()).await
                    }
                    None => std::future::pending().await,
                }
            };
            let warn_due = if self.warned_expiry { None } else { warn_at };
            tokio::select! {
                biased;
                _ = slow.cancelled() => {
                    self.app.metrics.slow_consumers.inc();
                    tracing::info!(user_id = %self.identity.user_id, "closing slow consumer");
                    return close(4509, "slow consumer: outbound queue stayed full");
                }
                _ = writer_done.cancelled() => return None,
                _ = self.app.close_sessions.cancelled() => {
                    return Some(Close { code: 1001, reason: "server shutting down", flush_first: true });
                }
                _ = until(expire_at) => {
                    self.reply(AuthFailure::TokenExpired.error_message().to_string(), slow);
                    return Some(Close { code: 4401, reason: "token expired", flush_first: true });
                }
                _ = until(warn_due) => {
                    if let Some(exp) = self.identity.expires_at {
                        self.reply(protocol::token_expiring(&exp), slow);
                    }
                    self.warned_expiry = true;
                }
                msg = stream.next() => {
                    let msg = match msg {
                        None => return None,
                        Some(Err(e)) => {
                            let text = e.to_string();
                            if text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Capacity") {
                                return close(1009, "message too large");
                            }
                            return None;
                        }
                        Some(Ok(m)) => m,
                    };
                    if msg.is_pong() {
                        pong_seen.store(true, Ordering::Relaxed);
                    } else if msg.is_close() {
                        return None;
                    } else if msg.len() > max {
                        self.reply(protocol::error("MESSAGE_TOO_LARGE", &format!("messages are limited to {max} bytes"), None, false), slow);
                        return Some(Close { code: 1009, reason: "message too large", flush_first: true });
                    } else if msg.is_binary() {
                        self.reply(protocol::error("UNSUPPORTED_FRAME", "send JSON text frames", None, false), slow);
                    } else if msg.is_text() {
                        let text = msg.to_text().unwrap_or_default().to_string();
                        if let Some(c) = Box::pin(self.handle(&text, slow)).await {
                            return Some(c);
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, text: &str, slow: &CancellationToken) -> Option<Close> {
        let msg = match protocol::parse(text) {
            Ok(m) => m,
            Err(ParseError::BadJson(e)) => {
                self.reply(
                    protocol::error("BAD_JSON", &format!("not valid JSON: {e}"), None, false),
                    slow,
                );
                return None;
            }
            Err(ParseError::UnknownType(t)) => {
                self.reply(
                    protocol::error(
                        "UNKNOWN_TYPE",
                        &format!("unknown message type `{t}`; see PROTOCOL.md §2"),
                        None,
                        false,
                    ),
                    slow,
                );
                return None;
            }
            Err(ParseError::BadMessage(e)) => {
                self.reply(protocol::error("BAD_MESSAGE", &e, None, false), slow);
                return None;
            }
        };
        match msg {
            ClientMessage::Ping {} => self.reply(protocol::pong(), slow),
            ClientMessage::UserMessage {
                id,
                content,
                thread_id,
                agent,
            } => self.user_message(id, content, thread_id, agent, slow).await,
            ClientMessage::Cancel { run_id } => {
                if !self.app.runs.cancel(&self.identity.user_id, &run_id) {
                    self.reply(
                        protocol::error(
                            "RUN_NOT_FOUND",
                            "no such run of yours is in progress",
                            None,
                            false,
                        ),
                        slow,
                    );
                }
            }
            ClientMessage::Resume {
                thread_id,
                after_seq,
            } => self.resume(thread_id, after_seq, slow).await,
            ClientMessage::Auth { token } => return self.refresh(&token, slow),
        }
        None
    }

    async fn user_message(
        &mut self,
        id: String,
        content: String,
        thread_id: Option<String>,
        agent: Option<String>,
        slow: &CancellationToken,
    ) {
        let reply_err = |s: &Self, code: &str, msg: &str, retry: bool| {
            s.reply(protocol::error(code, msg, Some(&id), retry), slow)
        };
        if id.is_empty() || id.len() > 200 {
            return reply_err(
                self,
                "BAD_MESSAGE",
                "`id` must be 1 to 200 characters",
                false,
            );
        }
        if content.trim().is_empty() {
            return reply_err(self, "BAD_MESSAGE", "`content` must not be empty", false);
        }
        if self.app.is_draining() {
            return reply_err(
                self,
                "SHUTTING_DOWN",
                "the server is shutting down; resend after reconnecting",
                true,
            );
        }
        let Some(agent) = self.app.agents.resolve(agent.as_deref()) else {
            return reply_err(
                self,
                "UNKNOWN_AGENT",
                "no agent by that name; client_config lists them",
                false,
            );
        };
        if !self
            .app
            .limiter
            .allow(&self.identity.user_id, Instant::now())
        {
            return reply_err(
                self,
                "RATE_LIMITED",
                &format!(
                    "at most {} messages per minute",
                    self.app.config.websocket.messages_per_minute
                ),
                true,
            );
        }
        let Some(deps) = self.app.run_deps() else {
            return reply_err(
                self,
                "STORE_UNAVAILABLE",
                "the message store is not reachable",
                true,
            );
        };
        let new = crate::store::NewMessage {
            user_id: &self.identity.user_id,
            client_id: &id,
            thread_id: thread_id.as_deref(),
            content: &content,
            agent: agent.name(),
        };
        match deps.store.accept_message(new).await {
            Ok(acc) => {
                self.reply(
                    protocol::ack(&id, &acc.thread_id, &acc.message_id, &acc.run_id),
                    slow,
                );
                if !acc.duplicate {
                    self.app.metrics.user_messages.inc();
                    self.app
                        .runs
                        .start(deps, &acc, &self.identity.user_id, &content, agent);
                }
            }
            Err(crate::store::StoreError::ThreadNotFound) => {
                reply_err(self, "THREAD_NOT_FOUND", "no such thread", false)
            }
            Err(e) => {
                tracing::error!(error = %e, "storing a user message failed");
                // Resending with the same id is safe (acks are idempotent), so say it may be retried.
                reply_err(
                    self,
                    e.code(),
                    "the message was not stored; resend it with the same id",
                    true,
                )
            }
        }
    }

    async fn resume(&mut self, thread_id: String, after_seq: i64, slow: &CancellationToken) {
        let Some(store) = self.app.store.get() else {
            return;
        };
        match store.thread_owner(&thread_id).await {
            Ok(Some(owner)) if owner == self.identity.user_id => {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    self.tx
                        .try_send(Outbound::Replay(Box::new(crate::hub::ReplayRequest {
                            thread_id,
                            after_seq,
                            ref_id: None,
                        })))
                {
                    slow.cancel();
                }
            }
            Ok(_) => self.reply(
                protocol::error("THREAD_NOT_FOUND", "no such thread", None, false),
                slow,
            ),
            Err(e) => self.reply(
                protocol::error(
                    e.code(),
                    "could not look the thread up",
                    None,
                    e.is_retryable(),
                ),
                slow,
            ),
        }
    }

    fn refresh(&mut self, token: &str, slow: &CancellationToken) -> Option<Close> {
        let Some(v) = &self.app.verifier else {
            self.reply(
                protocol::error(
                    "BAD_MESSAGE",
                    "this server does not use tokens",
                    None,
                    false,
                ),
                slow,
            );
            return None;
        };
        match v
            .verify(token, Utc::now())
            .and_then(|fresh| self.identity.refresh(fresh))
        {
            Ok(fresh) => {
                self.identity = fresh;
                self.warned_expiry = false;
                self.reply(
                    protocol::auth_refreshed(self.identity.expires_at.as_ref()),
                    slow,
                );
                None
            }
            Err(f @ AuthFailure::Forbidden(_)) => {
                self.app.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string(), slow);
                Some(Close {
                    code: 4403,
                    reason: "refresh for another user",
                    flush_first: true,
                })
            }
            Err(f) => {
                self.app.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string(), slow);
                None
            }
        }
    }
}
