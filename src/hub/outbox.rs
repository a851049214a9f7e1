//! A connection's outbound queue: bounded, never blocking a producer (runs publish with
//! [`Outbox::push`] while holding the hub's lock), drained by the connection's task.
//!
//! It replaces a tokio `mpsc` channel plus a cancellation token because every open
//! connection owns one: the channel allocated a 32-slot block and cache-padded counters
//! up front (about 1.3 KB per idle connection), this costs ~100 bytes until something is
//! queued, and gives memory back after a burst. A push that finds the queue full marks
//! the connection slow (its task then closes it with 4509; the events stay stored, so
//! `resume` recovers them) and drops the item.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Outbound;

/// Capacity kept after a drain; a burst larger than this gives its memory back.
const KEEP: usize = 16;

/// What became of a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the connection.
    Queued,
    /// The queue was full: the item was dropped and the connection marked slow.
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
    cap: usize,
    slow: bool,
    closed: bool,
}

impl Outbox {
    /// An empty queue that holds at most `cap` items (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                cap: cap.max(1),
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
        } else if s.items.len() >= s.cap {
            s.slow = true;
            Pushed::Full
        } else {
            s.items.push_back(item);
            Pushed::Queued
        };
        drop(s);
        if pushed != Pushed::Closed {
            self.wake.notify_one();
        }
        pushed
    }

    /// Whether a push has found the queue full.
    pub fn is_slow(&self) -> bool {
        self.lock().slow
    }

    /// The oldest queued item.
    pub fn pop(&self) -> Option<Outbound> {
        let mut s = self.lock();
        let item = s.items.pop_front();
        if item.is_some() && s.items.is_empty() && s.items.capacity() > KEEP {
            s.items = VecDeque::new();
        }
        item
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
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn reply(s: &str) -> Outbound {
        Outbound::Reply(Arc::from(s))
    }

    #[test]
    fn bounded_and_marks_slow_when_full() {
        let q = Outbox::new(2);
        assert_eq!(q.push(reply("a")), Pushed::Queued);
        assert_eq!(q.push(reply("b")), Pushed::Queued);
        assert!(!q.is_slow());
        assert_eq!(q.push(reply("c")), Pushed::Full);
        assert!(q.is_slow());
        let texts: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|o| match o {
                Outbound::Reply(t) => t.to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            texts,
            ["a", "b"],
            "oldest first, the overflowing item dropped"
        );
    }

    #[test]
    fn gives_memory_back_after_a_burst_and_close_refuses_pushes() {
        let q = Outbox::new(100);
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
        let q = Arc::new(Outbox::new(4));
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
