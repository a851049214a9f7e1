//! Storage faults against a real Postgres, over the store API and over a real server:
//! backends terminated during runs (`pg_terminate_backend`, as an operator or a failover
//! does), a database refusing connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`),
//! and data the database refuses. What must hold: no `agent_completed` `ok` without its
//! stored row; every stored `agent_started` gets its `agent_completed` (after the
//! store's sweep); failures that may pass say `STORE_UNAVAILABLE` (retryable, 503 over
//! HTTP), bad data `BAD_MESSAGE` (not retryable).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use portcullis::store::{SWEEP_INTERVAL, Store, StoreError};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::harness::{TestDb, msg, parse};
use crate::ws::harness::{Client, FRAME_TIMEOUT, HttpReply, TestServer, token};

/// The test database as an operator sees it.
struct Operator {
    conn: PgConnection,
    name: String,
}

impl Operator {
    async fn of(db: &TestDb) -> Operator {
        let (conn, name) = db.operator().await;
        Operator { conn, name }
    }

    /// Terminates every backend of the test database; returns how many.
    async fn terminate_backends(&mut self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut self.conn)
        .await
        .expect("pg_terminate_backend")
    }

    async fn allow_connections(&mut self, allow: bool) {
        // Audited: the name is the harness's `portcullis_t_<hex>`.
        let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS {allow}", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .expect("ALTER DATABASE");
    }
}

/// A server of the `test` environment on the Postgres test database.
async fn server_on(db: &TestDb) -> TestServer {
    TestServer::start(&[
        ("SERVICES__DATABASE__KIND", "postgres"),
        ("SERVICES__DATABASE__URL", &db.url),
        ("SERVICES__DATABASE__CONNECT_TIMEOUT_MS", "1000"),
    ])
    .await
}

/// What the server answered to one `user_message`.
#[derive(Debug)]
enum Answer {
    /// An `error` answering it (`ref_id` is its id).
    Refused(Value),
    /// Its ack, then its run's events up to and including `agent_completed`.
    Ran { ack: Value, events: Vec<Value> },
}

/// Sends a message and reads what answers it.
async fn exchange(c: &mut Client, id: &str, content: &str, thread: Option<&str>) -> Answer {
    c.ask(id, content, thread).await;
    let first = c.recv().await;
    match first["type"].as_str() {
        Some("error") => {
            assert_eq!(first["ref_id"], id, "{first}");
            return Answer::Refused(first);
        }
        Some("ack") => assert_eq!(first["id"], id, "{first}"),
        _ => panic!("expected the ack or an error for {id}, got {first}"),
    }
    let mut events = Vec::new();
    loop {
        let event = c.recv().await;
        assert_eq!(event["run_id"], first["run_id"], "{event}");
        let done = event["type"] == "agent_completed";
        events.push(event);
        if done {
            return Answer::Ran { ack: first, events };
        }
    }
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user, 600))
}

async fn thread_messages(s: &TestServer, user: &str, thread: &str) -> HttpReply {
    let path = format!("/api/threads/{thread}/messages");
    s.http("GET", &path, &[("Authorization", &bearer(user))])
        .await
}

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
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicI64::new(0));
    let mut operator = Operator::of(&db).await;
    let terminator = {
        let (stop, killed) = (Arc::clone(&stop), Arc::clone(&killed));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                killed.fetch_add(operator.terminate_backends().await, Ordering::Relaxed);
                // Irregular, so the faults land at every point of a run.
                let pause = rand::random_range(10..120);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        })
    };
    let mut clients = Vec::new();
    // One user per client: a user's events reach every connection of that user.
    let users: Vec<String> = (0..6).map(|n| format!("user{n}")).collect();
    for (n, user) in users.iter().enumerate() {
        let mut c = s.user(user).await;
        clients.push(tokio::spawn(async move {
            let mut thread: Option<String> = None;
            let mut answers = Vec::new();
            for m in 0..6 {
                let content = ["what is 6*7?", "hello [[slow:5]]", "what time is it?"][m % 3];
                let answer =
                    exchange(&mut c, &format!("c{n}m{m}"), content, thread.as_deref()).await;
                if let Answer::Ran { ack, .. } = &answer {
                    thread = ack["thread_id"].as_str().map(str::to_string);
                }
                answers.push(answer);
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.expect("client"));
    }
    stop.store(true, Ordering::Relaxed);
    terminator.await.expect("terminator");
    let (mut refused, mut unstored, mut ok) = (0, 0, Vec::new());
    for answer in &answers {
        match answer {
            Answer::Refused(e) => {
                refused += 1;
                assert_eq!(
                    (&e["code"], &e["retryable"]),
                    (&"STORE_UNAVAILABLE".into(), &true.into()),
                    "{e}"
                );
            }
            Answer::Ran { events, .. } => {
                let end = events.last().expect("an end");
                match end.get("seq") {
                    Some(_) if end["status"] == "ok" => ok.push(end.clone()),
                    Some(_) => {}
                    None => {
                        unstored += 1;
                        assert_eq!(end["status"], "error", "unstored and ok: {end}");
                        assert_eq!(end["error"]["code"], "STORAGE_UNAVAILABLE", "{end}");
                    }
                }
            }
        }
    }
    eprintln!(
        "{} messages: {} ok, {unstored} ended unstored, {refused} refused; {} backends terminated",
        answers.len(),
        ok.len(),
        killed.load(Ordering::Relaxed)
    );
    assert!(
        killed.load(Ordering::Relaxed) > 0,
        "no backend was terminated"
    );

    // After the sweep, the replay of every thread closes every run it starts.
    let store = db.open().await;
    let deadline = tokio::time::Instant::now() + SWEEP_INTERVAL * 4;
    let replay = loop {
        let mut replay = Vec::new();
        for user in &users {
            replay.extend(replay_all(&store, user).await);
        }
        let open = open_runs(&replay);
        if open.is_empty() {
            break replay;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs without an end: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for end in ok {
        let stored = completion_of(&replay, &end["run_id"]).expect("a live ok end is stored");
        assert_eq!(stored, &end);
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

/// While the database refuses connections, the thread routes answer 503
/// `STORE_UNAVAILABLE` and a message gets a retryable `STORE_UNAVAILABLE`; once it
/// accepts them again, the same requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_refusing_connections_is_unavailable_and_retryable() {
    let db = TestDb::postgres().await;
    let s = server_on(&db).await;
    let mut c = s.user("alice").await;
    let Answer::Ran { ack, .. } = exchange(&mut c, "m1", "hello", None).await else {
        panic!("refused before the fault")
    };
    let thread = ack["thread_id"].as_str().expect("thread id").to_string();
    let mut operator = Operator::of(&db).await;
    operator.allow_connections(false).await;
    operator.terminate_backends().await;

    let list = s
        .http(
            "GET",
            "/api/threads",
            &[("Authorization", &bearer("alice"))],
        )
        .await;
    assert_eq!(list.status, 503, "{list:?}");
    assert_eq!(list.json()["error_code"], "STORE_UNAVAILABLE", "{list:?}");
    let messages = thread_messages(&s, "alice", &thread).await;
    assert_eq!(messages.status, 503, "{messages:?}");
    assert_eq!(messages.json()["error_code"], "STORE_UNAVAILABLE");
    let Answer::Refused(refused) = exchange(&mut c, "m2", "hello", Some(&thread)).await else {
        panic!("stored while the database refused connections")
    };
    assert_eq!(refused["code"], "STORE_UNAVAILABLE", "{refused}");
    assert_eq!(refused["retryable"], true, "{refused}");

    operator.allow_connections(true).await;
    let list = s
        .http(
            "GET",
            "/api/threads",
            &[("Authorization", &bearer("alice"))],
        )
        .await;
    assert_eq!(list.status, 200, "{list:?}");
    let Answer::Ran { events, .. } = exchange(&mut c, "m2", "hello", Some(&thread)).await else {
        panic!("refused after the database came back")
    };
    assert_eq!(events.last().expect("an end")["status"], "ok");
}

/// Content with U+0000 is refused with a non-retryable `BAD_MESSAGE` on both databases,
/// stores nothing, and leaves the connection open.
async fn nul_content_is_a_bad_message(s: &TestServer) {
    let mut c = s.user("alice").await;
    let Answer::Refused(refused) = exchange(&mut c, "m1", "a\u{0}b", None).await else {
        panic!("content with U+0000 was accepted")
    };
    assert_eq!(refused["code"], "BAD_MESSAGE", "{refused}");
    assert_eq!(refused["retryable"], false, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("U+0000")
    );
    c.ping_pong().await;
    let list = s
        .http(
            "GET",
            "/api/threads",
            &[("Authorization", &bearer("alice"))],
        )
        .await;
    assert_eq!(list.json()["threads"], Value::Array(Vec::new()), "{list:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_content_is_a_bad_message_on_sqlite() {
    nul_content_is_a_bad_message(&TestServer::start(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_content_is_a_bad_message_on_postgres() {
    let db = TestDb::postgres().await;
    nul_content_is_a_bad_message(&server_on(&db).await).await;
}

/// Over the store API: a data exception the database raises (class 22, here a failed
/// cast in a trigger) is `BadData`, not retryable; a database refusing connections is
/// `Unavailable`, retryable, and the store recovers when it accepts them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_are_classified_by_what_a_retry_can_change() {
    let db = TestDb::postgres().await;
    let store = Store::connect(&db.url, 2, Duration::from_millis(500))
        .await
        .expect("connect");
    let mut own = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::raw_sql(
        "CREATE FUNCTION numbers_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM NEW.content::integer; RETURN NEW; END $$; \
         CREATE TRIGGER numbers_only BEFORE INSERT ON messages FOR EACH ROW \
         WHEN (NEW.role = 'user') EXECUTE FUNCTION numbers_only();",
    )
    .execute(&mut own)
    .await
    .expect("trigger");
    own.close().await.expect("close");
    let refused = store
        .accept_message(msg("alice", "c1", None, "hello"))
        .await
        .expect_err("refused by the database");
    assert_eq!(
        (refused.code(), refused.is_retryable()),
        ("BAD_MESSAGE", false)
    );
    assert!(refused.to_string().contains("22P02"), "{refused}");
    store
        .accept_message(msg("alice", "c2", None, "42"))
        .await
        .expect("a number is stored");

    let mut operator = Operator::of(&db).await;
    operator.allow_connections(false).await;
    operator.terminate_backends().await;
    let down = store.list_threads("alice").await;
    assert!(
        matches!(&down, Err(e @ StoreError::Unavailable(_)) if e.is_retryable()),
        "{down:?}"
    );
    let down = store.accept_message(msg("alice", "c3", None, "7")).await;
    assert!(matches!(&down, Err(StoreError::Unavailable(_))), "{down:?}");
    operator.allow_connections(true).await;
    let threads = tokio::time::timeout(FRAME_TIMEOUT, store.list_threads("alice"))
        .await
        .expect("in time")
        .expect("the store recovers");
    assert_eq!(threads.len(), 1);
}
