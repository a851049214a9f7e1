//! One node's delivery order: for each user with a socket on this node and each of their
//! threads, the last `seq` handed to those sockets. An event with `seq == last + 1` is
//! delivered, one at or below `last` is a duplicate and dropped, and one beyond opens a gap:
//! later events wait while the store is asked for `seq > last` (the [`Fill`] the caller
//! runs), so the sockets get every event once and in order whatever Redis dropped or
//! reordered.
//!
//! A thread this node has delivered nothing of yet takes the first event it sees, unless
//! a snapshot of the user's threads (taken when Redis went away, or when the user connected
//! while it was away) says where the thread stood: events after that `floor` are then
//! fetched before anything newer is delivered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;

use foldhash::HashMap;

use crate::bus::local::LocalBus;
use crate::hub::{EventFrame, Outbound};

/// Most events fetched from the store per fill.
pub const FILL_PAGE: u32 = 500;

/// A store read to run: `seq > after` of `thread` for `user`, then [`Order::filled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// The user.
    pub user: String,
    /// The thread.
    pub thread: Arc<str>,
    /// Fetch events after this seq.
    pub after: i64,
}

/// Counts of what the order did (for metrics and tests).
#[derive(Debug, Default, Clone)]
pub struct OrderStats {
    /// Events handed to this node's sockets.
    pub delivered: Counter,
    /// Events dropped because the sockets already had them.
    pub duplicates: Counter,
    /// Store reads started to fill a gap or resynchronise.
    pub fills: Counter,
}

#[derive(Default)]
struct Thread {
    /// The last seq delivered to this node's sockets.
    last: Option<i64>,
    /// Where the thread stood in a snapshot, before anything was delivered.
    floor: Option<i64>,
    /// Events that arrived beyond a gap, waiting for the fill.
    pending: BTreeMap<i64, Arc<EventFrame>>,
    /// A fill is running, from this seq.
    filling: Option<i64>,
}

#[derive(Default)]
struct User {
    threads: HashMap<Arc<str>, Thread>,
    /// A snapshot was taken: a thread missing from `threads` is newer than it.
    snapshot: bool,
}

/// See the module header.
#[derive(Default)]
pub struct Order {
    users: Mutex<HashMap<String, User>>,
    /// What it did.
    pub stats: OrderStats,
}

/// Hands events to the user's sockets, in order (called with the order's lock held, so
/// two sources never interleave a thread's events).
fn deliver(local: &LocalBus, stats: &OrderStats, user: &str, events: &[Arc<EventFrame>]) {
    if events.is_empty() {
        return;
    }
    stats.delivered.inc_by(events.len() as u64);
    local.publish_all(user, events.iter().map(|e| Outbound::Event(Arc::clone(e))));
}

impl Order {
    /// An empty order counting into `stats`.
    pub fn new(stats: OrderStats) -> Self {
        Self {
            users: Mutex::default(),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_fill(&self, user: &str, thread: &Arc<str>, t: &mut Thread, after: i64) -> Fill {
        t.filling = Some(after);
        self.stats.fills.inc();
        Fill {
            user: user.to_string(),
            thread: Arc::clone(thread),
            after,
        }
    }

    /// Events of one thread, in seq order, from this node's runs or from Redis.
    pub fn arrive(
        &self,
        local: &LocalBus,
        user: &str,
        thread: &Arc<str>,
        events: &[Arc<EventFrame>],
    ) -> Option<Fill> {
        let mut users = self.lock();
        let u = users.entry(user.to_string()).or_default();
        let t = u.threads.entry(Arc::clone(thread)).or_default();
        let mut ready = Vec::with_capacity(events.len());
        let mut fill = None;
        for ev in events {
            if t.filling.is_some() {
                t.pending.insert(ev.seq, Arc::clone(ev));
                continue;
            }
            let expected = match (t.last, t.floor) {
                (Some(l), _) => Some(l + 1),
                // Nothing delivered yet: anything up to just after the snapshot goes.
                (None, Some(f)) if ev.seq > f + 1 => Some(f + 1),
                (None, _) => None,
            };
            match expected {
                Some(e) if ev.seq < e => {
                    self.stats.duplicates.inc();
                }
                Some(e) if ev.seq > e => {
                    t.pending.insert(ev.seq, Arc::clone(ev));
                    fill = Some(self.start_fill(user, thread, t, e - 1));
                }
                _ => {
                    t.last = Some(ev.seq);
                    ready.push(Arc::clone(ev));
                }
            }
        }
        deliver(local, &self.stats, user, &ready);
        fill
    }

    /// The answer of a [`Fill`]: the stored events after its seq, in order. Delivers them
    /// and whatever waited behind the gap; another fill when the page was full or a gap
    /// remains that the store could close.
    pub fn filled(
        &self,
        local: &LocalBus,
        fill: &Fill,
        fetched: &[Arc<EventFrame>],
    ) -> Option<Fill> {
        let mut users = self.lock();
        let t = users.get_mut(&fill.user)?.threads.get_mut(&fill.thread)?;
        t.filling = None;
        let mut last = t.last.unwrap_or(fill.after).max(fill.after);
        let mut ready = Vec::new();
        for ev in fetched {
            if ev.seq <= last {
                continue;
            }
            if ev.seq != last + 1 {
                break;
            }
            last = ev.seq;
            ready.push(Arc::clone(ev));
        }
        let progressed = !ready.is_empty();
        let full_page = fetched.len() >= FILL_PAGE as usize;
        let mut next = None;
        while let Some(entry) = t.pending.first_entry() {
            let seq = *entry.key();
            if seq <= last {
                entry.remove();
                self.stats.duplicates.inc();
            } else if seq == last + 1 || !(progressed || full_page) {
                // In order, or a gap the store cannot close: delivering beats waiting.
                last = seq;
                ready.push(entry.remove());
            } else {
                break;
            }
        }
        t.last = Some(last);
        if full_page || !t.pending.is_empty() {
            next = Some(self.start_fill(&fill.user, &fill.thread, t, last));
        }
        deliver(local, &self.stats, &fill.user, &ready);
        next
    }

    /// A fill that could not be read: what waits is delivered as it is (the sockets can
    /// `resume` the gap), so a store outage does not hold live events back.
    pub fn fill_failed(&self, local: &LocalBus, fill: &Fill) {
        let mut users = self.lock();
        let Some(t) = users
            .get_mut(&fill.user)
            .and_then(|u| u.threads.get_mut(&fill.thread))
        else {
            return;
        };
        t.filling = None;
        let ready: Vec<_> = std::mem::take(&mut t.pending).into_values().collect();
        if let Some(last) = ready.last() {
            t.last = Some(last.seq.max(t.last.unwrap_or(0)));
        }
        deliver(local, &self.stats, &fill.user, &ready);
    }

    /// Events of `thread` after `after` may not have come through Redis: a fill from what
    /// this node delivered (or from `after` if it delivered nothing of the thread).
    pub fn lost_after(&self, user: &str, thread: &Arc<str>, after: i64) -> Option<Fill> {
        let mut users = self.lock();
        let t = users
            .get_mut(user)?
            .threads
            .entry(Arc::clone(thread))
            .or_default();
        if t.filling.is_some() {
            return None;
        }
        let from = t.last.or(t.floor).unwrap_or(after);
        Some(self.start_fill(user, thread, t, from))
    }

    /// Remembers where each of the user's threads stood (`(thread, last seq)` from the
    /// store), for threads nothing has been delivered of.
    pub fn snapshot(&self, user: &str, heads: &[(String, i64)]) {
        let mut users = self.lock();
        let u = users.entry(user.to_string()).or_default();
        u.snapshot = true;
        for (thread, seq) in heads {
            let t = u.threads.entry(Arc::from(thread.as_str())).or_default();
            if t.last.is_none() && t.floor.is_none() {
                t.floor = Some(*seq);
            }
        }
    }

    /// After Redis came back: the fills that bring the user's sockets up to the store's
    /// heads (`(thread, last seq)`), including threads begun since the snapshot.
    pub fn resync(&self, user: &str, heads: &[(String, i64)]) -> Vec<Fill> {
        let mut users = self.lock();
        let Some(u) = users.get_mut(user) else {
            return Vec::new();
        };
        let snapshot = u.snapshot;
        let mut fills = Vec::new();
        for (thread, head) in heads {
            let key: Arc<str> = Arc::from(thread.as_str());
            let known = u.threads.contains_key(&key);
            if !known && !snapshot {
                // Nothing says where the sockets stand in it: they `resume` it themselves.
                continue;
            }
            let t = u.threads.entry(Arc::clone(&key)).or_default();
            let base = t.last.or(t.floor).unwrap_or(0);
            if *head > base && t.filling.is_none() {
                fills.push(self.start_fill(user, &key, t, base));
            }
        }
        fills
    }

    /// Whether the order holds state for `user`.
    pub fn knows(&self, user: &str) -> bool {
        self.lock().contains_key(user)
    }

    /// Drops a user's state (their last socket on this node closed).
    pub fn forget(&self, user: &str) {
        self.lock().remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::EventBus;
    use crate::hub::Outbox;

    fn ev(seq: i64) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            thread_id: Arc::from("t"),
            seq,
            kind: "agent_thinking",
            json: format!("{{\"seq\":{seq}}}").into(),
        })
    }

    fn evs(seqs: &[i64]) -> Vec<Arc<EventFrame>> {
        seqs.iter().map(|&s| ev(s)).collect()
    }

    fn drain(q: &Outbox) -> Vec<i64> {
        std::iter::from_fn(|| q.pop())
            .map(|o| match o {
                Outbound::Event(e) => e.seq,
                _ => -1,
            })
            .collect()
    }

    fn setup() -> (Order, LocalBus, Arc<Outbox>, Arc<str>) {
        let local = LocalBus::default();
        let q = Arc::new(Outbox::new(1 << 20, std::time::Duration::from_secs(3600)));
        local.subscribe("u", "c", Arc::clone(&q));
        (Order::default(), local, q, Arc::from("t"))
    }

    #[test]
    fn in_order_delivers_and_duplicates_drop() {
        let (order, local, q, t) = setup();
        assert_eq!(order.arrive(&local, "u", &t, &evs(&[1, 2])), None);
        assert_eq!(order.arrive(&local, "u", &t, &evs(&[2, 3])), None);
        assert_eq!(order.arrive(&local, "u", &t, &evs(&[1])), None);
        assert_eq!(drain(&q), [1, 2, 3]);
        assert_eq!(order.stats.duplicates.get(), 2);
    }

    #[test]
    fn a_gap_waits_for_the_store_then_everything_goes_in_order() {
        let (order, local, q, t) = setup();
        order.arrive(&local, "u", &t, &evs(&[1]));
        let fill = order.arrive(&local, "u", &t, &evs(&[4])).expect("gap");
        assert_eq!(fill.after, 1);
        assert_eq!(order.arrive(&local, "u", &t, &evs(&[5])), None, "waits");
        assert_eq!(drain(&q), [1]);
        assert_eq!(order.filled(&local, &fill, &evs(&[2, 3, 4, 5])), None);
        assert_eq!(drain(&q), [2, 3, 4, 5]);
        order.arrive(&local, "u", &t, &evs(&[3, 6]));
        assert_eq!(drain(&q), [6]);
    }

    #[test]
    fn a_gap_the_store_cannot_close_or_a_failed_fill_does_not_hold_events_back() {
        let (order, local, q, t) = setup();
        order.arrive(&local, "u", &t, &evs(&[1]));
        let fill = order.arrive(&local, "u", &t, &evs(&[3])).unwrap();
        assert_eq!(order.filled(&local, &fill, &[]), None);
        assert_eq!(drain(&q), [1, 3]);
        let fill = order.arrive(&local, "u", &t, &evs(&[5])).unwrap();
        order.fill_failed(&local, &fill);
        assert_eq!(drain(&q), [5]);
        order.arrive(&local, "u", &t, &evs(&[6]));
        assert_eq!(drain(&q), [6]);
    }

    #[test]
    fn a_full_page_fetches_the_next_one() {
        let (order, local, q, t) = setup();
        order.arrive(&local, "u", &t, &evs(&[1]));
        let fill = order.lost_after("u", &t, 0).unwrap();
        assert_eq!(fill.after, 1);
        let page: Vec<i64> = (2..2 + FILL_PAGE as i64).collect();
        let next = order.filled(&local, &fill, &evs(&page)).expect("next page");
        assert_eq!(next.after, 1 + FILL_PAGE as i64);
        assert_eq!(drain(&q).len(), 1 + FILL_PAGE as usize);
    }

    #[test]
    fn snapshots_set_floors_and_resync_fills_known_and_new_threads() {
        let (order, local, q, t) = setup();
        order.snapshot("u", &[("t".into(), 3)]);
        // Committed before the snapshot, published late: still delivered.
        assert_eq!(order.arrive(&local, "u", &t, &evs(&[3])), None);
        assert_eq!(drain(&q), [3]);
        let fills = order.resync("u", &[("t".into(), 5), ("t2".into(), 2)]);
        let got: Vec<(&str, i64)> = fills.iter().map(|f| (&*f.thread, f.after)).collect();
        assert_eq!(got, [("t", 3), ("t2", 0)]);
        let (order, local, q, t) = setup();
        order.snapshot("u", &[("t".into(), 3)]);
        let fill = order
            .arrive(&local, "u", &t, &evs(&[5]))
            .expect("beyond the floor");
        assert_eq!(fill.after, 3);
        order.filled(&local, &fill, &evs(&[4, 5]));
        assert_eq!(drain(&q), [4, 5]);
    }

    #[test]
    fn without_a_snapshot_unknown_threads_are_left_to_resume() {
        let (order, local, _q, t) = setup();
        order.arrive(&local, "u", &t, &evs(&[1]));
        let fills = order.resync("u", &[("t".into(), 2), ("other".into(), 9)]);
        assert_eq!(fills.len(), 1);
        assert_eq!(&*fills[0].thread, "t");
        order.forget("u");
        assert!(!order.knows("u"));
        assert!(order.resync("u", &[("t".into(), 2)]).is_empty());
    }
}
