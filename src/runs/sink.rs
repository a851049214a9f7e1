//! Where a run's events go: [`StoreSink`] stores them, pipelined, and each write's
//! commit callback publishes them through a [`Publisher`], with the message's held ack
//! ahead of the first ones. Nothing of a run is published after a failed write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use super::{HeldAck, RunDeps};
use crate::agent::{AgentEvent, EventSink, SinkError};
use crate::bus::EventBus;
use crate::hub::EventFrame;
use crate::wire::{EventRecord, StoredEvent};

/// Stores each event and publishes it only after its commit, in order. Writes are
/// pipelined: `emit` holds the event, and `flush` (called by the runner before the run
/// waits for its provider or a tool, and by the completion) queues everything held as one
/// write with a callback, which the store runs right after the commit, in request order,
/// and which publishes the events. So a run's consecutive events share one write request
/// and one commit instead of waiting for one fsync each, and no task or channel per run is
/// needed to publish them. The completion (stored atomically with the run's end) is queued
/// the same way, behind the run's other events, and `emit` returns once it is committed
/// and published; a run's events and its end usually share one commit.
pub(super) struct StoreSink {
    deps: RunDeps,
    user_id: Arc<str>,
    thread_id: Arc<str>,
    run_id: String,
    /// The first failed write, set by its callback; nothing of the run is published after it.
    failed: Arc<OnceLock<String>>,
    /// Events emitted and not yet flushed, with their types.
    held: Mutex<Vec<(EventRecord, &'static str)>>,
    /// The run's ack until the run's first events are published with it.
    pub(super) ack: Arc<HeldAck>,
    /// A write of this run has been queued; its answer releases the ack.
    queued: AtomicBool,
}

/// Publishes stored events of one thread to its user's connections.
struct Publisher {
    bus: Arc<dyn EventBus>,
    user_id: Arc<str>,
    thread_id: Arc<str>,
    ack: Arc<HeldAck>,
}

impl Publisher {
    /// Publishes stored events, in order, with one routing lookup; a held ack goes first.
    fn publish(&self, events: impl IntoIterator<Item = (StoredEvent, &'static str)>) {
        self.ack.release();
        let frames: Vec<Arc<EventFrame>> = events
            .into_iter()
            .map(|(ev, kind)| EventFrame::stored(Arc::clone(&self.thread_id), kind, ev))
            .collect();
        self.bus.publish(&self.user_id, &frames);
    }
}

fn sink_error(e: &crate::store::StoreError) -> SinkError {
    SinkError(format!("{}: {e}", e.code()))
}

impl StoreSink {
    pub(super) fn new(
        deps: RunDeps,
        user_id: String,
        thread_id: Arc<str>,
        run_id: String,
        ack: Arc<HeldAck>,
    ) -> Self {
        Self {
            deps,
            user_id: Arc::from(user_id),
            thread_id,
            run_id,
            ack,
            queued: AtomicBool::new(false),
            failed: Arc::new(OnceLock::new()),
            held: Mutex::new(Vec::new()),
        }
    }

    fn publisher(&self) -> Publisher {
        Publisher {
            bus: Arc::clone(&self.deps.bus),
            user_id: Arc::clone(&self.user_id),
            thread_id: Arc::clone(&self.thread_id),
            ack: Arc::clone(&self.ack),
        }
    }

    fn check(&self) -> Result<(), SinkError> {
        match self.failed.get() {
            Some(e) => Err(SinkError(e.clone())),
            None => Ok(()),
        }
    }

    fn take_held(&self) -> Vec<(EventRecord, &'static str)> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl EventSink for StoreSink {
    async fn emit(&self, event: AgentEvent) -> Result<(), SinkError> {
        self.check()?;
        let record = EventRecord {
            run_id: self.run_id.clone(),
            body: event.stored_body(),
        };
        let AgentEvent::Completed {
            status, content, ..
        } = &event
        else {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((record, event.kind()));
            return Ok(());
        };
        // Everything emitted before the completion is queued ahead of it (the runner has
        // normally flushed already).
        self.flush().await?;
        // Published even after a failed write: it is stored, and the run's end must reach
        // the client.
        let publisher = self.publisher();
        let kind = event.kind();
        let (done, result) = oneshot::channel();
        let then = Box::new(move |stored: Result<StoredEvent, _>| {
            publisher.ack.release();
            let outcome = match stored {
                Ok(ev) => {
                    publisher.publish([(ev, kind)]);
                    Ok(())
                }
                Err(e) => Err(sink_error(&e)),
            };
            let _ = done.send(outcome);
        });
        self.deps
            .store
            .finish_run_then(
                &self.thread_id,
                &self.run_id,
                status.as_str(),
                content,
                record,
                then,
            )
            .await
            .map_err(|e| sink_error(&e))?;
        result
            .await
            .map_err(|_| SinkError("the store writer stopped".into()))?
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let held = self.take_held();
        if held.is_empty() {
            if !self.queued.load(Ordering::Relaxed) {
                // No write of the run is queued to take the ack along: it goes now.
                self.ack.release();
            }
            return Ok(());
        }
        self.check()?;
        // From here the ack leaves with this write's answer, whatever it is.
        self.queued.store(true, Ordering::Relaxed);
        let (records, kinds): (Vec<EventRecord>, Vec<&'static str>) = held.into_iter().unzip();
        let publisher = self.publisher();
        let failed = Arc::clone(&self.failed);
        let then = Box::new(move |stored: Result<Vec<StoredEvent>, _>| {
            // The message itself is committed: its ack goes out whatever this write did.
            publisher.ack.release();
            match stored {
                // After a failed write nothing more of this run is published: the run is
                // ending with an error.
                Ok(_) if failed.get().is_some() => {}
                Ok(events) => publisher.publish(events.into_iter().zip(kinds)),
                Err(e) => {
                    let _ = failed.set(sink_error(&e).0);
                }
            }
        });
        self.deps
            .store
            .append_events_then(&self.thread_id, records, then)
            .await
            .map_err(|e| sink_error(&e))
    }
}
