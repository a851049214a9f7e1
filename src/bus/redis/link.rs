//! The Redis bus's background work: the publisher (batches queued by runs, pipelined on a
//! pooled connection, each round bounded by the timeout), the subscriber (a dedicated
//! pub/sub connection, pinged so a blackholed Redis is noticed, reconnected with backoff,
//! and followed by a resynchronisation from the store), and the store reads that fill gaps.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame};
use super::order::{FILL_PAGE, Fill};
use super::{Inner, Outgoing, RedisTarget, ThreadKey};
use crate::hub::EventFrame;
use crate::wire::{EventKind, StoredEvent};

/// Most batches sent in one pipeline.
const PIPELINE: usize = 128;
/// How often the subscriber pings, and the publisher retries announcing unsent threads.
const TICK: Duration = Duration::from_secs(1);
/// Tries of a gap fill before what waits is delivered as it is.
const FILL_TRIES: u32 = 3;

/// Starts the publisher and the subscriber.
pub fn start(inner: &Arc<Inner>, rx: mpsc::Receiver<Outgoing>, shutdown: CancellationToken) {
    if inner.target.is_none() {
        tracing::error!("event bus: no Redis URL; events reach this node's sockets only");
        return;
    }
    tokio::spawn(publisher(Arc::clone(inner), rx, shutdown.clone()));
    tokio::spawn(subscriber(Arc::clone(inner), shutdown));
}

fn target(inner: &Inner) -> &RedisTarget {
    inner.target.as_ref().expect("started only with a target")
}

/// Sends queued batches; after a failure, announces the threads whose events may be
/// missing elsewhere once a publish succeeds again.
async fn publisher(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, PIPELINE) => if n == 0 { return },
            _ = tick.tick() => {}
        }
        let syncs = take_unsent(&inner);
        if batch.is_empty() && syncs.is_empty() {
            continue;
        }
        let mut payloads: Vec<&[u8]> = syncs.iter().map(|(_, p)| p.as_slice()).collect();
        payloads.extend(batch.iter().map(|o| o.payload.as_slice()));
        match send(&inner, &payloads).await {
            Ok(()) => {
                inner.publishing.store(true, Relaxed);
                inner.metrics.published.inc_by(batch.len() as u64);
            }
            Err(e) => {
                if inner.publishing.swap(false, Relaxed) {
                    tracing::warn!(error = %e, "event bus: publish to Redis failed; other nodes will fetch from the store when it is back");
                }
                inner.set_error(&e);
                for ((user, thread), after) in syncs.into_iter().map(|(k, _)| k) {
                    inner.mark_unsent(&user, &thread, after);
                }
                for o in &batch {
                    inner.mark_unsent(&o.user, &o.thread, o.first_seq - 1);
                }
            }
        }
        batch.clear();
    }
}

type Unsent = (ThreadKey, i64);

/// The announcements of threads whose publish failed, encoded.
fn take_unsent(inner: &Inner) -> Vec<(Unsent, Vec<u8>)> {
    let taken = std::mem::take(&mut *inner.unsent.lock().unwrap_or_else(|p| p.into_inner()));
    taken
        .into_iter()
        .map(|((user, thread), after)| {
            let payload = frame::encode(&Frame::Sync {
                node: inner.node,
                user: &user,
                thread: &thread,
                after,
            });
            (((user, thread), after), payload)
        })
        .collect()
}

/// One pipeline of PUBLISH commands, bounded by the timeout (a blackholed Redis costs a
/// timeout, never a hang).
async fn send(inner: &Inner, payloads: &[&[u8]]) -> Result<(), String> {
    let t = target(inner);
    let work = async {
        let mut conn = t.pool.get().await.map_err(|e| e.to_string())?;
        let mut pipe = deadpool_redis::redis::pipe();
        for p in payloads {
            pipe.cmd("PUBLISH").arg(&inner.channel).arg(*p).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(t.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", t.timeout.as_millis())),
    }
}

/// Keeps a subscription up; after each (re)subscription, resynchronises from the store.
async fn subscriber(inner: Arc<Inner>, stop: CancellationToken) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut delay = FIRST;
    let mut ever = false;
    loop {
        match listen(&inner, &stop, &mut ever).await {
            Ok(()) => return,
            Err(e) => {
                let was_up = inner.subscribed.swap(false, Relaxed);
                if was_up || !ever {
                    tracing::warn!(error = %e, "event bus: Redis subscription lost; this node's own events still reach its sockets");
                    ever = true;
                }
                inner.set_error(&e);
                inner.metrics.redis_up.set(0);
                if was_up {
                    // Once per outage: where its users' threads stood when Redis went away.
                    snapshot_all(&inner);
                    delay = FIRST;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One subscription, until it fails (`Err`) or shutdown (`Ok`).
async fn listen(
    inner: &Arc<Inner>,
    stop: &CancellationToken,
    ever: &mut bool,
) -> Result<(), String> {
    let t = target(inner);
    let bounded = |what: &'static str| {
        move |_| format!("{what}: no answer within {} ms", t.timeout.as_millis())
    };
    let pubsub = tokio::time::timeout(t.timeout, t.client.get_async_pubsub())
        .await
        .map_err(bounded("connect"))?
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = pubsub.split();
    tokio::time::timeout(t.timeout, sink.subscribe(&inner.channel))
        .await
        .map_err(bounded("subscribe"))?
        .map_err(|e| e.to_string())?;
    inner.subscribed.store(true, Relaxed);
    inner.metrics.redis_up.set(1);
    inner.metrics.subscriptions.inc();
    if *ever {
        tracing::info!("event bus: Redis subscription back; resynchronising from the store");
    }
    *ever = true;
    // Whatever was published while this node was not listening is in the store.
    resync_all(inner);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = stream.next() => match msg {
                Some(msg) => receive(inner, msg.get_payload_bytes()),
                None => return Err("the subscription connection closed".into()),
            },
            _ = tick.tick() => {
                tokio::time::timeout(t.timeout, sink.ping::<deadpool_redis::redis::Value>())
                    .await
                    .map_err(bounded("ping"))?
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

/// A message from the channel.
fn receive(inner: &Arc<Inner>, bytes: &[u8]) {
    // The user first: most messages are for users with no socket here.
    match frame::header(bytes) {
        Some((node, user)) if node != inner.node && inner.local.has_user(user) => {}
        _ => return,
    }
    match frame::decode(bytes) {
        Some(Frame::Events {
            user,
            thread,
            events,
            ..
        }) => {
            inner.metrics.received.inc();
            let thread: Arc<str> = Arc::from(thread);
            let frames: Vec<Arc<EventFrame>> = events
                .into_iter()
                .map(|(seq, kind, json)| frame_of(&thread, seq, static_kind(kind), json.into()))
                .collect();
            if let Some(fill) = inner.order.arrive(&inner.local, user, &thread, &frames) {
                fill_later(inner, fill);
            }
        }
        Some(Frame::Sync {
            user,
            thread,
            after,
            ..
        }) => {
            if let Some(fill) = inner.order.lost_after(user, &Arc::from(thread), after) {
                fill_later(inner, fill);
            }
        }
        None => tracing::debug!("event bus: ignored a message that is not a portcullis frame"),
    }
}

fn frame_of(thread: &Arc<str>, seq: i64, kind: &'static str, json: String) -> Arc<EventFrame> {
    Arc::new(EventFrame {
        thread_id: Arc::clone(thread),
        seq,
        kind,
        json: json.into(),
    })
}

/// The event kinds as the static names metrics use.
fn static_kind(kind: &str) -> &'static str {
    EventKind::parse(kind).map_or("event", EventKind::as_str)
}

/// The `type` of a stored event's JSON.
fn kind_of(json: &str) -> &'static str {
    let Some(at) = json.find("\"type\":\"") else {
        return "event";
    };
    let rest = &json[at + 8..];
    static_kind(&rest[..rest.find('"').unwrap_or(0)])
}

/// Runs a fill (and the next ones it asks for) in the background.
pub fn fill_later(inner: &Arc<Inner>, fill: Fill) {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        let mut fill = fill;
        loop {
            let next = match fetch(&inner, &fill).await {
                Some(frames) => inner.order.filled(&inner.local, &fill, &frames),
                None => {
                    inner.order.fill_failed(&inner.local, &fill);
                    None
                }
            };
            match next {
                Some(n) => fill = n,
                None => return,
            }
        }
    });
}

/// The events of a fill from the store, with a few tries.
async fn fetch(inner: &Inner, fill: &Fill) -> Option<Vec<Arc<EventFrame>>> {
    for attempt in 1..=FILL_TRIES {
        let result = match inner.store() {
            Some(store) => store
                .events_after(&fill.user, &fill.thread, fill.after, FILL_PAGE)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the store is not connected yet".into()),
        };
        match result {
            Ok(events) => {
                return Some(
                    events
                        .into_iter()
                        .map(|StoredEvent { seq, json, .. }| {
                            let kind = kind_of(&json);
                            frame_of(&fill.thread, seq, kind, json)
                        })
                        .collect(),
                );
            }
            Err(e) if attempt == FILL_TRIES => {
                tracing::warn!(error = %e, thread_id = %fill.thread, "event bus: could not fetch missed events; clients can resume");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
        }
    }
    None
}

/// The heads `(thread, last seq)` of a user's threads.
async fn heads(inner: &Inner, user: &str) -> Option<Vec<(String, i64)>> {
    let threads = inner.store()?.list_threads(user).await.ok()?;
    Some(
        threads
            .into_iter()
            .map(|t| (t.thread_id, t.last_seq))
            .collect(),
    )
}

/// Notes where the user's threads stand (Redis is away).
pub fn snapshot_later(inner: &Arc<Inner>, user: String) {
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Some(h) = heads(&inner, &user).await
            && inner.local.has_user(&user)
        {
            inner.order.snapshot(&user, &h);
        }
    });
}

fn snapshot_all(inner: &Arc<Inner>) {
    for user in inner.local.users() {
        snapshot_later(inner, user);
    }
}

/// Brings every user with a socket here up to the store.
fn resync_all(inner: &Arc<Inner>) {
    for user in inner.local.users() {
        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            let Some(h) = heads(&inner, &user).await else {
                return;
            };
            for fill in inner.order.resync(&user, &h) {
                fill_later(&inner, fill);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_read_from_stored_json() {
        assert_eq!(
            kind_of(r#"{"type":"agent_completed","seq":3}"#),
            "agent_completed"
        );
        assert_eq!(
            kind_of(r#"{"seq":3,"type":"tool_executing"}"#),
            "tool_executing"
        );
        assert_eq!(kind_of(r#"{"type":"whatever"}"#), "event");
        assert_eq!(kind_of("{}"), "event");
    }
}
