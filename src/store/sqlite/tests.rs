//! Checks of the SQLite connection settings that durability rests on; the integration
//! tests cannot see per-connection pragmas through the public API.

use std::time::Duration;

use super::SqliteStore;

/// A store on a new file `name` in a fresh temporary directory (kept alive by the caller).
async fn temp_store(name: &str, pool: u32) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join(name).display());
    let store = SqliteStore::connect(&url, pool, Duration::from_secs(5))
        .await
        .expect("connect");
    (dir, store)
}

#[tokio::test]
async fn every_connection_is_wal_with_full_sync_foreign_keys_and_memory_temp_store() {
    let (_dir, store) = temp_store("a/b/c.db", 3).await;
    // Hold every pooled connection at once so each one is checked, not just the first.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool.acquire().await.expect("acquire");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .expect("journal_mode");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .expect("synchronous");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .expect("foreign_keys");
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&mut *conn)
            .await
            .expect("temp_store");
        // synchronous: 2 is FULL; temp_store: 2 is MEMORY.
        assert_eq!(
            (journal.as_str(), synchronous, foreign_keys, temp_store),
            ("wal", 2, 1, 2)
        );
        held.push(conn);
    }
}

/// The group-commit writer's own connection carries the same durability settings as the
/// pool's, plus the checkpoint interval.
#[tokio::test]
async fn the_writer_connection_is_wal_with_full_sync_and_the_pool_settings() {
    let (_dir, store) = temp_store("w.db", 1).await;
    let writer = super::conn::open(&store.writer).expect("writer connection");
    let pragma = |name: &str| -> String {
        writer
            .pragma_query_value(None, name, |row| {
                Ok(row
                    .get_ref(0)?
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|_| {
                        row.get::<_, i64>(0)
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    }))
            })
            .expect(name)
    };
    let settings: Vec<String> = [
        "journal_mode",
        "synchronous",
        "foreign_keys",
        "temp_store",
        "wal_autocheckpoint",
    ]
    .iter()
    .map(|name| pragma(name))
    .collect();
    // synchronous: 2 is FULL; temp_store: 2 is MEMORY.
    assert_eq!(settings, ["wal", "2", "1", "2", "1000"]);
}

/// The idempotency lookup of every batch searches the client-id index instead of scanning
/// all runs, listing threads searches by user, and a thread's messages and events are
/// found through `runs_by_thread` and the events' `(run_id, seq)` key.
#[tokio::test]
async fn batch_lookups_use_the_indexes() {
    let (_dir, store) = temp_store("i.db", 1).await;
    let writer = super::conn::open(&store.writer).expect("writer connection");
    let plan = |sql: &str| -> String {
        let mut stmt = writer
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        // Parameters left unbound are NULL, which does not change the plan.
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().expect("plan row") {
            steps.push(row.get::<_, String>(3).expect("plan text"));
        }
        steps.join("; ")
    };
    let lookup = plan(&super::batch::lookup_sql(4));
    assert!(
        lookup.contains("USING INDEX runs_client_id (user_id=? AND client_id=?)"),
        "{lookup}"
    );
    let messages = plan(
        "SELECT r.message_id FROM threads t JOIN runs r ON r.thread_no = t.no \
         WHERE t.id = 't' ORDER BY r.no",
    );
    assert!(
        messages.contains("USING COVERING INDEX runs_by_thread (thread_no=?)")
            || messages.contains("USING INDEX runs_by_thread (thread_no=?)"),
        "{messages}"
    );
    let events = plan(
        "SELECT e.first_seq, e.last_seq, r.id, e.body FROM threads t \
         JOIN runs r ON r.thread_no = t.no \
         JOIN events e ON e.run_no = r.no AND e.last_seq > 3 WHERE t.id = 't' \
         ORDER BY e.first_seq",
    );
    assert!(events.contains("runs_by_thread (thread_no=?)"), "{events}");
    assert!(
        events.contains("SEARCH e USING INDEX events_by_run (run_no=? AND last_seq>?)"),
        "{events}"
    );
    let list = plan("SELECT id FROM threads WHERE user_id = 'u' ORDER BY updated_at DESC");
    assert!(
        list.contains("USING INDEX threads_by_user (user_id=?)"),
        "{list}"
    );
}

/// The writer never creates a database of its own: a missing file is `Unavailable`
/// (retried with the next batch), and the error does not carry the path.
#[test]
fn the_writer_does_not_create_a_missing_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing/x.db");
    let spec = super::conn::WriterSpec {
        path: path.clone(),
        busy_timeout: Duration::from_secs(1),
    };
    let err = super::conn::open(&spec).expect_err("no such file");
    assert_eq!(err.code(), "STORE_UNAVAILABLE", "{err}");
    assert!(!err.to_string().contains("missing"), "{err}");
    assert!(!path.exists());
}

/// Once the store is closed, writes are refused with `Unavailable` instead of reopening
/// the file behind the closed pool.
#[tokio::test]
async fn writes_after_close_are_unavailable() {
    let (_dir, store) = temp_store("c.db", 1).await;
    let msg = || crate::store::NewMessage {
        user_id: "alice",
        client_id: "c1",
        thread_id: None,
        content: "hi",
        agent: "echo",
    };
    store.accept_message(msg()).await.expect("before close");
    store.close().await;
    let err = store.accept_message(msg()).await.expect_err("after close");
    assert_eq!(err.code(), "STORE_UNAVAILABLE", "{err}");
}

mod group_commit {
    use serde_json::{Map, Value, json};
    use tokio::sync::{mpsc, oneshot};

    use super::super::SqliteStore;
    use super::super::group;
    use super::super::request::{Op, Outcome, Reply, Request};
    use super::super::{batch, conn};
    use crate::store::{NewMessage, StoreError};
    use crate::wire::{EventBody, EventRecord, StoredEvent};

    type AppendReply = oneshot::Receiver<Result<Vec<StoredEvent>, StoreError>>;
    type FinishReply = oneshot::Receiver<Result<StoredEvent, StoreError>>;

    /// Written as runs write their events (`BodyWriter`), not as a map.
    fn record(run_id: &str, text: &str) -> EventRecord {
        let mut body = crate::wire::BodyWriter::default();
        body.str("type", "agent_thinking");
        body.str("text", text);
        EventRecord {
            run_id: run_id.into(),
            body: body.finish(),
        }
    }

    fn append(thread_id: &str, events: Vec<EventRecord>) -> (Request, AppendReply) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Append {
            events,
            reply: Reply::Wait(reply),
        };
        (
            Request {
                thread_id: thread_id.into(),
                op,
            },
            rx,
        )
    }

    fn finish(thread_id: &str, run_id: &str) -> (Request, FinishReply) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Finish {
            run_id: run_id.into(),
            status: "ok".into(),
            content: format!("answer of {run_id}"),
            event: EventRecord {
                run_id: run_id.into(),
                body: EventBody::Map(Map::new()),
            },
            reply: Reply::Wait(reply),
        };
        (
            Request {
                thread_id: thread_id.into(),
                op,
            },
            rx,
        )
    }

    async fn open() -> (tempfile::TempDir, SqliteStore) {
        super::temp_store("g.db", 3).await
    }

    async fn accept(
        store: &SqliteStore,
        client_id: &str,
        thread: Option<&str>,
    ) -> (String, String) {
        let a = store
            .accept_message(NewMessage {
                user_id: "alice",
                client_id,
                thread_id: thread,
                content: "hi",
                agent: "echo",
            })
            .await
            .expect("accept");
        (a.thread_id, a.run_id)
    }

    fn seqs(outcome: &Outcome) -> Vec<i64> {
        match outcome {
            Outcome::Appended(v) => v.iter().map(|e| e.seq).collect(),
            Outcome::Finished(e) => vec![e.seq],
            other => panic!("unexpected outcome: {other:?}"),
        }
    }

    /// Requests that cannot succeed are answered with their own error inside a batch
    /// that commits everything else, and consume no seq.
    #[tokio::test]
    async fn failing_requests_do_not_fail_their_batch() {
        let (_dir, store) = open().await;
        let (ta, ra) = accept(&store, "c1", None).await;
        let (tb, rb) = accept(&store, "c2", None).await;
        store
            .finish_run(
                &ta,
                &ra,
                "ok",
                "done",
                EventRecord {
                    run_id: ra.clone(),
                    body: EventBody::Map(Map::new()),
                },
            )
            .await
            .expect("first finish");
        let (_, ra2) = accept(&store, "c3", Some(&ta)).await;
        let batch: Vec<Request> = vec![
            append(&ta, vec![record(&ra2, "a1"), record(&ra2, "a2")]).0,
            finish(&ta, &ra).0,                             // already finished
            append("t_missing", vec![record(&ra2, "x")]).0, // unknown thread
            append(&tb, vec![record(&rb, "b1")]).0,
            finish(&ta, &rb).0,                      // run of another thread
            append(&ta, vec![record(&rb, "x")]).0,   // run of another thread
            append(&ta, vec![record(&ra, "x")]).0,   // finished run
            finish(&tb, &rb).0,                      // ok
            finish(&tb, &rb).0,                      // the same run again in the batch
            append(&tb, vec![record(&rb, "b2")]).0,  // after its run's end
            append(&ta, vec![record(&ra2, "a3")]).0, // ok
        ];
        let mut writer = conn::open(&store.writer).expect("writer connection");
        let outcomes = batch::commit_batch(&mut writer, &batch).expect("the batch commits");
        assert_eq!(outcomes.len(), batch.len());
        let refused = |i: usize| matches!(outcomes[i], Outcome::Failed(StoreError::RunNotActive));
        // Thread A had agent_completed at seq 1.
        assert_eq!(seqs(&outcomes[0]), vec![2, 3]);
        assert!(refused(1));
        assert!(matches!(
            outcomes[2],
            Outcome::Failed(StoreError::ThreadNotFound)
        ));
        assert_eq!(seqs(&outcomes[3]), vec![1]);
        assert!(refused(4) && refused(5) && refused(6));
        assert_eq!(seqs(&outcomes[7]), vec![2]);
        assert!(refused(8) && refused(9));
        assert_eq!(seqs(&outcomes[10]), vec![4]);
        let Outcome::Finished(done) = &outcomes[7] else {
            unreachable!()
        };
        let v: Value = serde_json::from_str(&done.json).expect("json");
        assert_eq!(v["type"], "agent_completed");
        assert_eq!(v["message"]["content"], json!(format!("answer of {rb}")));

        // What the batch committed is what it answered.
        let a = store.events_after(&ta, 0, 100).await.expect("replay a");
        assert_eq!(
            a.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let b = store.events_after(&tb, 0, 100).await.expect("replay b");
        assert_eq!(b.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        let Outcome::Appended(b1) = &outcomes[3] else {
            unreachable!()
        };
        assert_eq!(b[0], b1[0]);
        assert_eq!(b[1], *done);
        let messages = store.thread_messages(&tb).await.expect("messages");
        assert_eq!(messages.len(), 2, "one user message, one assistant answer");
        assert_eq!(
            messages[1].message_id,
            v["message"]["id"].as_str().expect("id")
        );
        let (last_seq, status): (i64, String) = sqlx::query_as(
            "SELECT t.last_seq, r.status FROM threads t JOIN runs r ON r.thread_no = t.no \
             WHERE t.id = ?",
        )
        .bind(&tb)
        .fetch_one(&store.pool)
        .await
        .expect("thread b");
        assert_eq!((last_seq, status.as_str()), (2, "ok"));
    }

    /// A batch costs one statement per step and chunk of rows, however its requests mix:
    /// the count is what the group commit saves over a statement per request.
    #[tokio::test]
    async fn a_batch_runs_one_statement_per_step_and_chunk() {
        let (_dir, store) = open().await;
        let (ta, ra) = accept(&store, "c1", None).await;
        let (tb, rb) = accept(&store, "c2", None).await;
        let batch: Vec<Request> = vec![
            accept_request("n1", None, "alice").0,
            accept_request("n2", Some(&ta), "alice").0,
            accept_request("c1", None, "alice").0, // stored: answered by the lookup
            accept_request("n1", None, "alice").0, // repeated: runs alone afterwards
            append(&ta, vec![record(&ra, "a1"), record(&ra, "a2")]).0,
            append(&ta, vec![record(&ra, "a3")]).0,
            append(&tb, vec![record(&rb, "b1")]).0,
            finish(&ta, &ra).0,
            finish(&tb, &rb).0,
        ];
        let mut writer = conn::open(&store.writer).expect("writer connection");
        batch::STATEMENTS.with(|n| n.set(0));
        let outcomes = batch::commit_batch(&mut writer, &batch).expect("the batch commits");
        let statements = batch::STATEMENTS.with(|n| n.get());
        assert!(matches!(outcomes[3], Outcome::Alone), "{:?}", outcomes[3]);
        // Lookup: three keys, in chunks of 2 and 1. Then one each: touch thread A, create
        // one thread, check the two runs, close them, reserve two threads' seqs, insert
        // two runs, insert two event rows (a run's events of a batch are one row).
        assert_eq!(statements, 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1);
    }

    /// A run's events of one batch are one row, which replay splits back into events,
    /// window by window; a row whose text does not hold its seq range is an error, not a
    /// silent gap.
    #[tokio::test]
    async fn event_rows_split_back_into_their_events() {
        let (_dir, store) = open().await;
        let (ta, ra) = accept(&store, "c1", None).await;
        let batch: Vec<Request> = vec![
            append(&ta, vec![record(&ra, "a1"), record(&ra, "a2")]).0,
            append(&ta, vec![record(&ra, "a3")]).0,
            finish(&ta, &ra).0,
        ];
        let mut writer = conn::open(&store.writer).expect("writer connection");
        batch::commit_batch(&mut writer, &batch).expect("the batch commits");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&store.pool)
            .await
            .expect("rows");
        assert_eq!(rows, 1, "one row for the run's four events");
        let all = store.events_after(&ta, 0, 100).await.expect("replay");
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let texts: Vec<Value> = all
            .iter()
            .map(|e| serde_json::from_str(&e.json).expect("json"))
            .collect();
        assert_eq!(texts[2]["text"], "a3");
        assert_eq!(texts[3]["type"], "agent_completed");
        let window = store.events_after(&ta, 1, 2).await.expect("window");
        assert_eq!(window, all[1..3]);

        sqlx::query("UPDATE events SET last_seq = 5")
            .execute(&store.pool)
            .await
            .expect("corrupt the row");
        let broken = store.events_after(&ta, 0, 100).await;
        assert!(
            matches!(&broken, Err(StoreError::Database(m)) if m.contains("1..=5")),
            "{broken:?}"
        );
    }

    /// When the batch transaction itself fails, each request is retried alone: only the
    /// bad one fails.
    #[tokio::test]
    async fn a_failed_batch_is_retried_request_by_request() {
        let (_dir, store) = open().await;
        let (ta, ra) = accept(&store, "c1", None).await;
        let (tb, rb) = accept(&store, "c2", None).await;
        let (tc, rc) = accept(&store, "c3", None).await;
        // A row the seq counter does not know about: appending to thread C collides.
        sqlx::query(
            "INSERT INTO events (run_no, first_seq, last_seq, body) \
             VALUES ((SELECT no FROM runs WHERE id = ?), 1, 1, '{}')",
        )
        .bind(&rc)
        .execute(&store.pool)
        .await
        .expect("rogue row");

        let (queue, requests) = mpsc::channel(16);
        let (r1, a1) = append(&ta, vec![record(&ra, "a1")]);
        let (r2, c1) = append(&tc, vec![record(&rc, "c1")]);
        let (r3, b1) = finish(&tb, &rb);
        let (r4, a2) = finish(&ta, &ra);
        for r in [r1, r2, r3, r4] {
            queue.send(r).await.map_err(|_| "send").expect("queue");
        }
        drop(queue);
        // Everything is queued before the writer starts: one batch, which fails on C.
        group::run(store.writer.clone(), store.pool.clone(), requests).await;

        assert_eq!(a1.await.expect("answer").expect("a1").len(), 1);
        assert!(matches!(
            c1.await.expect("answer"),
            Err(StoreError::Database(_))
        ));
        assert_eq!(b1.await.expect("answer").expect("b finish").seq, 1);
        assert_eq!(a2.await.expect("answer").expect("a finish").seq, 2);
        let c = store.events_after(&tc, 0, 100).await.expect("replay c");
        assert_eq!(c.len(), 1, "only the rogue row");
        let last: i64 = sqlx::query_scalar("SELECT last_seq FROM threads WHERE id = ?")
            .bind(&tc)
            .fetch_one(&store.pool)
            .await
            .expect("c");
        assert_eq!(last, 0, "the failed append reserved nothing");
    }

    fn accept_request(
        client_id: &str,
        thread: Option<&str>,
        user: &str,
    ) -> (
        Request,
        oneshot::Receiver<Result<crate::store::Accepted, StoreError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Accept {
            user_id: user.into(),
            client_id: client_id.into(),
            thread_id: thread.map(str::to_string),
            content: format!("message {client_id}"),
            agent: "echo".into(),
            reply,
        };
        (
            Request {
                thread_id: String::new(),
                op,
            },
            rx,
        )
    }

    /// New messages in one batch: new threads, existing ones, someone else's thread, a
    /// stored client id and a client id repeated within the batch.
    #[tokio::test]
    async fn accepts_in_one_batch_keep_idempotency_and_ownership() {
        let (_dir, store) = open().await;
        let (ta, _ra) = accept(&store, "c1", None).await;
        let (queue, requests) = mpsc::channel(16);
        let (r1, fresh) = accept_request("n1", None, "alice");
        let (r2, repeat_in_batch) = accept_request("n1", None, "alice");
        let (r3, stored_again) = accept_request("c1", None, "alice");
        let (r4, into_a) = accept_request("n2", Some(&ta), "alice");
        let (r5, foreign) = accept_request("n3", Some(&ta), "mallory");
        let (r6, missing) = accept_request("n4", Some("t_missing"), "alice");
        let (r7, other_user_same_id) = accept_request("n1", None, "bob");
        for r in [r1, r2, r3, r4, r5, r6, r7] {
            queue.send(r).await.map_err(|_| "send").expect("queue");
        }
        drop(queue);
        group::run(store.writer.clone(), store.pool.clone(), requests).await;

        let fresh = fresh.await.expect("answer").expect("fresh");
        assert!(!fresh.duplicate);
        assert_ne!(fresh.thread_id, ta);
        let again = repeat_in_batch.await.expect("answer").expect("repeat");
        assert_eq!(
            again,
            crate::store::Accepted {
                duplicate: true,
                ..fresh.clone()
            }
        );
        let stored = stored_again.await.expect("answer").expect("stored");
        assert!(stored.duplicate);
        assert_eq!(stored.thread_id, ta);
        let into_a = into_a.await.expect("answer").expect("into a");
        assert_eq!(
            (into_a.thread_id.as_str(), into_a.duplicate),
            (ta.as_str(), false)
        );
        assert!(matches!(
            foreign.await.expect("answer"),
            Err(StoreError::ThreadNotFound)
        ));
        assert!(matches!(
            missing.await.expect("answer"),
            Err(StoreError::ThreadNotFound)
        ));
        let bob = other_user_same_id.await.expect("answer").expect("bob");
        assert!(!bob.duplicate);
        assert_ne!(bob.thread_id, fresh.thread_id);

        let a_messages = store.thread_messages(&ta).await.expect("messages");
        assert_eq!(
            a_messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            vec!["hi", "message n2"]
        );
        // One run (holding its user message) per new message.
        let (running, runs, threads): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM runs WHERE status = 'running'), \
             (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM threads)",
        )
        .fetch_one(&store.pool)
        .await
        .expect("counts");
        assert_eq!((running, runs, threads), (4, 4, 3));
    }
}

/// The `Store` calls a chat run makes on SQLite return small futures: every message and
/// run future holds one of them, and a task's future is copied whole when it is spawned
/// and when it finishes. An unboxed Postgres arm made each of these kilobytes (sqlx's
/// Postgres futures), which showed up as a third of the server's instructions under
/// callgrind, nearly all of it `memcpy` (docs/PERFORMANCE.md).
#[tokio::test]
async fn store_futures_on_sqlite_stay_small() {
    use crate::store::{Db, NewMessage, Store};
    use crate::wire::{EventBody, EventRecord};
    let (_dir, sqlite) = temp_store("sizes.db", 1).await;
    let store = Store::new(Db::Sqlite(sqlite), None);
    let msg = NewMessage {
        user_id: "u",
        client_id: "c",
        thread_id: None,
        content: "hi",
        agent: "assistant",
    };
    let record = || EventRecord {
        run_id: "r".into(),
        body: EventBody::Map(serde_json::Map::new()),
    };
    let sizes = [
        (
            "accept_message",
            std::mem::size_of_val(&store.accept_message(msg)),
        ),
        (
            "append_events_then",
            std::mem::size_of_val(&store.append_events_then("t", vec![record()], Box::new(|_| {}))),
        ),
        (
            "finish_run_then",
            std::mem::size_of_val(&store.finish_run_then(
                "t",
                "r",
                "ok",
                "",
                record(),
                Box::new(|_| {}),
            )),
        ),
    ];
    for (call, size) in sizes {
        assert!(size <= 1536, "Store::{call} future is {size} bytes");
    }
}

/// The bundled SQLite is built with `.cargo/config.toml`'s `LIBSQLITE3_FLAGS`: without
/// them SQLite counts every allocation under a global mutex (docs/PERFORMANCE.md item 8).
#[test]
fn the_bundled_sqlite_is_built_without_allocation_statistics() {
    let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
    let mut stmt = conn.prepare("PRAGMA compile_options").expect("prepare");
    let options: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "SQLite was built without LIBSQLITE3_FLAGS from .cargo/config.toml: {options:?}"
    );
}
