//! One connection (connection scope), in one task: finishes authentication, registers
//! with the event bus, sends `connection_established`, then serves the socket until the client,
//! the token, the queue or the server ends it. The same task reads client messages,
//! writes the outbound queue, pings and watches the token's expiry; a message that has to
//! wait for the store (a `user_message` being committed, a `resume` being checked) is
//! awaited beside all of that, so events keep flowing meanwhile, and no further message
//! is read until it is done (messages keep their order). Every handler error becomes an
//! `error` reply or a specific close code; nothing here becomes 1011.
//!
//! One task per connection, one timer and a queue that costs nothing while empty: an
//! idle connection's memory is what this file keeps between two messages.
//! Generic over the socket's `Sink`/`Stream`, so it runs over any socket speaking
//! tungstenite's `Message`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use chrono::{DateTime, Utc};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::frames;
use super::linger::Linger;

use super::handshake::{AuthState, PreAuth};
use super::writer::{AfterClose, Close, Io, Pump, WriterCtx};
use crate::app::App;
use crate::auth::{AuthFailure, Identity, first_message_token};
use crate::config::{AuthMode, RejectAt};
use crate::hub::{Outbound, Outbox, Pushed};
use crate::runs::HeldAck;
use crate::store::Store;
use crate::wire::close::ReadFailure;
use crate::wire::server;
use crate::wire::{ClientMessage, CloseCode, ErrorCode, ParseError, parse};

/// A message handler still waiting for the store.
type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sends one message and a close frame before the session proper exists, then waits
/// (bounded) for the client's close frame, as in [`run`].
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

/// How long a closing connection waits for its last writes and the client's answer to
/// the close frame before the socket is dropped regardless.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// The close code for a client that did not answer a ping in time.
const NO_PONG: CloseCode = CloseCode::ProtocolError;

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

/// Runs a connection: authentication first, then the connection proper in a task of
/// its own. The handshake and authentication states (the upgrade, first-message auth,
/// refusals) stay in this short-lived task; the long-lived one holds only what an open
/// connection needs, since that is memory every idle connection pays for.
pub async fn run<S, E>(app: App, mut socket: S, pre: PreAuth)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Linger + Unpin + Send + 'static,
    E: ReadFailure + Send + 'static,
{
    let PreAuth {
        state,
        permit,
        remote,
        ..
    } = pre;
    let Some((identity, store)) = Box::pin(establish(&app, &mut socket, state, remote)).await
    else {
        return;
    };
    let conn_id = format!("c_{:016x}", rand::random::<u64>());
    if !Box::pin(app.limiter.connection_opened(&identity.user_id, &conn_id)).await {
        let cap = app.config.websocket.max_connections_per_user.unwrap_or(0);
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
            &mut socket,
            body,
            CloseCode::TooManyConnections,
            "user connection limit",
        )
        .await;
        return;
    }
    let ws = &app.config.websocket;
    let outbox = Arc::new(Outbox::new(ws.send_queue_bytes, ws.send_timeout));
    let auth_label = if app.config.auth.mode == AuthMode::None {
        "none".to_string()
    } else {
        identity.method.label()
    };
    // Serialized at once: a `Value` kept in this future would cost memory per connection.
    let established = server::connection_established(&server::Established {
        connection_id: &conn_id,
        user_id: &identity.user_id,
        auth: &auth_label,
        heartbeat_ms: ws.heartbeat.as_millis() as u64,
        token_expires_at: identity.expires_at.as_ref(),
        max_message_bytes: ws.max_message_bytes,
        messages_per_minute: ws.messages_per_minute,
    });
    outbox.push(Outbound::Reply(Arc::from(established)));
    app.bus
        .subscribe(&identity.user_id, &conn_id, Arc::clone(&outbox));
    app.metrics.connections_open.inc();
    app.metrics.connections_total.inc();
    tracing::debug!(user_id = %identity.user_id, conn_id = %conn_id, auth = %auth_label, "connection established");
    let sessions = app.sessions.clone();
    let session = Session {
        app,
        identity,
        store,
        outbox,
        warned_expiry: false,
        pump: Pump::default(),
        conn_id,
        _permit: permit,
    };
    // Tracked like this task, so shutdown waits for it too.
    sessions.spawn(live(session, socket));
}

/// The open connection, to its end. A plain function returning an `async move` block,
/// not an `async fn`: an `async fn` keeps its arguments twice (as captured and as
/// locals), and this future lives as long as the connection.
#[allow(clippy::manual_async_fn)]
fn live<S, E>(mut session: Session, mut socket: S) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Linger + Unpin + Send,
    E: ReadFailure + Send,
{
    async move {
        let close = session.serve(&mut socket).await;
        // Boxed: the closing states would otherwise be part of every open connection's task.
        Box::pin(session.finish(&mut socket, close)).await;
        session
            .app
            .bus
            .unsubscribe(&session.identity.user_id, &session.conn_id);
        let closed = session
            .app
            .limiter
            .connection_closed(&session.identity.user_id, &session.conn_id);
        Box::pin(closed).await;
        session.outbox.close();
        session.app.metrics.connections_open.dec();
    }
}

/// Finishes authentication (first-message auth or the refusal decided at the handshake)
/// and checks the store; `None` when the connection was refused and closed.
async fn establish<S, E>(
    app: &App,
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
            let (code, msg) = super::handshake::CONNECTION_LIMIT;
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
        AuthState::AwaitFirstMessage => {
            let wait =
                tokio::time::timeout(app.config.auth.first_message_timeout, next_text(socket))
                    .await;
            let result = match wait {
                Err(_) => Err(AuthFailure::AuthTimeout),
                Ok(None) => return None,
                Ok(Some(Err(()))) => Err(AuthFailure::NoToken),
                Ok(Some(Ok(text))) => match (first_message_token(&text), &app.verifier) {
                    (Ok(found), Some(v)) => v.verify_found_async(&[found], Utc::now()).await,
                    (Ok(_), None) => Err(AuthFailure::AuthUnavailable("no verifier configured")),
                    (Err(f), _) => Err(f),
                },
            };
            match result {
                Ok(id) => id,
                Err(AuthFailure::NoToken) if app.config.auth.reject_at == RejectAt::Handshake => {
                    app.metrics.auth_failure(ErrorCode::NoToken.as_str());
                    super::handshake::refused(ErrorCode::PolicyViolation.as_str(), remote);
                    let body = server::error(
                        ErrorCode::PolicyViolation.as_str(),
                        "the first message must be {\"type\":\"auth\",\"token\":…}",
                        None,
                        false,
                    );
                    return refuse(
                        socket,
                        body,
                        CloseCode::PolicyViolation,
                        "message before auth",
                    )
                    .await;
                }
                Err(f) => {
                    app.metrics.auth_failure(f.code());
                    super::handshake::refused(f.code(), remote);
                    return refuse_auth(socket, &f).await;
                }
            }
        }
    };
    let Some(store) = app.store.get().cloned() else {
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

struct Session {
    app: App,
    identity: Identity,
    store: Store,
    outbox: Arc<Outbox>,
    warned_expiry: bool,
    pump: Pump,
    conn_id: String,
    /// The connection slot, released when the session ends.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn close(code: CloseCode, reason: &'static str) -> Option<Close> {
    Some(Close {
        code,
        reason,
        flush_first: false,
        then: AfterClose::ClientClose,
    })
}

/// A wall-clock instant as a tokio deadline.
fn deadline(t: DateTime<Utc>) -> Instant {
    Instant::now() + (t - Utc::now()).to_std().unwrap_or_default()
}

/// Far enough away to mean "never" without overflowing.
fn never() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

/// Whether a message handler answered at once, needs the store, or ends the connection.
enum Handled {
    Done,
    Wait(Pending),
    Close(Close),
}

impl Session {
    /// Queues a reply; a full queue marks the connection slow (it is then closed).
    fn reply(&self, text: String) {
        self.outbox.push(Outbound::Reply(Arc::from(text)));
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

    /// Serves the connection until it has to end; `Some` when the server ends it.
    async fn serve<S, E>(&mut self, socket: &mut S) -> Option<Close>
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
        E: ReadFailure,
    {
        let ws = &self.app.config.websocket;
        let (heartbeat, pong_timeout, max) = (ws.heartbeat, ws.pong_timeout, ws.max_message_bytes);
        let close_sessions = self.app.close_sessions.clone();
        let outbox = Arc::clone(&self.outbox);
        let mut next_ping = Instant::now() + heartbeat;
        let mut pong_deadline: Option<Instant> = None;
        let mut pong_seen = true;
        let (mut warn_at, mut expire_at) = self.token_deadlines();
        let mut pending: Option<Pending> = None;
        // One timer for everything due: the next ping, the pong deadline, the expiry.
        let mut due = next_ping;
        let timer = tokio::time::sleep_until(due);
        tokio::pin!(timer);
        loop {
            let mut next = next_ping.min(expire_at);
            if !self.warned_expiry {
                next = next.min(warn_at);
            }
            if let Some(d) = pong_deadline {
                next = next.min(d);
            }
            // The slow-consumer deadline moves with every push and write: the timer
            // branch checks it again when it fires.
            if let Some(d) = outbox.slow_deadline() {
                next = next.min(Instant::from_std(d));
            }
            if next != due {
                due = next;
                timer.as_mut().reset(due);
            }
            let read = pending.is_none();
            tokio::select! {
                biased;
                () = outbox.pushed() => {
                    // The writes themselves happen in the I/O branch below.
                    if outbox.is_slow() {
                        return self.slow_consumer();
                    }
                }
                () = close_sessions.cancelled() => {
                    return Some(Close { code: CloseCode::GoingAway, reason: "server shutting down", flush_first: true, then: AfterClose::ClientClose });
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if outbox.is_slow() {
                        return self.slow_consumer();
                    }
                    if expire_at <= now {
                        self.reply(AuthFailure::TokenExpired.error_message().to_string());
                        return Some(Close { code: CloseCode::Unauthorized, reason: "token expired", flush_first: true, then: AfterClose::ClientClose });
                    }
                    if !self.warned_expiry && warn_at <= now {
                        if let Some(exp) = self.identity.expires_at {
                            self.reply(server::token_expiring(&exp));
                        }
                        self.warned_expiry = true;
                    }
                    if pong_deadline.is_some_and(|d| d <= now) {
                        if !pong_seen {
                            return Some(Close { code: NO_PONG, reason: "no pong within the pong timeout", flush_first: false, then: AfterClose::Nothing });
                        }
                        pong_deadline = None;
                    }
                    if next_ping <= now {
                        pong_seen = false;
                        self.pump.ping();
                        pong_deadline = Some(now + pong_timeout);
                        next_ping = now + heartbeat;
                    }
                }
                () = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                }
                io = std::future::poll_fn(|cx| {
                    let w = WriterCtx { store: &self.store, user_id: &self.identity.user_id, metrics: &self.app.metrics };
                    self.pump.poll_io(cx, socket, &outbox, &w, read)
                }) => {
                    let msg = match io {
                        Io::Failed | Io::Read(None) => return None,
                        Io::Read(Some(Err(e))) => return self.broken(&e, max),
                        Io::Read(Some(Ok(m))) => m,
                    };
                    if msg.is_pong() {
                        pong_seen = true;
                    } else if msg.is_close() {
                        return None;
                    } else if msg.len() > max {
                        return self.too_large(max);
                    } else if msg.is_binary() {
                        self.reply(server::error(ErrorCode::UnsupportedFrame.as_str(), "send JSON text frames", None, false));
                    } else if msg.is_text() {
                        match self.handle(msg.to_text().unwrap_or_default()) {
                            Handled::Done => {}
                            Handled::Wait(fut) => pending = Some(fut),
                            Handled::Close(c) => return Some(c),
                        }
                        // A refresh may have moved the expiry.
                        (warn_at, expire_at) = self.token_deadlines();
                    }
                }
            }
        }
    }

    /// Closes a client that let its queue stay over budget, or undrained, too long.
    fn slow_consumer(&self) -> Option<Close> {
        self.app.metrics.slow_consumers.inc();
        tracing::info!(user_id = %self.identity.user_id, "closing slow consumer");
        close(
            CloseCode::SlowConsumer,
            "slow consumer: outbound queue did not drain",
        )
    }

    /// A read failed: the close code the client earned (RFC 6455 §7.4.1), or `None` when
    /// the connection is simply gone.
    fn broken(&self, e: &impl ReadFailure, max: usize) -> Option<Close> {
        let code = e.close_code()?;
        tracing::debug!(user_id = %self.identity.user_id, error = %e, code = code.code(), "closing a connection that broke the protocol");
        let reason = match code {
            CloseCode::MessageTooBig => return self.too_large(max),
            CloseCode::InvalidPayload => "text frame is not valid UTF-8",
            _ => "frame violates RFC 6455",
        };
        Some(Close {
            code,
            reason,
            flush_first: false,
            then: AfterClose::Drain,
        })
    }

    /// A message over the size limit: an `error` first, then 1009.
    fn too_large(&self, max: usize) -> Option<Close> {
        self.reply(server::error(
            ErrorCode::MessageTooLarge.as_str(),
            &format!("messages are limited to {max} bytes"),
            None,
            false,
        ));
        Some(Close {
            code: CloseCode::MessageTooBig,
            reason: "message too large",
            flush_first: true,
            then: AfterClose::Drain,
        })
    }

    /// The `token_expiring` and expiry deadlines of the current identity.
    fn token_deadlines(&self) -> (Instant, Instant) {
        match self.expiry_at() {
            Some((w, e)) => (deadline(w), deadline(e)),
            None => (never(), never()),
        }
    }

    /// Ends the connection: the close frame (after what is queued, when asked), then
    /// the client's answer, all bounded by [`CLOSE_LINGER`]. A socket dropped with unread
    /// input is reset, and the reset can destroy the close frame (and its code) before
    /// the client reads it, so a close we start waits for the client's close frame.
    async fn finish<S, E>(&mut self, socket: &mut S, close: Option<Close>)
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Linger + Unpin,
    {
        let ending = async {
            if let Some(c) = close {
                if c.flush_first {
                    let drained = std::future::poll_fn(|cx| {
                        let w = WriterCtx {
                            store: &self.store,
                            user_id: &self.identity.user_id,
                            metrics: &self.app.metrics,
                        };
                        self.pump.poll_drained(cx, socket, &self.outbox, &w)
                    })
                    .await;
                    if drained.is_err() {
                        return;
                    }
                }
                if socket.send(frames::close(c.code, c.reason)).await.is_err() {
                    return;
                }
                match c.then {
                    AfterClose::ClientClose => discard_until_close(socket).await,
                    // Its frames cannot be parsed any more: drain below them.
                    AfterClose::Drain => return socket.linger().await,
                    // A client that stopped answering pings will not answer this either.
                    AfterClose::Nothing => {}
                }
            }
            let _ = socket.close().await;
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, ending).await;
    }

    fn handle(&mut self, text: &str) -> Handled {
        let msg = match parse(text) {
            Ok(m) => m,
            Err(ParseError::BadJson(e)) => {
                self.reply(server::error(
                    ErrorCode::BadJson.as_str(),
                    &format!("not valid JSON: {e}"),
                    None,
                    false,
                ));
                return Handled::Done;
            }
            Err(ParseError::UnknownType(t)) => {
                self.reply(server::error(
                    ErrorCode::UnknownType.as_str(),
                    &format!("unknown message type `{t}`; see docs/PROTOCOL.md §2"),
                    None,
                    false,
                ));
                return Handled::Done;
            }
            Err(ParseError::BadMessage(e)) => {
                self.reply(server::error(
                    ErrorCode::BadMessage.as_str(),
                    &e,
                    None,
                    false,
                ));
                return Handled::Done;
            }
        };
        match msg {
            ClientMessage::Ping {} => self.reply(server::pong()),
            ClientMessage::UserMessage {
                id,
                content,
                thread_id,
                agent,
            } => return self.user_message(id, content, thread_id, agent),
            ClientMessage::Cancel { run_id } => return self.cancel(run_id),
            ClientMessage::Resume {
                thread_id,
                after_seq,
            } => return self.resume(thread_id, after_seq),
            ClientMessage::Auth { token } => {
                if let Some(c) = self.refresh(&token) {
                    return Handled::Close(c);
                }
            }
        }
        Handled::Done
    }

    fn user_message(
        &mut self,
        id: String,
        content: String,
        thread_id: Option<String>,
        agent: Option<String>,
    ) -> Handled {
        let reply_err = |s: &Self, code: &str, msg: &str, retry: bool| {
            s.reply(server::error(code, msg, Some(&id), retry));
            Handled::Done
        };
        if id.is_empty() || id.len() > 200 {
            return reply_err(
                self,
                ErrorCode::BadMessage.as_str(),
                "`id` must be 1 to 200 characters",
                false,
            );
        }
        if content.trim().is_empty() {
            return reply_err(
                self,
                ErrorCode::BadMessage.as_str(),
                "`content` must not be empty",
                false,
            );
        }
        if self.app.is_draining() {
            return reply_err(
                self,
                ErrorCode::ShuttingDown.as_str(),
                "the server is shutting down; resend after reconnecting",
                true,
            );
        }
        let Some(agent) = self.app.agents.resolve(agent.as_deref()) else {
            return reply_err(
                self,
                ErrorCode::UnknownAgent.as_str(),
                "no agent by that name; client_config lists them",
                false,
            );
        };
        let rate_limited = || {
            let per_minute = self.app.config.websocket.messages_per_minute;
            format!("at most {per_minute} messages per minute")
        };
        // A shared (Redis) limit is asked in the wait below, before the message is stored.
        let shared_limit = self.app.limiter.is_shared().then(|| {
            (
                Arc::clone(&self.app.limiter),
                self.conn_id.clone(),
                rate_limited(),
            )
        });
        if shared_limit.is_none()
            && !self
                .app
                .limiter
                .allow(&self.identity.user_id, &self.conn_id, StdInstant::now())
        {
            return reply_err(self, ErrorCode::RateLimited.as_str(), &rate_limited(), true);
        }
        let Some(deps) = self.app.run_deps() else {
            return reply_err(
                self,
                ErrorCode::StoreUnavailable.as_str(),
                "the message store is not reachable",
                true,
            );
        };
        let runs = Arc::clone(&self.app.runs);
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            let reply = |text: String| {
                outbox.push(Outbound::Reply(Arc::from(text)));
            };
            if let Some((limiter, conn_id, limited)) = shared_limit
                && !limiter
                    .allow_shared(&user_id, &conn_id, StdInstant::now())
                    .await
            {
                reply(server::error(
                    ErrorCode::RateLimited.as_str(),
                    &limited,
                    Some(&id),
                    true,
                ));
                return;
            }
            let new = crate::store::NewMessage {
                user_id: &user_id,
                client_id: &id,
                thread_id: thread_id.as_deref(),
                content: &content,
                agent: agent.name(),
            };
            match deps.store.accept_message(new).await {
                Ok(acc) => {
                    let ack = server::ack(&id, &acc.thread_id, &acc.message_id, &acc.run_id);
                    let ack: Arc<str> = Arc::from(ack);
                    if acc.duplicate {
                        if outbox.push(Outbound::Reply(ack)) == Pushed::Closed {
                            tracing::debug!("acknowledged a message on a closing connection");
                        }
                    } else {
                        deps.metrics.user_messages.inc();
                        // The run queues the ack just ahead of its first events, so both
                        // leave in one write (see `HeldAck`).
                        let ack = HeldAck::new(Arc::clone(&outbox), ack);
                        runs.start(deps, &acc, &user_id, &content, agent, ack);
                    }
                }
                Err(crate::store::StoreError::ThreadNotFound) => reply(server::error(
                    ErrorCode::ThreadNotFound.as_str(),
                    "no such thread",
                    Some(&id),
                    false,
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "storing a user message failed");
                    // Resending with the same id is safe (acks are idempotent) when the
                    // failure may pass; bad data fails the same way every time.
                    reply(server::error(
                        e.code(),
                        &e.client_message(),
                        Some(&id),
                        e.is_retryable(),
                    ))
                }
            }
        }))
    }

    fn resume(&mut self, thread_id: String, after_seq: i64) -> Handled {
        let store = self.store.clone();
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            let reply = |text: String| {
                outbox.push(Outbound::Reply(Arc::from(text)));
            };
            match store.thread_owner(&thread_id).await {
                Ok(Some(owner)) if owner == user_id => {
                    outbox.push(Outbound::Replay(Box::new(crate::hub::ReplayRequest {
                        thread_id,
                        after_seq,
                        ref_id: None,
                    })));
                }
                Ok(_) => reply(server::error(
                    ErrorCode::ThreadNotFound.as_str(),
                    "no such thread",
                    None,
                    false,
                )),
                Err(e) => reply(server::error(
                    e.code(),
                    "could not look the thread up",
                    None,
                    e.is_retryable(),
                )),
            }
        }))
    }

    /// Cancels a run of this user: at once when it runs on this node, else through the
    /// store, where the node executing it reads the flag when it renews the run's lease
    /// (`runs::lease`).
    fn cancel(&mut self, run_id: String) -> Handled {
        if self.app.runs.cancel(&self.identity.user_id, &run_id) {
            return Handled::Done;
        }
        if self.store.node().is_none() {
            // No other node shares this store: the run is not running anywhere.
            self.reply(server::error(
                ErrorCode::RunNotFound.as_str(),
                "no such run of yours is in progress",
                None,
                false,
            ));
            return Handled::Done;
        }
        let store = self.store.clone();
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            let error = match store.request_cancel(&user_id, &run_id).await {
                Ok(true) => return,
                Ok(false) => server::error(
                    ErrorCode::RunNotFound.as_str(),
                    "no such run of yours is in progress",
                    None,
                    false,
                ),
                Err(e) => server::error(
                    e.code(),
                    "could not reach the run to cancel it; send the cancel again",
                    None,
                    e.is_retryable(),
                ),
            };
            outbox.push(Outbound::Reply(Arc::from(error)));
        }))
    }

    fn refresh(&mut self, token: &str) -> Option<Close> {
        let Some(v) = &self.app.verifier else {
            self.reply(server::error(
                ErrorCode::BadMessage.as_str(),
                "this server does not use tokens",
                None,
                false,
            ));
            return None;
        };
        match v
            .verify(token, Utc::now())
            .and_then(|fresh| self.identity.refresh(fresh))
        {
            Ok(fresh) => {
                self.identity = fresh;
                self.warned_expiry = false;
                self.reply(server::auth_refreshed(self.identity.expires_at.as_ref()));
                None
            }
            Err(f @ AuthFailure::Forbidden(_)) => {
                self.app.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string());
                Some(Close {
                    code: CloseCode::Forbidden,
                    reason: "refresh for another user",
                    flush_first: true,
                    then: AfterClose::ClientClose,
                })
            }
            Err(f) => {
                self.app.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string());
                None
            }
        }
    }
}
