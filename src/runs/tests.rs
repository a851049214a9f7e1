//! Unit tests of runs over a real SQLite store and a local bus: the held ack's order
//! (ahead of the first events, never behind another run's turn, delivered when writes
//! fail or when dropped), an end that could not be stored, and the size of a run's task.

use std::time::Duration;

use super::*;
use crate::agent::{Agent, Limits, ScriptedProvider};
use crate::bus::local::LocalBus;
use crate::hub::{Outbound, Outbox};
use crate::store::Accepted;

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
