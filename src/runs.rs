//! Runs: one per accepted user message (run scope). A run's events are stored first and
//! only then published to the user's connections, so `resume` can always replay what a
//! client saw. Every `agent_started` gets exactly one `agent_completed`, also when storage
//! fails mid-run (the completion is then delivered unstored).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Agent, AgentEvent, EventSink, RunContext, SinkError, ThreadHistory};
use crate::hub::{Hub, Outbound};
use crate::metrics::Metrics;
use crate::store::{Accepted, EventRecord, Pending, PendingAppend, Store, StoredEvent};

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
        let manager = Arc::clone(self);
        self.tracker.spawn(async move {
            let started = Instant::now();
            let sink = StoreSink::new(deps.clone(), ctx.user_id.clone(), Arc::from(ctx.thread_id.as_str()), ctx.run_id.clone());
            let turn = manager.turn_of(&ctx.thread_id);
            let guard = turn.lock().await;
            let outcome = crate::agent::run(&agent, &ctx, &sink).await;
            drop(guard);
            manager.release_turn(&ctx.thread_id, turn);
            if !outcome.completion_stored {
                // Storage failed: the client still sees the run end, without a seq.
                let mut body = outcome.completed_event().to_body("");
                body.insert("run_id".into(), ctx.run_id.clone().into());
                body.insert("thread_id".into(), ctx.thread_id.clone().into());
                let json = serde_json::Value::Object(body).to_string();
                deps.hub.publish(&ctx.user_id, Outbound::Reply(Arc::from(json)));
                tracing::warn!(run_id = %ctx.run_id, "run completion could not be stored; delivered unstored");
            }
            deps.metrics.run_finished(outcome.status.as_str(), started.elapsed().as_secs_f64());
            manager.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&ctx.run_id);
        });
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
/// pipelined: `emit` queues the write and returns, and the sink's publisher task publishes
/// each event once committed, so a run's consecutive events can share a commit instead of
/// waiting for one fsync each. The completion (stored atomically with the run's end) is
/// queued the same way, behind the run's other events, and `emit` returns once it is
/// committed and published; a run's events and its end usually share one commit.
struct StoreSink {
    deps: RunDeps,
    thread_id: Arc<str>,
    run_id: String,
    queue: mpsc::Sender<Publish>,
    failed: Arc<OnceLock<String>>,
}

enum Publish {
    Event(&'static str, PendingAppend),
    /// The completion, and who waits for it to be committed and published.
    Completion(
        &'static str,
        Pending<StoredEvent>,
        oneshot::Sender<Result<(), SinkError>>,
    ),
}

impl StoreSink {
    fn new(deps: RunDeps, user_id: String, thread_id: Arc<str>, run_id: String) -> Self {
        let (queue, mut rx) = mpsc::channel::<Publish>(64);
        let failed: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let (hub, user, thread, seen) = (
            Arc::clone(&deps.hub),
            user_id,
            Arc::clone(&thread_id),
            Arc::clone(&failed),
        );
        tokio::spawn(async move {
            let publish = |ev: StoredEvent, kind: &'static str| {
                let frame = Outbound::event(Arc::clone(&thread), ev.seq, kind, Arc::from(ev.json));
                hub.publish(&user, frame);
            };
            while let Some(item) = rx.recv().await {
                match item {
                    // Published even after a failed write: it is stored, and the run's
                    // end must reach the client.
                    Publish::Completion(kind, pending, done) => {
                        let result = match pending.wait().await {
                            Ok(ev) => {
                                publish(ev, kind);
                                Ok(())
                            }
                            Err(e) => Err(SinkError(format!("{}: {e}", e.code()))),
                        };
                        let _ = done.send(result);
                    }
                    // After a failed write nothing more of this run is published: the run
                    // is ending with an error.
                    Publish::Event(_, _) if seen.get().is_some() => {}
                    Publish::Event(kind, pending) => match pending.wait().await {
                        Ok(events) => {
                            for ev in events {
                                publish(ev, kind);
                            }
                        }
                        Err(e) => {
                            let _ = seen.set(format!("{}: {e}", e.code()));
                        }
                    },
                }
            }
        });
        Self {
            deps,
            thread_id,
            run_id,
            queue,
            failed,
        }
    }

    fn check(&self) -> Result<(), SinkError> {
        match self.failed.get() {
            Some(e) => Err(SinkError(e.clone())),
            None => Ok(()),
        }
    }
}

impl EventSink for StoreSink {
    async fn emit(&self, event: AgentEvent) -> Result<(), SinkError> {
        self.check()?;
        let kind = event.kind();
        let record = EventRecord {
            run_id: self.run_id.clone(),
            body: event.to_body(""),
        };
        let error = |e: crate::store::StoreError| SinkError(format!("{}: {e}", e.code()));
        match &event {
            AgentEvent::Completed {
                status, content, ..
            } => {
                let stopped = || SinkError("the event publisher stopped".into());
                let pending = self
                    .deps
                    .store
                    .finish_run_pipelined(
                        &self.thread_id,
                        &self.run_id,
                        status.as_str(),
                        content,
                        record,
                    )
                    .await
                    .map_err(error)?;
                let (done, result) = oneshot::channel();
                self.queue
                    .send(Publish::Completion(kind, pending, done))
                    .await
                    .map_err(|_| stopped())?;
                result.await.map_err(|_| stopped())??;
            }
            _ => {
                let pending = self
                    .deps
                    .store
                    .append_events_pipelined(&self.thread_id, vec![record])
                    .await
                    .map_err(error)?;
                self.queue
                    .send(Publish::Event(kind, pending))
                    .await
                    .map_err(|_| SinkError("the event publisher stopped".into()))?;
            }
        }
        Ok(())
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
