//! Per-user state shared by a user's connections: their outbound queues, for fanout to
//! every socket the user holds, and each thread's next `seq`.
//!
//! This is the least a correct server needs (PROTOCOL.md §2 invariants); nothing is
//! stored beyond it, and an entry disappears with the user's last connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A burst of frames for one run, shared by every socket of the user.
pub type Burst = Arc<[Utf8Bytes]>;

#[derive(Default)]
pub struct UserState {
    conns: Vec<(u64, mpsc::Sender<Burst>)>,
    threads: HashMap<String, u64>,
}

impl UserState {
    /// Reserves `n` consecutive seqs in one of the user's threads and returns the first;
    /// `None` when the thread is not theirs (or was forgotten with their last socket).
    pub fn continue_thread(&mut self, thread: &str, n: u64) -> Option<u64> {
        let last = self.threads.get_mut(thread)?;
        let first = *last + 1;
        *last += n;
        Some(first)
    }

    /// Starts a thread with `n` seqs reserved; its first seq is 1.
    pub fn start_thread(&mut self, thread: String, n: u64) -> u64 {
        self.threads.insert(thread, n);
        1
    }

    /// Queues `burst` for every other connection of the user. A connection whose bounded
    /// queue is full is dropped from the user: its session sees the closed queue and
    /// closes with 4509 (slow consumer).
    pub fn fan_out(&mut self, from: u64, frames: &[Utf8Bytes]) {
        // A user with one socket (every chat client) has nobody to share the burst with.
        if self.conns.len() < 2 {
            return;
        }
        let burst: Burst = frames.into();
        self.conns
            .retain(|(id, tx)| *id == from || tx.try_send(burst.clone()).is_ok());
    }
}

#[derive(Default)]
pub struct Hub {
    users: Mutex<HashMap<String, Arc<Mutex<UserState>>>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere does not make this plain data unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn register(
        &self,
        user: &str,
        conn: u64,
        tx: mpsc::Sender<Burst>,
    ) -> Arc<Mutex<UserState>> {
        let entry = lock(&self.users)
            .entry(user.to_owned())
            .or_default()
            .clone();
        lock(&entry).conns.push((conn, tx));
        entry
    }

    pub fn unregister(&self, user: &str, conn: u64) {
        let mut users = lock(&self.users);
        if let Some(entry) = users.get(user) {
            let mut st = lock(entry);
            st.conns.retain(|(id, _)| *id != conn);
            let empty = st.conns.is_empty();
            drop(st);
            if empty {
                users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_are_consecutive_per_thread_and_unknown_threads_are_refused() {
        let mut st = UserState::default();
        assert_eq!(st.start_thread("a".into(), 6), 1);
        assert_eq!(st.continue_thread("a", 6), Some(7));
        assert_eq!(st.start_thread("b".into(), 6), 1);
        assert_eq!(st.continue_thread("a", 6), Some(13));
        assert_eq!(st.continue_thread("c", 6), None);
    }

    #[test]
    fn a_full_queue_drops_that_connection_only() {
        let hub = Hub::default();
        let (tx_full, _rx_full) = mpsc::channel(1);
        let (tx_ok, mut rx_ok) = mpsc::channel(8);
        let (tx_me, _rx_me) = mpsc::channel(1);
        hub.register("u", 1, tx_me);
        hub.register("u", 2, tx_full);
        let user = hub.register("u", 3, tx_ok);
        let burst = [Utf8Bytes::from("x")];
        lock(&user).fan_out(1, &burst);
        lock(&user).fan_out(1, &burst);
        let ids: Vec<u64> = lock(&user).conns.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(rx_ok.try_recv().map(|b| b.len()).ok(), Some(1));
    }
}
