//! A connection's writer: the only task that writes to the socket. It drains the bounded
//! outbound queue (flushing once per burst, not per message), sends heartbeat pings,
//! replays stored events for `resume`, and drops events the client already got, so each
//! thread's events reach the client exactly once. They arrive in `seq` order except when
//! live events of a thread reach a new connection before its `resume` does: the replay
//! then fills the gap below them (the server cannot know in advance which threads a new
//! connection will resume, and holding live events back could delay them indefinitely).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::frames;

use super::protocol;
use crate::hub::{Outbound, ReplayRequest};
use crate::metrics::Metrics;
use crate::store::Store;

/// Most events fetched per replay query.
const REPLAY_PAGE: u32 = 500;
/// Most messages written before a flush.
const BURST: usize = 64;

/// An instruction from the session to close.
#[derive(Debug, Clone)]
pub struct Close {
    /// Close code.
    pub code: u16,
    /// Reason text.
    pub reason: &'static str,
    /// Send what is queued first (shutdown) or close at once (slow consumer, violations).
    pub flush_first: bool,
}

/// What the writer needs.
pub struct WriterCtx {
    /// Store for replays.
    pub store: Store,
    /// The connection's user (replays are ownership-checked again by the store).
    pub user_id: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Ping interval.
    pub heartbeat: Duration,
    /// Pong wait.
    pub pong_timeout: Duration,
    /// Set by the reader when a pong arrives.
    pub pong_seen: Arc<AtomicBool>,
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

enum Step {
    Continue,
    Stop,
}

/// Runs until a close is requested, the queue closes, or the socket fails.
pub async fn run<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outbound>,
    mut ctrl: tokio::sync::oneshot::Receiver<Close>,
    cx: WriterCtx,
) where
    S: Sink<Message> + Unpin,
{
    let mut sent: HashMap<Arc<str>, Sent> = HashMap::new();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + cx.heartbeat, cx.heartbeat);
    let mut pong_deadline: Option<tokio::time::Instant> = None;
    loop {
        let deadline = async {
            match pong_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            close = &mut ctrl => {
                let Ok(close) = close else { break };
                if close.flush_first {
                    while let Ok(item) = rx.try_recv() {
                        if let Step::Stop = write(&mut sink, item, &mut sent, &cx).await { break }
                    }
                }
                let _ = sink.send(frames::close(close.code, close.reason)).await;
                break;
            }
            item = rx.recv() => {
                let Some(item) = item else { break };
                if let Step::Stop = write(&mut sink, item, &mut sent, &cx).await { break }
                let mut n = 1;
                while n < BURST {
                    let Ok(more) = rx.try_recv() else { break };
                    if let Step::Stop = write(&mut sink, more, &mut sent, &cx).await { return }
                    n += 1;
                }
                if sink.flush().await.is_err() { break }
            }
            _ = ping.tick() => {
                cx.pong_seen.store(false, Ordering::Relaxed);
                if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() { break }
                pong_deadline = Some(tokio::time::Instant::now() + cx.pong_timeout);
            }
            _ = deadline => {
                if cx.pong_seen.load(Ordering::Relaxed) {
                    pong_deadline = None;
                } else {
                    let _ = sink.send(frames::close(1002u16, "no pong within the pong timeout")).await;
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
}

async fn write<S>(
    sink: &mut S,
    item: Outbound,
    sent: &mut HashMap<Arc<str>, Sent>,
    cx: &WriterCtx,
) -> Step
where
    S: Sink<Message> + Unpin,
{
    match item {
        Outbound::Reply(json) => feed(sink, &json, "reply", cx).await,
        Outbound::Event(frame) => {
            let (seq, kind) = (frame.seq, frame.kind);
            match sent.get_mut(&frame.thread_id) {
                // Runs publish in seq order, so anything at or below `last` was sent.
                Some(range) if seq <= range.last => return Step::Continue,
                Some(range) => range.last = seq,
                None => {
                    sent.insert(
                        Arc::clone(&frame.thread_id),
                        Sent {
                            first: seq,
                            last: seq,
                        },
                    );
                }
            }
            feed(sink, &frame.json, kind, cx).await
        }
        Outbound::Replay(request) => {
            let ReplayRequest {
                thread_id,
                after_seq,
                ref_id,
            } = *request;
            // Boxed so the replay's store query is not part of every idle writer's future.
            Box::pin(async move {
                let key: Arc<str> = Arc::from(thread_id.as_str());
                // Live events of this thread may already have gone out (they can reach a new
                // connection before its `resume`): skip those, send everything else after
                // `after_seq`, so the client gets each event once and none is missing.
                let before = sent.get(&key).copied();
                let mut from = after_seq;
                loop {
                    let page = match cx
                        .store
                        .events_after(&cx.user_id, &thread_id, from, REPLAY_PAGE)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            let msg = protocol::error(
                                e.code(),
                                "could not replay this thread",
                                ref_id.as_deref(),
                                e.is_retryable(),
                            );
                            return feed(sink, &msg, "error", cx).await;
                        }
                    };
                    let full = page.len() as u32 == REPLAY_PAGE;
                    for ev in page {
                        from = ev.seq;
                        if before.is_some_and(|b| b.contains(ev.seq)) {
                            continue;
                        }
                        if let Step::Stop = feed(sink, &ev.json, "replay", cx).await {
                            return Step::Stop;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                // Now everything in `after_seq + 1..=from` has been sent, plus what was before.
                if from > after_seq {
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
                    sent.insert(key, now);
                }
                if sink.flush().await.is_err() {
                    return Step::Stop;
                }
                Step::Continue
            })
            .await
        }
    }
}

async fn feed<S>(sink: &mut S, json: &str, kind: &'static str, cx: &WriterCtx) -> Step
where
    S: Sink<Message> + Unpin,
{
    cx.metrics.sent(kind);
    match sink.feed(Message::text(json.to_string())).await {
        Ok(()) => Step::Continue,
        Err(_) => Step::Stop,
    }
}
