//! Runs: one per accepted user message (run scope). A run's events are stored first and
//! only then published to the user's connections, so `resume` can always replay what a
//! client saw. Every `agent_started` gets exactly one `agent_completed`, also when storage
//! fails mid-run (the completion is then delivered unstored).
//!
//! The files, in the order a run meets them: `manager.rs` is the process-scope registry
//! of runs in flight and their threads' turns; `task.rs` is one run's task, from taking
//! its thread's turn to its end, and the end delivered unstored when it could not be
//! stored; `sink.rs` stores the run's events and publishes each write once committed;
//! `held_ack.rs` is the message's `ack` held for the run's first events; `history.rs` is
//! the thread's earlier turns as the run's tools see them; `lease.rs` keeps this node's
//! runs alive across nodes. `submit.rs` is where a chat message enters: checked, stored,
//! acknowledged and its run started, whatever transport carried it.

use std::sync::Arc;

use crate::bus::EventBus;
use crate::metrics::Metrics;
use crate::store::Store;

mod held_ack;
mod history;
pub mod lease;
mod manager;
mod sink;
mod submit;
mod task;
#[cfg(test)]
mod tests;

pub use held_ack::HeldAck;
pub use manager::RunManager;
pub use submit::{Admitted, Chat, Rejection, Submission, Submitted};

/// What a run needs from the process.
#[derive(Clone)]
pub struct RunDeps {
    /// The store of record.
    pub store: Store,
    /// Event routing.
    pub bus: Arc<dyn EventBus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Other nodes may run this thread's runs: a run also waits for earlier runs of its
    /// thread there (`lease::wait_for_turn`).
    pub shared_turns: bool,
}
