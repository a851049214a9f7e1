//! A new message's `ack`, held so that it leaves in the same socket write as its run's
//! first events, and released on its own whenever that would not happen soon.

use std::sync::{Arc, Mutex};

use crate::hub::{Outbound, Outbox};

/// A run's `ack`, held back so that it leaves in the same socket write as the run's
/// first events: one send per chat run instead of two, which cut the server's CPU per
/// chat run by about a quarter (docs/PERFORMANCE.md item 8). The ack is only created after the
/// message's commit, so it still never precedes durability; holding it delays it by at
/// most the commit of the run's first events (`agent_started`), which the runner
/// flushes before it waits for anything. It is queued on its connection just ahead of
/// those events, and released on its own, at once, when that would not happen soon: the
/// thread's turn is taken by another run, the first flush has nothing to store, or the
/// run ends by any path (it is released when the last holder drops it).
pub struct HeldAck {
    held: Mutex<Option<(Arc<Outbox>, Arc<str>)>>,
}

impl HeldAck {
    /// Holds `ack` for the connection whose `outbox` it goes to.
    pub fn new(outbox: Arc<Outbox>, ack: Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Some((outbox, ack))),
        })
    }

    /// Queues the ack if it is still held (only the first call does anything).
    pub fn release(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((outbox, ack)) = held {
            // A closed connection no longer needs it.
            let _ = outbox.push(Outbound::Reply(ack));
        }
    }
}

impl Drop for HeldAck {
    fn drop(&mut self) {
        self.release();
    }
}
