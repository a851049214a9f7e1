//! Writing to the socket without ever waiting on it: the connection's task polls
//! [`Pump::poll_io`], which moves queued items into the socket while it accepts them,
//! flushes once per burst (not per message), sends due pings, serves `resume` replays
//! page by page, and reads the next client message, all in one poll. A client that stops
//! reading therefore cannot stall its connection's task: reading, timers and the slow-
//! consumer check go on while the socket is full, and the queue staying over budget or
//! undrained for the send timeout ends it.
//!
//! Events the client already got are dropped, so each thread's events reach the client
//! exactly once. They arrive in `seq` order except when live events of a thread reach a
//! new connection before its `resume` does: the replay then fills the gap below them (the
//! server cannot know in advance which threads a new connection will resume, and holding
//! live events back could delay them indefinitely).

use std::collections::VecDeque;

use foldhash::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use futures_util::{Sink, Stream};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::hub::{Outbound, Outbox, ReplayRequest};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::wire::server;
use crate::wire::{CloseCode, EventKind, StoredEvent};

/// Most events fetched per replay query.
const REPLAY_PAGE: u32 = 500;
/// Largest frame written: a longer message goes out as a text frame and continuation
/// frames of this size (RFC 6455 §5.4), so any stored event can be sent, whatever its
/// size, through a socket buffer that stays small (docs/PROTOCOL.md, "Frames").
pub const FRAGMENT: usize = 16 * 1024;
/// Most messages written before the task gives other work a turn.
const BURST: usize = 64;

/// An instruction to close the connection.
#[derive(Debug, Clone)]
pub struct Close {
    /// Close code.
    pub code: CloseCode,
    /// Reason text.
    pub reason: &'static str,
    /// Send what is queued first (shutdown) or close at once (slow consumer, violations).
    pub flush_first: bool,
    /// What to wait for after the close frame.
    pub then: AfterClose,
}

/// What a closing connection waits for after its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClose {
    /// The client's close frame (the closing handshake).
    ClientClose,
    /// The client's end of the stream, discarding raw input: its frames cannot be parsed.
    Drain,
    /// Nothing: the client stopped answering.
    Nothing,
}

/// What writing needs from the connection.
pub struct WriterCtx<'a> {
    /// Store for replays.
    pub store: &'a Store,
    /// The connection's user (replays are ownership-checked again by the store).
    pub user_id: &'a str,
    /// Metrics.
    pub metrics: &'a Metrics,
}

/// The events `first..=last` of one thread have been sent on this connection.
#[derive(Debug, Clone, Copy)]
struct Sent {
    first: i64,
    last: i64,
}

impl Sent {
    fn contains(&self, seq: i64) -> bool {
        self.first <= seq && seq <= self.last
    }
}

/// A `resume` being served: the pages of stored events still to send.
struct Replay {
    key: Arc<str>,
    thread_id: String,
    after_seq: i64,
    ref_id: Option<String>,
    /// What had been sent of this thread when the replay started.
    before: Option<Sent>,
    /// The last seq fetched so far.
    from: i64,
    page: VecDeque<StoredEvent>,
    fetch: Option<BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>>>,
    more: bool,
}

/// What [`Pump::poll_io`] reports.
pub enum Io<E> {
    /// The next client message (`None`: the stream ended).
    Read(Option<Result<Message, E>>),
    /// The socket failed while writing.
    Failed,
}

/// The connection's write side.
#[derive(Default)]
pub struct Pump {
    sent: HashMap<Arc<str>, Sent>,
    /// Something was handed to the socket since its last completed flush.
    dirty: bool,
    /// A ping is due.
    ping: bool,
    replay: Option<Box<Replay>>,
    /// The rest of a message being sent in fragments (boxed: rare, and every idle
    /// connection would pay for it inline).
    rest: Option<Box<Fragments>>,
}

/// A text message larger than [`FRAGMENT`] on its way out, one frame at a time.
struct Fragments {
    data: bytes::Bytes,
    at: usize,
}

impl Fragments {
    /// The next continuation frame; `None` after the last.
    fn next(&mut self) -> Option<Message> {
        if self.at >= self.data.len() {
            return None;
        }
        let end = (self.at + FRAGMENT).min(self.data.len());
        let chunk = self.data.slice(self.at..end);
        self.at = end;
        let last = end == self.data.len();
        Some(Message::Frame(Frame::message(
            chunk,
            OpCode::Data(Data::Continue),
            last,
        )))
    }
}

impl Pump {
    /// Asks for a ping to be sent with the next writes.
    pub fn ping(&mut self) {
        self.ping = true;
    }

    /// Writes what it can, then reads one message when `read` is set. Pending until a
    /// message arrives or the socket fails; queued work wakes it through the outbox.
    pub fn poll_io<S, E>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
        outbox: &Outbox,
        w: &WriterCtx<'_>,
        read: bool,
    ) -> Poll<Io<E>>
    where
        S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    {
        if self.poll_write(cx, socket, outbox, w).is_err() {
            return Poll::Ready(Io::Failed);
        }
        if read {
            if let Poll::Ready(msg) = Pin::new(socket).poll_next(cx) {
                return Poll::Ready(Io::Read(msg));
            }
        }
        Poll::Pending
    }

    /// Ready once everything queued (and any replay) has been written and flushed.
    pub fn poll_drained<S>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
        outbox: &Outbox,
        w: &WriterCtx<'_>,
    ) -> Poll<Result<(), ()>>
    where
        S: Sink<Message> + Unpin,
    {
        self.poll_write(cx, socket, outbox, w)?;
        let busy = self.dirty || self.ping || self.replay.is_some() || self.rest.is_some();
        if busy || !outbox.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Moves queued items into the socket while it takes them, then flushes.
    fn poll_write<S>(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut S,
        outbox: &Outbox,
        w: &WriterCtx<'_>,
    ) -> Result<(), ()>
    where
        S: Sink<Message> + Unpin,
    {
        let mut written = 0;
        while written < BURST {
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => break,
            }
            let frame = match self.rest.as_mut().and_then(|r| r.next()) {
                Some(frame) => frame,
                None => {
                    self.rest = None;
                    let Some((text, kind)) = self.next_frame(cx, outbox, w) else {
                        break;
                    };
                    match kind {
                        "ping" => Message::Ping(bytes::Bytes::new()),
                        _ => {
                            w.metrics.sent(kind);
                            self.text_frame(text)
                        }
                    }
                }
            };
            if Pin::new(&mut *socket).start_send(frame).is_err() {
                return Err(());
            }
            self.dirty = true;
            written += 1;
        }
        if written == BURST {
            // More may be queued: come back after the other branches had their turn.
            outbox.rewake();
        }
        let was_dirty = self.dirty;
        if self.dirty {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        // Only passes that wrote or flushed: an idle poll costs no lock.
        if written > 0 || was_dirty {
            outbox.wrote(written > 0, self.dirty);
        }
        Ok(())
    }

    /// A text message, or the first of its fragments when it is longer than [`FRAGMENT`].
    fn text_frame(&mut self, text: Utf8Bytes) -> Message {
        if text.len() <= FRAGMENT {
            return Message::Text(text);
        }
        let data = bytes::Bytes::from(text);
        let first = data.slice(..FRAGMENT);
        self.rest = Some(Box::new(Fragments { data, at: FRAGMENT }));
        Message::Frame(Frame::message(first, OpCode::Data(Data::Text), false))
    }

    /// The next frame to write, or `None` when nothing can be written now.
    fn next_frame(
        &mut self,
        cx: &mut Context<'_>,
        outbox: &Outbox,
        w: &WriterCtx<'_>,
    ) -> Option<(Utf8Bytes, &'static str)> {
        if self.ping {
            self.ping = false;
            return Some((Utf8Bytes::default(), "ping"));
        }
        loop {
            if let Some(replay) = &mut self.replay {
                match replay.poll_next(cx, w) {
                    Poll::Ready(Some((json, kind))) => return Some((json.into(), kind)),
                    Poll::Ready(None) => {
                        let done = self.replay.take().expect("checked");
                        done.record(&mut self.sent);
                    }
                    // Live items wait behind the replay, which keeps their order.
                    Poll::Pending => return None,
                }
            }
            match outbox.pop()? {
                Outbound::Reply(json) => return Some((json.to_string().into(), "reply")),
                Outbound::Event(frame) => {
                    let seq = frame.seq;
                    match self.sent.get_mut(&frame.thread_id) {
                        // Runs publish in seq order, so anything at or below `last` was sent.
                        Some(range) if seq <= range.last => continue,
                        Some(range) => range.last = seq,
                        None => {
                            self.sent.insert(
                                Arc::clone(&frame.thread_id),
                                Sent {
                                    first: seq,
                                    last: seq,
                                },
                            );
                        }
                    }
                    // A reference to the stored JSON, not a copy of it.
                    return Some((frame.json.clone(), frame.kind));
                }
                Outbound::Deltas(mut d) => {
                    match self.sent.get_mut(&d.thread_id) {
                        // Cut off what a replay already sent; nothing left, nothing to send.
                        Some(range) if !d.skip_through(range.last) => continue,
                        Some(range) => range.last = d.seq_to,
                        None => {
                            let (first, last) = (d.seq, d.seq_to);
                            self.sent
                                .insert(Arc::clone(&d.thread_id), Sent { first, last });
                        }
                    }
                    return Some((d.to_json().into(), EventKind::AgentResponse.as_str()));
                }
                Outbound::Replay(request) => {
                    self.replay = Some(Box::new(Replay::start(*request, &self.sent)));
                }
            }
        }
    }
}

impl Replay {
    fn start(request: ReplayRequest, sent: &HashMap<Arc<str>, Sent>) -> Self {
        let ReplayRequest {
            thread_id,
            after_seq,
            ref_id,
        } = request;
        let key: Arc<str> = Arc::from(thread_id.as_str());
        // Live events of this thread may already have gone out (they can reach a new
        // connection before its `resume`): skip those, send everything else after
        // `after_seq`, so the client gets each event once and none is missing.
        let before = sent.get(&key).copied();
        Self {
            key,
            thread_id,
            after_seq,
            ref_id,
            before,
            from: after_seq,
            page: VecDeque::new(),
            fetch: None,
            more: true,
        }
    }

    /// The next stored event to send; `None` when the replay is complete.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        w: &WriterCtx<'_>,
    ) -> Poll<Option<(String, &'static str)>> {
        loop {
            while let Some(ev) = self.page.pop_front() {
                self.from = ev.seq;
                if !self.before.is_some_and(|b| b.contains(ev.seq)) {
                    return Poll::Ready(Some((ev.json, "replay")));
                }
            }
            if !self.more {
                return Poll::Ready(None);
            }
            let fetch = self.fetch.get_or_insert_with(|| {
                let (store, user, thread, from) = (
                    w.store.clone(),
                    w.user_id.to_string(),
                    self.thread_id.clone(),
                    self.from,
                );
                Box::pin(async move { store.events_after(&user, &thread, from, REPLAY_PAGE).await })
            });
            let result = ready!(fetch.as_mut().poll(cx));
            self.fetch = None;
            match result {
                Ok(page) => {
                    self.more = page.len() as u32 == REPLAY_PAGE;
                    self.page = page.into();
                }
                Err(e) => {
                    self.more = false;
                    let msg = server::error(
                        e.code(),
                        "could not replay this thread",
                        self.ref_id.as_deref(),
                        e.is_retryable(),
                    );
                    return Poll::Ready(Some((msg, "error")));
                }
            }
        }
    }

    /// Records what the finished replay sent: everything in `after_seq + 1..=from`,
    /// plus what had been sent before.
    fn record(self, sent: &mut HashMap<Arc<str>, Sent>) {
        let (after_seq, from, before) = (self.after_seq, self.from, self.before);
        if from <= after_seq {
            return;
        }
        let mut now = Sent {
            first: after_seq + 1,
            last: from,
        };
        if let Some(b) = before
            && b.first < now.first
            && b.last >= after_seq
        {
            now.first = b.first;
        }
        if let Some(b) = before {
            now.last = now.last.max(b.last);
        }
        sent.insert(self.key, now);
    }
}
