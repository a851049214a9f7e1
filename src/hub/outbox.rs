//! A connection's outbound queue: bounded in bytes, never blocking a producer (runs
//! publish with [`Outbox::push`] while holding the hub's lock), drained by the
//! connection's task.
//!
//! It replaces a tokio `mpsc` channel plus a cancellation token because every open
//! connection owns one: the channel allocated a 32-slot block and cache-padded counters
//! up front (about 1.3 KB per idle connection), this costs ~100 bytes until something is
//! queued, and gives memory back after a burst.
//!
//! The slow-consumer rule judges the client, not the burst of a run: the queue may go
//! over its byte budget, and the connection is slow (its task closes it with 4509; the
//! events stay stored, so `resume` recovers them) only when the queue stayed over budget,
//! or held items while nothing was written, for the send timeout. Memory stays bounded:
//! a push finding twice the budget queued marks the connection slow at once and drops
//! the item. While more than a sixteenth of the budget waits, consecutive deltas of a run
//! are merged (see `coalesce`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Outbound;
use super::coalesce::{DELTA, Deltas};

/// Waiting deltas are merged once more than 1/this of the budget is queued.
const COALESCE_FROM: usize = 16;
/// Capacity kept after a drain; a burst larger than this gives its memory back.
const KEEP: usize = 16;

/// What became of a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connection.
    Queued,
    /// The queue was far over its budget: the item was dropped and the connection marked
    /// slow.
    Full,
    /// The connection is closing: the item was dropped.
    Closed,
}

/// One connection's outbound queue.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Outbound>,
    /// Bytes queued (see [`Outbound::cost`]).
    bytes: usize,
    budget: usize,
    timeout: Duration,
    /// Since when the queue has been over budget.
    over_since: Option<Instant>,
    /// Since when items have waited with nothing written (the last write, or the push
    /// onto an empty queue).
    waiting_since: Option<Instant>,
    slow: bool,
    closed: bool,
}

impl Outbound {
    /// Bytes this item stands for in a queue's budget.
    pub fn cost(&self) -> usize {
        match self {
            Outbound::Reply(text) => text.len(),
            Outbound::Event(frame) => frame.json.len(),
            Outbound::Deltas(d) => d.cost(),
            Outbound::Replay(_) => 64,
        }
    }
}

impl Outbox {
    /// An empty queue with a budget of `budget` bytes (at least one) and the time a
    /// client may leave it over budget or undrained.
    pub fn new(budget: usize, timeout: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                budget: budget.max(1),
                timeout,
                over_since: None,
                waiting_since: None,
                slow: false,
                closed: false,
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item` without waiting and wakes the connection's task.
    pub fn push(&self, item: Outbound) -> Pushed {
        let mut s = self.lock();
        let pushed = if s.closed {
            Pushed::Closed
        } else if s.bytes > s.budget.saturating_mul(2) {
            s.slow = true;
            Pushed::Full
        } else {
            s.queue(item);
            Pushed::Queued
        };
        drop(s);
        if pushed != Pushed::Closed {
            self.wake.notify_one();
        }
        pushed
    }

    /// Whether the connection must be closed as a slow consumer: a push found the queue
    /// far over budget, or the send timeout has passed (see [`Outbox::slow_deadline`]).
    pub fn is_slow(&self) -> bool {
        let s = self.lock();
        s.slow || s.deadline().is_some_and(|d| d <= Instant::now())
    }

    /// When the connection becomes slow unless the queue drains first.
    pub fn slow_deadline(&self) -> Option<Instant> {
        self.lock().deadline()
    }

    /// The oldest queued item.
    pub fn pop(&self) -> Option<Outbound> {
        let mut s = self.lock();
        let item = s.items.pop_front()?;
        s.bytes -= item.cost();
        if s.bytes <= s.budget {
            s.over_since = None;
        }
        if s.items.is_empty() {
            s.waiting_since = None;
            if s.items.capacity() > KEEP {
                s.items = VecDeque::new();
            }
        }
        Some(item)
    }

    /// Records a write pass of the connection's task: `progress` when it moved items into
    /// the socket, `unflushed` while the socket still holds bytes it could not send. Bytes
    /// stuck in the socket count as waiting too: one large frame can be all there is.
    pub fn wrote(&self, progress: bool, unflushed: bool) {
        let mut s = self.lock();
        let now = Instant::now();
        let was = s.waiting_since;
        s.waiting_since = match (s.items.is_empty(), unflushed) {
            (true, false) => None,
            _ if progress => Some(now),
            _ => was.or(Some(now)),
        };
        let started = was.is_none() && s.waiting_since.is_some();
        drop(s);
        if started {
            // A new deadline: the task's loop must see it to set its timer.
            self.wake.notify_one();
        }
    }

    /// Waits until something was pushed (or the queue overflowed) since the last wait.
    /// A push that happens while nobody waits is remembered, so none is missed.
    pub async fn pushed(&self) {
        self.wake.notified().await;
    }

    /// Wakes the waiter once more (when it stopped draining before the queue was empty).
    pub fn rewake(&self) {
        self.wake.notify_one();
    }

    /// Refuses further pushes and drops what is queued.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.items = VecDeque::new();
        s.bytes = 0;
    }

    /// Bytes queued now (what `send_queue_bytes` budgets), for `/metrics`.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }
}

impl State {
    fn queue(&mut self, item: Outbound) {
        let now = Instant::now();
        if self.items.is_empty() {
            self.waiting_since = Some(now);
        }
        // Merging costs a parse: only a queue backing up is worth it, and a client that
        // keeps up gets every event exactly as stored.
        let backed_up = self.bytes > self.budget / COALESCE_FROM;
        self.bytes += item.cost();
        let item = match backed_up {
            true => match self.coalesce(item) {
                Some(item) => item,
                None => return,
            },
            false => item,
        };
        self.items.push_back(item);
        if self.bytes > self.budget && self.over_since.is_none() {
            self.over_since = Some(now);
        }
    }

    /// Merges a delta into a waiting delta of the same run; gives the item back when it
    /// cannot be merged. The budget is kept in step with the merged item's cost.
    fn coalesce(&mut self, item: Outbound) -> Option<Outbound> {
        let Outbound::Event(next) = &item else {
            return Some(item);
        };
        if next.kind != DELTA {
            return Some(item);
        }
        let before = match self.items.back() {
            Some(last) => last.cost(),
            None => return Some(item),
        };
        let merged = match self.items.back_mut() {
            Some(Outbound::Deltas(d)) => d.absorb(next),
            Some(Outbound::Event(first)) => match Deltas::merge(first, next) {
                Some(d) => {
                    *self.items.back_mut().expect("checked") = Outbound::Deltas(Box::new(d));
                    true
                }
                None => false,
            },
            _ => false,
        };
        if !merged {
            return Some(item);
        }
        let after = self.items.back().map_or(0, Outbound::cost);
        self.bytes = self.bytes - item.cost() - before + after;
        None
    }

    fn deadline(&self) -> Option<Instant> {
        let since = [self.over_since, self.waiting_since]
            .into_iter()
            .flatten()
            .min()?;
        Some(since + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::EventFrame;
    use std::sync::Arc;

    fn reply(s: &str) -> Outbound {
        Outbound::Reply(Arc::from(s))
    }

    fn delta(run: &str, seq: i64, text: &str) -> Outbound {
        let json = serde_json::json!({"type": DELTA, "delta": text, "run_id": run, "thread_id": "t", "seq": seq});
        Outbound::Event(Arc::new(EventFrame {
            thread_id: Arc::from("t"),
            seq,
            kind: DELTA,
            json: json.to_string().into(),
        }))
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn over_budget_is_slow_only_after_the_timeout_and_far_over_at_once() {
        let q = Outbox::new(10, LONG);
        assert_eq!(q.push(reply("0123456789ab")), Pushed::Queued);
        assert!(!q.is_slow(), "over budget, but not for long");
        let due = q.slow_deadline().expect("a deadline while over budget");
        assert!(due > Instant::now() + Duration::from_secs(3000));
        assert_eq!(q.push(reply("0123456789")), Pushed::Queued);
        assert_eq!(q.push(reply("x")), Pushed::Full, "over twice the budget");
        assert!(q.is_slow());
        let q = Outbox::new(10, Duration::ZERO);
        q.push(reply("0123456789ab"));
        assert!(q.is_slow(), "the timeout passed while over budget");
    }

    #[test]
    fn a_draining_queue_has_no_deadline() {
        let q = Outbox::new(100, Duration::ZERO);
        q.push(reply("a"));
        assert!(q.is_slow(), "held with nothing written for the timeout");
        let q = Outbox::new(100, LONG);
        q.push(reply("a"));
        q.push(reply("b"));
        assert!(q.slow_deadline().is_some());
        q.pop();
        q.pop();
        assert_eq!(q.slow_deadline(), None, "empty again");
        let texts: Vec<_> = (0..3).map(|i| reply(&i.to_string())).collect();
        texts.into_iter().for_each(|t| {
            q.push(t);
        });
        assert_eq!(
            std::iter::from_fn(|| q.pop()).count(),
            3,
            "in order, none lost"
        );
    }

    #[test]
    fn waiting_deltas_of_a_run_are_merged_and_the_budget_follows() {
        // Merging starts once more than 100 bytes wait: after the ack and one delta.
        let q = Outbox::new(1600, LONG);
        q.push(reply("ack"));
        for seq in 1..=100 {
            q.push(delta("r", seq, "w "));
        }
        q.push(delta("other", 101, "x"));
        let len = q.lock().items.len();
        assert_eq!(len, 4, "ack, a delta, 99 merged deltas, another run's");
        let bytes = q.lock().bytes;
        assert!(bytes < 600, "the merged text is counted once: {bytes}");
        assert!(matches!(q.pop(), Some(Outbound::Reply(_))));
        assert!(
            matches!(q.pop(), Some(Outbound::Event(e)) if e.seq == 1),
            "kept as stored"
        );
        match q.pop() {
            Some(Outbound::Deltas(d)) => assert_eq!((d.seq, d.seq_to), (2, 100)),
            other => panic!("expected merged deltas, got {other:?}"),
        }
        assert!(matches!(q.pop(), Some(Outbound::Event(e)) if e.seq == 101));
        assert_eq!(q.lock().bytes, 0);
    }

    #[test]
    fn gives_memory_back_after_a_burst_and_close_refuses_pushes() {
        let q = Outbox::new(1 << 20, LONG);
        for i in 0..40 {
            q.push(reply(&i.to_string()));
        }
        assert_eq!(std::iter::from_fn(|| q.pop()).count(), 40);
        assert_eq!(
            q.lock().items.capacity(),
            0,
            "a drained burst keeps no memory"
        );
        q.push(reply("x"));
        q.close();
        assert!(q.is_empty(), "close drops what is queued");
        assert_eq!(q.push(reply("y")), Pushed::Closed);
    }

    #[tokio::test]
    async fn a_push_before_the_wait_is_not_missed() {
        let q = Arc::new(Outbox::new(1 << 20, LONG));
        q.push(reply("early"));
        tokio::time::timeout(std::time::Duration::from_secs(5), q.pushed())
            .await
            .expect("the earlier push wakes the waiter");
        let q2 = Arc::clone(&q);
        let waiter = tokio::spawn(async move { q2.pushed().await });
        tokio::task::yield_now().await;
        q.push(reply("late"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("a later push wakes the waiter")
            .unwrap();
    }
}
