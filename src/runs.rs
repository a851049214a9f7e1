//! Runs: one per accepted user message (run scope). A run's events are stored first and
//! only then published to the user's connections, so `resume` can always replay what a
//! client saw. Every `agent_started` gets exactly one `agent_completed`, also when storage
//! fails mid-run (the completion is then delivered unstored).

use foldhash::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use futures_util::future::BoxFuture;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Agent, AgentEvent, EventSink, RunContext, SinkError, ThreadHistory};
use crate::hub::{Hub, Outbound};
use crate::metrics::Metrics;
use crate::store::{Accepted, EventRecord, Store, StoredEvent};

struct Active {
    user_id: String,
    cancel: CancellationToken,
}

/// Process-scope registry of in-flight runs (for `cancel` and shutdown).
#[derive(Default)]
pub struct RunManager {
    active: Mutex<HashMap<String, Active>>,
    /// One turn at a time per thread: runs of a thread execute in message order, so its
    /// events are stored and published in `seq` order (the writer relies on that).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tracker: TaskTracker,
    cancel_all: CancellationToken,
}

/// What a run needs from the process.
#[derive(Clone)]
pub struct RunDeps {
    /// The store of record.
    pub store: Store,
    /// Event routing.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl RunManager {
    /// Starts the run for a freshly accepted message.
    pub fn start(
        self: &Arc<Self>,
        deps: RunDeps,
        accepted: &Accepted,
        user_id: &str,
        content: &str,
        agent: Arc<Agent>,
    ) {
        let cancel = self.cancel_all.child_token();
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                accepted.run_id.clone(),
                Active {
                    user_id: user_id.to_string(),
                    cancel: cancel.clone(),
                },
            );
        let ctx = RunContext {
            run_id: accepted.run_id.clone(),
            thread_id: accepted.thread_id.clone(),
            user_id: user_id.to_string(),
            message_id: accepted.message_id.clone(),
            assistant_message_id: String::new(),
            content: content.to_string(),
            cancel,
            history: Arc::new(StoreHistory {
                store: deps.store.clone(),
                user_id: user_id.to_string(),
                thread_id: accepted.thread_id.clone(),
            }),
        };
        self.tracker.spawn(Arc::clone(self).task(deps, ctx, agent));
    }

    /// The run's task. Kept small (a test checks): it is copied whole when it is spawned
    /// and again when it finishes, so the run's own state machine lives in a box.
    fn task(
        self: Arc<Self>,
        deps: RunDeps,
        ctx: RunContext,
        agent: Arc<Agent>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let manager = self;
        async move {
            let started = Instant::now();
            let sink = StoreSink::new(
                deps.clone(),
                ctx.user_id.clone(),
                Arc::from(ctx.thread_id.as_str()),
                ctx.run_id.clone(),
            );
            let turn = manager.turn_of(&ctx.thread_id);
            let guard = turn.lock().await;
            // Boxed: the run's state machine is kilobytes.
            let outcome = Box::pin(crate::agent::run(&agent, &ctx, &sink)).await;
            drop(guard);
            manager.release_turn(&ctx.thread_id, turn);
            if !outcome.completion_stored {
                // Storage failed: the client still sees the run end, without a seq.
                let mut body = outcome.completed_event().to_body("");
                body.insert("run_id".into(), ctx.run_id.clone().into());
                body.insert("thread_id".into(), ctx.thread_id.clone().into());
                let json = serde_json::Value::Object(body).to_string();
                deps.hub
                    .publish(&ctx.user_id, Outbound::Reply(Arc::from(json)));
                tracing::warn!(run_id = %ctx.run_id, "run completion could not be stored; delivered unstored");
            }
            deps.metrics
                .run_finished(outcome.status.as_str(), started.elapsed().as_secs_f64());
            manager
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&ctx.run_id);
        }
    }

    fn turn_of(&self, thread_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(turns.entry(thread_id.to_string()).or_default())
    }

    /// Forgets a thread's turn lock once no run holds or waits for it.
    fn release_turn(&self, thread_id: &str, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        drop(turn);
        if turns
            .get(thread_id)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            turns.remove(thread_id);
        }
    }

    /// Cancels a run of `user_id`; false when there is no such run of theirs.
    pub fn cancel(&self, user_id: &str, run_id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get(run_id) {
            Some(a) if a.user_id == user_id => {
                a.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Runs in flight.
    pub fn in_flight(&self) -> usize {
        self.active.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Lets in-flight runs finish for up to `grace`, then cancels the rest and waits for
    /// their `agent_completed` (bounded).
    pub async fn drain(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                runs = self.in_flight(),
                "grace period over; cancelling runs"
            );
            self.cancel_all.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
    }
}

/// Stores each event and publishes it only after its commit, in order. Writes are
/// pipelined: `emit` holds the event, and `flush` (called by the runner before the run
/// waits for its provider or a tool, and by the completion) queues everything held as one
/// write with a callback, which the store runs right after the commit, in request order,
/// and which publishes the events. So a run's consecutive events share one write request
/// and one commit instead of waiting for one fsync each, and no task or channel per run is
/// needed to publish them. The completion (stored atomically with the run's end) is queued
/// the same way, behind the run's other events, and `emit` returns once it is committed
/// and published; a run's events and its end usually share one commit.
struct StoreSink {
    deps: RunDeps,
    user_id: Arc<str>,
    thread_id: Arc<str>,
    run_id: String,
    /// The first failed write, set by its callback; nothing of the run is published after it.
    failed: Arc<OnceLock<String>>,
    /// Events emitted and not yet flushed, with their types.
    held: Mutex<Vec<(EventRecord, &'static str)>>,
}

/// Publishes stored events of one thread to its user's connections.
struct Publisher {
    hub: Arc<Hub>,
    user_id: Arc<str>,
    thread_id: Arc<str>,
}

impl Publisher {
    /// Publishes stored events, in order, with one routing lookup.
    fn publish(&self, events: impl IntoIterator<Item = (StoredEvent, &'static str)>) {
        let frames = events.into_iter().map(|(ev, kind)| {
            Outbound::event(
                Arc::clone(&self.thread_id),
                ev.seq,
                kind,
                Utf8Bytes::from(ev.json),
            )
        });
        self.hub.publish_all(&self.user_id, frames);
    }
}

fn sink_error(e: &crate::store::StoreError) -> SinkError {
    SinkError(format!("{}: {e}", e.code()))
}

impl StoreSink {
    fn new(deps: RunDeps, user_id: String, thread_id: Arc<str>, run_id: String) -> Self {
        Self {
            deps,
            user_id: Arc::from(user_id),
            thread_id,
            run_id,
            failed: Arc::new(OnceLock::new()),
            held: Mutex::new(Vec::new()),
        }
    }

    fn publisher(&self) -> Publisher {
        Publisher {
            hub: Arc::clone(&self.deps.hub),
            user_id: Arc::clone(&self.user_id),
            thread_id: Arc::clone(&self.thread_id),
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
            body: event.to_body(""),
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
            return Ok(());
        }
        self.check()?;
        let (records, kinds): (Vec<EventRecord>, Vec<&'static str>) = held.into_iter().unzip();
        let publisher = self.publisher();
        let failed = Arc::clone(&self.failed);
        let then = Box::new(move |stored: Result<Vec<StoredEvent>, _>| match stored {
            // After a failed write nothing more of this run is published: the run is
            // ending with an error.
            Ok(_) if failed.get().is_some() => {}
            Ok(events) => publisher.publish(events.into_iter().zip(kinds)),
            Err(e) => {
                let _ = failed.set(sink_error(&e).0);
            }
        });
        self.deps
            .store
            .append_events_then(&self.thread_id, records, then)
            .await
            .map_err(|e| sink_error(&e))
    }
}

/// The `thread_history` tool's view: this user's own thread, nothing else.
struct StoreHistory {
    store: Store,
    user_id: String,
    thread_id: String,
}

impl ThreadHistory for StoreHistory {
    fn recent_messages(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        Box::pin(async move {
            let rows = self
                .store
                .thread_messages(&self.user_id, &self.thread_id)
                .await
                .map_err(|e| e.to_string())?;
            let skip = rows.len().saturating_sub(limit);
            Ok(rows
                .into_iter()
                .skip(skip)
                .map(|m| (m.role, m.content))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::{Limits, ScriptedProvider};

    /// A run's task future is copied whole when it is spawned and when it finishes; it
    /// was 3 144 bytes with the run inline and is ~600 with the run boxed.
    #[tokio::test]
    async fn a_run_task_future_stays_small() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("runs.db").display());
        let store = Store::connect(&url, 1, Duration::from_secs(5))
            .await
            .expect("store");
        let deps = RunDeps {
            store,
            hub: Arc::new(Hub::default()),
            metrics: Arc::new(Metrics::new()),
        };
        let limits = Limits {
            max_steps: 4,
            run_timeout: Duration::from_secs(5),
            tool_timeout: Duration::from_secs(1),
        };
        let agent = Arc::new(Agent::new(
            "assistant",
            Arc::new(ScriptedProvider::default()),
            Vec::new(),
            limits,
        ));
        let manager = Arc::new(RunManager::default());
        let task = manager.task(deps, crate::agent::testkit::ctx("hi"), agent);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the run task future is {size} bytes");
    }
}
