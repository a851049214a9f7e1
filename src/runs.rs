//! Runs: one per accepted user message (run scope). A run's events are stored first and
//! only then published to the user's connections, so `resume` can always replay what a
//! client saw. Every `agent_started` gets exactly one `agent_completed`, also when storage
//! fails mid-run (the completion is then delivered unstored).

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use futures_util::future::BoxFuture;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{
    Agent, AgentEvent, ErrorInfo, EventSink, RunContext, RunOutcome, SinkError, ThreadHistory,
    codes,
};
use crate::bus::EventBus;
use crate::hub::{EventFrame, Outbound, Outbox};
use crate::metrics::Metrics;
use crate::store::{Accepted, Store};
use crate::wire::{EventBody, EventRecord, RunStatus, StoredEvent};

pub mod lease;

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
    pub bus: Arc<dyn EventBus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Other nodes may run this thread's runs: a run also waits for earlier runs of its
    /// thread there (`lease::wait_for_turn`).
    pub shared_turns: bool,
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
        ack: Arc<HeldAck>,
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
        self.tracker
            .spawn(Arc::clone(self).task(deps, ctx, agent, ack));
    }

    /// The run's task. Kept small (a test checks): it is copied whole when it is spawned
    /// and again when it finishes, so the run's own state machine lives in a box.
    fn task(
        self: Arc<Self>,
        deps: RunDeps,
        ctx: RunContext,
        agent: Arc<Agent>,
        ack: Arc<HeldAck>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let manager = self;
        async move {
            let started = Instant::now();
            let sink = StoreSink::new(
                deps.clone(),
                ctx.user_id.clone(),
                Arc::from(ctx.thread_id.as_str()),
                ctx.run_id.clone(),
                ack,
            );
            let turn = manager.turn_of(&ctx.thread_id);
            let guard = match Arc::clone(&turn).try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => {
                    // Another run of the thread goes first: the ack must not wait for it.
                    sink.ack.release();
                    Arc::clone(&turn).lock_owned().await
                }
            };
            if deps.shared_turns {
                // As above: the ack never waits for another node's run either.
                let release = || sink.ack.release();
                let turn = lease::wait_for_turn(&deps.store, &ctx.thread_id, &ctx.run_id, release);
                Box::pin(turn).await;
            }
            if deps.store.has_abandoned() {
                // An earlier run of the thread ended unstored: its end goes first.
                Box::pin(deps.store.close_abandoned(Some(&ctx.thread_id))).await;
            }
            // Boxed: the run's state machine is kilobytes.
            let outcome = Box::pin(crate::agent::run(&agent, &ctx, &sink)).await;
            // Whatever happened, the ack leaves before the run's end is published.
            sink.ack.release();
            if !outcome.completion_stored {
                deliver_unstored(&deps, &ctx, &outcome);
            }
            drop(guard);
            manager.release_turn(&ctx.thread_id, turn);
            // As the client saw it: an end that could not be stored is an error.
            let status = if outcome.completion_stored {
                outcome.status
            } else {
                RunStatus::Error
            };
            deps.metrics
                .run_finished(status.as_str(), started.elapsed().as_secs_f64());
            if let Some(usage) = &outcome.usage {
                deps.metrics.model_tokens(
                    agent.name(),
                    &usage.model,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                );
            }
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

    /// Cancels a run of this node whoever it belongs to (a `cancel` another node received,
    /// or a run whose lease this node lost); false when it is not running here.
    pub fn cancel_run(&self, run_id: &str) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get(run_id) {
            Some(a) if !a.cancel.is_cancelled() => {
                a.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// The ids of the runs in flight on this node.
    pub fn running_ids(&self) -> Vec<String> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.keys().cloned().collect()
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

/// The end of a run whose `agent_completed` could not be stored: the client still sees
/// the run end, without a seq and never `ok` (nothing unstored is reported as stored):
/// status `error`, code `STORAGE_UNAVAILABLE`. The store keeps the run and stores the
/// same completion once it can (`store/sweep.rs`), before the thread's next run starts.
fn deliver_unstored(deps: &RunDeps, ctx: &RunContext, outcome: &RunOutcome) {
    let error = match &outcome.error {
        Some(e) if e.code == codes::STORAGE_UNAVAILABLE => e.clone(),
        _ => ErrorInfo::new(
            codes::STORAGE_UNAVAILABLE,
            format!(
                "the run ended `{}` but its end could not be stored",
                outcome.status.as_str()
            ),
        ),
    };
    let completed = AgentEvent::Completed {
        status: RunStatus::Error,
        content: outcome.content.clone(),
        error: Some(error),
        usage: outcome.usage.clone(),
    };
    let body = completed.to_body("");
    let mut sent = body.clone();
    sent.insert("run_id".into(), ctx.run_id.clone().into());
    sent.insert("thread_id".into(), ctx.thread_id.clone().into());
    let json = serde_json::Value::Object(sent).to_string();
    deps.bus
        .notify(&ctx.user_id, Outbound::Reply(Arc::from(json)));
    tracing::warn!(run_id = %ctx.run_id, "run completion could not be stored; delivered unstored, stored later");
    let record = EventRecord {
        run_id: ctx.run_id.clone(),
        body: EventBody::Map(body),
    };
    deps.store
        .abandon(&ctx.thread_id, &ctx.run_id, &outcome.content, record);
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
    /// The run's ack until the run's first events are published with it.
    ack: Arc<HeldAck>,
    /// A write of this run has been queued; its answer releases the ack.
    queued: AtomicBool,
}

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
            .map(|(ev, kind)| {
                Arc::new(EventFrame {
                    thread_id: Arc::clone(&self.thread_id),
                    seq: ev.seq,
                    kind,
                    json: Utf8Bytes::from(ev.json),
                })
            })
            .collect();
        self.bus.publish(&self.user_id, &frames);
    }
}

fn sink_error(e: &crate::store::StoreError) -> SinkError {
    SinkError(format!("{}: {e}", e.code()))
}

impl StoreSink {
    fn new(
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
    use crate::bus::local::LocalBus;

    /// A run's task future is copied whole when it is spawned and when it finishes; it
    /// was 3 144 bytes with the run inline and is ~600 with the run boxed.
    #[tokio::test]
    async fn a_run_task_future_stays_small() {
        let bench = Bench::new().await;
        let ack = HeldAck::new(Arc::clone(&bench.outbox), Arc::from("ack"));
        let task = Arc::clone(&bench.manager).task(
            bench.deps.clone(),
            crate::agent::testkit::ctx("hi"),
            Arc::clone(&bench.agent),
            ack,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "the run task future is {size} bytes");
    }

    /// What a run needs around it: a real SQLite store, the scripted agent, and one
    /// connection of its user subscribed on a local bus (whose queue the tests read).
    struct Bench {
        _dir: tempfile::TempDir,
        deps: RunDeps,
        agent: Arc<Agent>,
        outbox: Arc<Outbox>,
        manager: Arc<RunManager>,
    }

    impl Bench {
        async fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("ack.db").display());
            let store = Store::connect(&url, 1, Duration::from_secs(5))
                .await
                .expect("store");
            let bus = Arc::new(LocalBus::default());
            let outbox = Arc::new(Outbox::new(1 << 20, std::time::Duration::from_secs(3600)));
            bus.subscribe("alice", "c1", Arc::clone(&outbox));
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
            let deps = RunDeps {
                store,
                bus,
                metrics: Arc::new(Metrics::new()),
                shared_turns: false,
            };
            Self {
                _dir: dir,
                deps,
                agent,
                outbox,
                manager: Arc::new(RunManager::default()),
            }
        }

        /// Accepts a message in `thread` and starts its run with a held ack.
        async fn start(&self, client_id: &str, thread: Option<&str>) -> Accepted {
            let acc = self.accept(client_id, thread).await;
            self.launch(client_id, &acc);
            acc
        }

        async fn accept(&self, client_id: &str, thread: Option<&str>) -> Accepted {
            self.deps
                .store
                .accept_message(crate::store::NewMessage {
                    user_id: "alice",
                    client_id,
                    thread_id: thread,
                    content: "hello",
                    agent: "assistant",
                })
                .await
                .expect("accepted")
        }

        fn launch(&self, client_id: &str, acc: &Accepted) {
            let ack = HeldAck::new(
                Arc::clone(&self.outbox),
                Arc::from(format!("ack {client_id}")),
            );
            self.manager.start(
                self.deps.clone(),
                acc,
                "alice",
                "hello",
                Arc::clone(&self.agent),
                ack,
            );
        }

        /// What the connection got so far: `ack …` or the event type.
        fn received(&self) -> Vec<String> {
            // Merged deltas count as the events they stand for.
            std::iter::from_fn(|| self.outbox.pop())
                .flat_map(|item| match item {
                    Outbound::Reply(text) => vec![text.to_string()],
                    Outbound::Event(ev) => vec![ev.kind.to_string()],
                    Outbound::Replay(_) => vec!["replay".into()],
                    Outbound::Deltas(d) => {
                        vec!["agent_response".into(); (d.seq_to - d.seq + 1) as usize]
                    }
                })
                .collect()
        }

        async fn finish(&self) {
            tokio::time::timeout(
                Duration::from_secs(10),
                self.manager.drain(Duration::from_secs(5)),
            )
            .await
            .expect("runs finish");
        }
    }

    /// The ack waits for the run's first events and is queued just ahead of them, so one
    /// burst (one socket write) carries both; nothing is queued before that commit.
    #[tokio::test]
    async fn the_ack_is_queued_just_ahead_of_the_runs_first_events() {
        let bench = Bench::new().await;
        bench.start("m1", None).await;
        // The first time anything is queued, the ack and the first event are there together.
        // Waits for the first commit (generously: a loaded machine can take a while); the
        // ack and the events are queued in the same commit callback, so polling cannot
        // land between them.
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if !bench.outbox.is_empty() {
                got = bench.received();
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(got.first().map(String::as_str), Some("ack m1"), "{got:?}");
        assert_eq!(
            got.get(1).map(String::as_str),
            Some("agent_started"),
            "{got:?}"
        );
        bench.finish().await;
        got.extend(bench.received());
        assert_eq!(
            got.last().map(String::as_str),
            Some("agent_completed"),
            "{got:?}"
        );
        assert_eq!(
            got.iter().filter(|g| g.starts_with("ack")).count(),
            1,
            "{got:?}"
        );
    }

    /// A run that must wait for another run of its thread releases its ack at once.
    #[tokio::test]
    async fn the_ack_does_not_wait_for_another_runs_turn() {
        let bench = Bench::new().await;
        let first = bench.start("m1", None).await;
        bench.finish().await;
        bench.received();
        let manager = Arc::new(RunManager::default());
        let bench = Bench { manager, ..bench };
        // Another run holds the thread's turn.
        let turn = bench.manager.turn_of(&first.thread_id);
        let guard = Arc::clone(&turn).lock_owned().await;
        bench.start("m2", Some(&first.thread_id)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bench.outbox.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(bench.received(), vec!["ack m2".to_string()]);
        drop(guard);
        bench.manager.release_turn(&first.thread_id, turn);
        bench.finish().await;
        let got = bench.received();
        assert_eq!(
            got.first().map(String::as_str),
            Some("agent_started"),
            "{got:?}"
        );
        assert!(!got.iter().any(|g| g.starts_with("ack")), "{got:?}");
    }

    /// A run whose writes fail still delivers the committed message's ack, ahead of its
    /// unstored end.
    #[tokio::test]
    async fn the_ack_is_delivered_when_the_runs_writes_fail() {
        let bench = Bench::new().await;
        let acc = bench.accept("m1", None).await;
        bench.deps.store.close().await;
        bench.launch("m1", &acc);
        bench.finish().await;
        let got = bench.received();
        assert_eq!(got.first().map(String::as_str), Some("ack m1"), "{got:?}");
        assert_eq!(
            got.iter().filter(|g| g.starts_with("ack")).count(),
            1,
            "{got:?}"
        );
        // The run's end was delivered unstored, after the ack.
        assert!(
            got.iter().skip(1).any(|g| g.contains("agent_completed")),
            "{got:?}"
        );
    }

    /// A run whose end cannot be stored (the database refuses to close it) is delivered
    /// as an error, never `ok`; the store keeps it and stores that end as soon as it can,
    /// at the latest before the thread's next run, so the replay has every run's end in
    /// order.
    #[tokio::test]
    async fn a_run_whose_end_is_not_stored_ends_in_error_and_is_stored_later() {
        use sqlx::Connection;
        let bench = Bench::new().await;
        let url = format!("sqlite://{}", bench._dir.path().join("ack.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query(
            "CREATE TRIGGER refuse_end BEFORE UPDATE OF status ON runs \
             BEGIN SELECT RAISE(FAIL, 'refused by the test'); END",
        )
        .execute(&mut db)
        .await
        .expect("trigger");
        let first = bench.start("m1", None).await;
        bench.finish().await;
        let got = bench.received();
        let end: serde_json::Value =
            serde_json::from_str(got.last().expect("an end")).expect("the end is a reply");
        assert_eq!(end["type"], "agent_completed", "{got:?}");
        assert_eq!(end["status"], "error", "{end}");
        assert_eq!(end["error"]["code"], "STORAGE_UNAVAILABLE", "{end}");
        assert!(end.get("seq").is_none(), "{end}");
        assert!(bench.deps.store.has_abandoned());

        sqlx::query("DROP TRIGGER refuse_end")
            .execute(&mut db)
            .await
            .expect("drop trigger");
        let bench = Bench {
            manager: Arc::new(RunManager::default()),
            ..bench
        };
        bench.start("m2", Some(&first.thread_id)).await;
        bench.finish().await;
        assert!(!bench.deps.store.has_abandoned());
        let replay = bench
            .deps
            .store
            .events_after("alice", &first.thread_id, 0, 100)
            .await
            .expect("replay");
        let events: Vec<serde_json::Value> = replay
            .iter()
            .map(|e| serde_json::from_str(&e.json).expect("json"))
            .collect();
        let ends: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["type"] == "agent_completed")
            .map(|(i, e)| (i, e["run_id"].clone(), e["status"].clone()))
            .collect();
        let second_start = events
            .iter()
            .rposition(|e| e["type"] == "agent_started")
            .expect("the second run started");
        assert_eq!(ends.len(), 2, "{events:?}");
        assert_eq!(
            (&ends[0].1, &ends[0].2),
            (&first.run_id.clone().into(), &"error".into())
        );
        assert!(
            ends[0].0 < second_start,
            "the first end precedes the second run: {events:?}"
        );
        assert_eq!(events[ends[0].0]["error"]["code"], "STORAGE_UNAVAILABLE");
        assert_eq!(ends[1].2, "ok");
    }

    /// Dropped unreleased (a run task that never ran), the ack is still queued.
    #[test]
    fn a_dropped_held_ack_is_queued() {
        let outbox = Arc::new(Outbox::new(1 << 20, std::time::Duration::from_secs(3600)));
        let ack = HeldAck::new(Arc::clone(&outbox), Arc::from("ack"));
        assert!(outbox.is_empty());
        drop(ack);
        assert!(matches!(outbox.pop(), Some(Outbound::Reply(a)) if &*a == "ack"));
        assert!(outbox.pop().is_none());
    }
}
