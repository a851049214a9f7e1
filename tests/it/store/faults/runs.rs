//! Runs while backends are terminated: no `ok` end without its stored row, and every
//! stored `agent_started` closed (after the store's sweep), without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis::store::{SWEEP_INTERVAL, Store};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use super::{Answer, Operator, exchange, server_on, thread_messages};
use crate::store::harness::{TestDb, parse};
use crate::ws::harness::Client;
use crate::ws::harness::TestServer;

/// The stored events of a thread, polled until `done` holds them (the sweep runs every
/// [`SWEEP_INTERVAL`]); fails the test after several intervals.
async fn stored_until(s: &TestServer, thread: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + SWEEP_INTERVAL * 4;
    loop {
        let reply = thread_messages(s, "alice", thread).await;
        if reply.status == 200 {
            let events = reply.json()["events"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if done(&events) {
                return events;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not stored in time: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completion_of<'a>(events: &'a [Value], run_id: &Value) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["type"] == "agent_completed" && e["run_id"] == *run_id)
}

/// The backend storing a run's end dies with it (the reply's insert terminates its own
/// backend, once): the client is told `error` `STORAGE_UNAVAILABLE`, not `ok`, and the
/// store's sweep stores that end a moment later, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_lost_with_its_backend_is_an_error_and_then_stored() {
    let db = TestDb::postgres().await;
    let s = server_on(&db).await;
    let mut own = PgConnection::connect(&db.url).await.expect("connect");
    // A sequence is not rolled back with the dying transaction: only the first reply dies.
    sqlx::raw_sql(
        "CREATE SEQUENCE reply_faults; \
         CREATE FUNCTION kill_first_reply() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('reply_faults') = 1 THEN \
         PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$; \
         CREATE TRIGGER kill_first_reply BEFORE INSERT ON messages FOR EACH ROW \
         WHEN (NEW.role = 'assistant') EXECUTE FUNCTION kill_first_reply();",
    )
    .execute(&mut own)
    .await
    .expect("fault trigger");
    let mut c = s.user("alice").await;
    let Answer::Ran { ack, events } = exchange(&mut c, "m1", "hello", None).await else {
        panic!("the message was refused")
    };
    let end = events.last().expect("an end");
    assert_eq!(end["status"], "error", "{end}");
    assert_eq!(end["error"]["code"], "STORAGE_UNAVAILABLE", "{end}");
    assert!(
        end.get("seq").is_none(),
        "an unstored end has no seq: {end}"
    );
    let thread = ack["thread_id"].as_str().expect("thread id");
    let stored = stored_until(&s, thread, |e| completion_of(e, &ack["run_id"]).is_some()).await;
    let stored_end = completion_of(&stored, &ack["run_id"]).expect("stored end");
    assert_eq!(stored_end["status"], "error", "{stored_end}");
    assert_eq!(stored_end["error"], end["error"]);
    assert_eq!(stored_end["message"]["content"], end["message"]["content"]);
    let live_seqs: Vec<&Value> = events[..events.len() - 1]
        .iter()
        .map(|e| &e["seq"])
        .collect();
    let stored_seqs: Vec<&Value> = stored.iter().map(|e| &e["seq"]).collect();
    assert_eq!(stored_seqs[..live_seqs.len()], live_seqs[..], "{stored:?}");
    // The thread goes on, its next run after that end.
    let Answer::Ran { events: next, .. } = exchange(&mut c, "m2", "hello", Some(thread)).await
    else {
        panic!("the second message was refused")
    };
    let next_end = next.last().expect("an end");
    assert_eq!(next_end["status"], "ok", "{next_end}");
    assert!(next[0]["seq"].as_i64() > stored_end["seq"].as_i64());
}

/// Backends terminated again and again while clients chat: every live `ok` end has its
/// seq and is in the replay, every unstored end is `STORAGE_UNAVAILABLE`, every refused
/// message is retryable, and once the faults stop every stored `agent_started` has
/// exactly one `agent_completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_terminated_during_runs_leave_no_unstored_ok_and_no_open_run() {
    let db = TestDb::postgres().await;
    let s = server_on(&db).await;
    // One user per client: a user's events reach every connection of that user.
    let users: Vec<String> = (0..6).map(|n| format!("user{n}")).collect();
    let terminator = Terminator::start(Operator::of(&db).await);
    let mut clients = Vec::new();
    for user in &users {
        clients.push(tokio::spawn(chat(s.user(user).await, user.clone())));
    }
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client"));
    }
    let killed = terminator.stop().await;
    let ok = stored_ok_ends(&answers);
    eprintln!(
        "{} messages, {} ended ok; {killed} backends terminated",
        answers.len(),
        ok.len()
    );
    assert!(killed > 0, "no backend was terminated");
    let replay = replay_once_closed(&db.open().await, &users).await;
    for end in ok {
        let stored = completion_of(&replay, &end["run_id"]).expect("a live ok end is stored");
        assert_eq!(stored, &end);
    }
}

/// Terminates the test database's backends at irregular intervals until stopped.
struct Terminator {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<i64>,
}

impl Terminator {
    fn start(mut operator: Operator) -> Terminator {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut killed = 0;
            while !stopped.load(Ordering::Relaxed) {
                killed += operator.terminate_backends().await;
                // Irregular, so the faults land at every point of a run.
                let pause = rand::random_range(10..120);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            killed
        });
        Terminator { stop, task }
    }

    /// Stops; returns how many backends were terminated.
    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("terminator")
    }
}

/// Six messages of one client in one thread (a new one until a message is accepted).
async fn chat(mut c: Client, user: String) -> Vec<Answer> {
    let mut thread: Option<String> = None;
    let mut answers = Vec::new();
    for m in 0..6 {
        let content = ["what is 6*7?", "hello [[slow:5]]", "what time is it?"][m % 3];
        let id = format!("{user}-m{m}");
        let answer = exchange(&mut c, &id, content, thread.as_deref()).await;
        if let Answer::Ran { ack, .. } = &answer {
            thread = ack["thread_id"].as_str().map(str::to_string);
        }
        answers.push(answer);
    }
    answers
}

/// Checks what clients were told, and returns the `ok` ends (each must be in the replay).
fn stored_ok_ends(answers: &[Answer]) -> Vec<Value> {
    let mut ok = Vec::new();
    for answer in answers {
        let end = match answer {
            Answer::Refused(e) => {
                assert_eq!(e["code"], "STORE_UNAVAILABLE", "{e}");
                assert_eq!(e["retryable"], true, "{e}");
                continue;
            }
            Answer::Ran { events, .. } => events.last().expect("an end"),
        };
        if end.get("seq").is_none() {
            assert_eq!(end["status"], "error", "unstored and ok: {end}");
            assert_eq!(end["error"]["code"], "STORAGE_UNAVAILABLE", "{end}");
        } else if end["status"] == "ok" {
            ok.push(end.clone());
        }
    }
    ok
}

/// The replay of every thread of `users` once it ends every run it starts (the sweep
/// runs every [`SWEEP_INTERVAL`]); fails the test after several intervals.
async fn replay_once_closed(store: &Store, users: &[String]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + SWEEP_INTERVAL * 4;
    loop {
        let mut replay = Vec::new();
        for user in users {
            replay.extend(replay_all(store, user).await);
        }
        let open = open_runs(&replay);
        if open.is_empty() {
            return replay;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs without an end: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every stored event of every thread of `user`.
async fn replay_all(store: &Store, user: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for thread in store.list_threads(user).await.expect("threads") {
        let stored = store
            .events_after(user, &thread.thread_id, 0, 10_000)
            .await
            .expect("replay");
        events.extend(stored.iter().map(|e| parse(&e.json)));
    }
    events
}

/// Runs whose `agent_started` is stored and whose `agent_completed` is not (or twice).
fn open_runs(events: &[Value]) -> Vec<String> {
    let started = events.iter().filter(|e| e["type"] == "agent_started");
    started
        .filter(|s| {
            let ends = events
                .iter()
                .filter(|e| e["type"] == "agent_completed" && e["run_id"] == s["run_id"]);
            ends.count() != 1
        })
        .map(|s| s["run_id"].to_string())
        .collect()
}
