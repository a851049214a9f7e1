//! The open connection's loop: one `select!` over the outbox, shutdown, one timer (the
//! next ping, the pong deadline, the token's `token_expiring` and expiry, the slow-consumer
//! deadline), a message handler waiting for the store, and socket I/O through the
//! [`Pump`](crate::ws::writer::Pump). Then the close: the close frame (after what is queued, when asked) and the
//! client's answer, bounded.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{Sink, SinkExt, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{CLOSE_LINGER, Handled, Pending, Session, discard_until_close};
use crate::auth::AuthFailure;
use crate::hub::Outbox;
use crate::wire::close::ReadFailure;
use crate::wire::server;
use crate::wire::{CloseCode, ErrorCode};
use crate::ws::frames;
use crate::ws::linger::Linger;
use crate::ws::writer::{AfterClose, Close, Io, WriterCtx};

/// The close code for a client that did not answer a ping in time.
const NO_PONG: CloseCode = CloseCode::ProtocolError;

/// What the loop's one timer watches, besides the outbox's slow-consumer deadline.
struct Clock {
    heartbeat: Duration,
    pong_timeout: Duration,
    next_ping: Instant,
    /// Set while a ping waits for its pong.
    pong_deadline: Option<Instant>,
    pong_seen: bool,
    /// When to send `token_expiring`.
    warn_at: Instant,
    /// When the token (plus leeway) has expired.
    expire_at: Instant,
}

impl Clock {
    /// The earliest thing due.
    fn next(&self, warned_expiry: bool, outbox: &Outbox) -> Instant {
        let mut next = self.next_ping.min(self.expire_at);
        if !warned_expiry {
            next = next.min(self.warn_at);
        }
        if let Some(d) = self.pong_deadline {
            next = next.min(d);
        }
        // The slow-consumer deadline moves with every push and write: the timer
        // branch checks it again when it fires.
        if let Some(d) = outbox.slow_deadline() {
            next = next.min(Instant::from_std(d));
        }
        next
    }
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

impl Session {
    /// Serves the connection until it has to end; `Some` when the server ends it.
    pub(super) async fn serve<S, E>(&mut self, socket: &mut S) -> Option<Close>
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
        E: ReadFailure,
    {
        let settings = &self.deps.websocket;
        let (heartbeat, pong_timeout) = (settings.heartbeat, settings.pong_timeout);
        let max = settings.max_message_bytes;
        let close_sessions = self.deps.close_sessions.clone();
        let outbox = Arc::clone(&self.outbox);
        let (warn_at, expire_at) = self.token_deadlines();
        let mut clock = Clock {
            heartbeat,
            pong_timeout,
            next_ping: Instant::now() + heartbeat,
            pong_deadline: None,
            pong_seen: true,
            warn_at,
            expire_at,
        };
        let mut pending: Option<Pending> = None;
        // One timer for everything due: the next ping, the pong deadline, the expiry.
        let mut due = clock.next_ping;
        let timer = tokio::time::sleep_until(due);
        tokio::pin!(timer);
        loop {
            let next = clock.next(self.warned_expiry, &outbox);
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
                    if let Some(close) = self.tick(&mut clock, &outbox) {
                        return Some(close);
                    }
                }
                () = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                }
                io = std::future::poll_fn(|cx| {
                    let w = WriterCtx { store: &self.store, user_id: &self.identity.user_id, metrics: &self.deps.metrics };
                    self.pump.poll_io(cx, socket, &outbox, &w, read)
                }) => {
                    let msg = match io {
                        Io::Failed | Io::Read(None) => return None,
                        Io::Read(Some(Err(e))) => return self.broken(&e, max),
                        Io::Read(Some(Ok(m))) => m,
                    };
                    match self.frame(msg, max, &mut clock) {
                        Ok(Some(wait)) => pending = Some(wait),
                        Ok(None) => {}
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// The timer fired: the slow consumer, the token's expiry and warning, the pong
    /// deadline and the next ping, in that order. `Some` ends the connection.
    fn tick(&mut self, clock: &mut Clock, outbox: &Outbox) -> Option<Close> {
        let now = Instant::now();
        if outbox.is_slow() {
            return self.slow_consumer();
        }
        if clock.expire_at <= now {
            self.reply(AuthFailure::TokenExpired.error_message().to_string());
            return Some(Close {
                code: CloseCode::Unauthorized,
                reason: "token expired",
                flush_first: true,
                then: AfterClose::ClientClose,
            });
        }
        if !self.warned_expiry && clock.warn_at <= now {
            if let Some(exp) = self.identity.expires_at {
                self.reply(server::token_expiring(&exp));
            }
            self.warned_expiry = true;
        }
        if clock.pong_deadline.is_some_and(|d| d <= now) {
            if !clock.pong_seen {
                return Some(Close {
                    code: NO_PONG,
                    reason: "no pong within the pong timeout",
                    flush_first: false,
                    then: AfterClose::Nothing,
                });
            }
            clock.pong_deadline = None;
        }
        if clock.next_ping <= now {
            clock.pong_seen = false;
            self.pump.ping();
            clock.pong_deadline = Some(now + clock.pong_timeout);
            clock.next_ping = now + clock.heartbeat;
        }
        None
    }

    /// A frame from the client: `Ok` with a handler still waiting for the store, or
    /// `Err` with what [`Session::serve`] returns to end the connection.
    fn frame(
        &mut self,
        msg: Message,
        max: usize,
        clock: &mut Clock,
    ) -> Result<Option<Pending>, Option<Close>> {
        if msg.is_pong() {
            clock.pong_seen = true;
        } else if msg.is_close() {
            return Err(None);
        } else if msg.len() > max {
            return Err(self.too_large(max));
        } else if msg.is_binary() {
            self.reply(server::error(
                ErrorCode::UnsupportedFrame.as_str(),
                "send JSON text frames",
                None,
                false,
            ));
        } else if msg.is_text() {
            let wait = match self.handle(msg.to_text().unwrap_or_default()) {
                Handled::Done => None,
                Handled::Wait(fut) => Some(fut),
                Handled::Close(c) => return Err(Some(c)),
            };
            // A refresh may have moved the expiry.
            (clock.warn_at, clock.expire_at) = self.token_deadlines();
            return Ok(wait);
        }
        Ok(None)
    }
    /// Closes a client that let its queue stay over budget, or undrained, too long.
    fn slow_consumer(&self) -> Option<Close> {
        self.deps.metrics.slow_consumers.inc();
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
        let leeway = self.deps.auth.jwt.as_ref().map_or(0, |j| j.leeway_s);
        // The schema caps leeway at 300 s.
        let leeway = chrono::Duration::seconds(i64::try_from(leeway.min(300)).unwrap_or(300));
        Some((exp - margin, exp + leeway))
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
    pub(super) async fn finish<S, E>(&mut self, socket: &mut S, close: Option<Close>)
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
                            metrics: &self.deps.metrics,
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
}
