//! Store cases about the event log: seq order under concurrency, replay, durability
//! across a reopen, and connection errors.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use portcullis::store::{Store, StoreError};
use portcullis::wire::StoredEvent;
use serde_json::json;
use sqlx::Connection;

use super::harness::{TestDb, event, msg, parse};

pub async fn seq_is_gapless_under_concurrent_appends(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "go"))
        .await
        .expect("accept");
    let b = store
        .accept_message(msg("alice", "c2", Some(&a.thread_id), "again"))
        .await
        .expect("accept");
    let mut tasks = Vec::new();
    for task in 0..6 {
        let store = store.clone();
        let thread = a.thread_id.clone();
        let run = if task % 2 == 0 {
            a.run_id.clone()
        } else {
            b.run_id.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<Vec<StoredEvent>> = Vec::new();
            for batch in 0..12 {
                let events = (0..1 + batch % 3)
                    .map(|i| {
                        event(
                            &run,
                            "agent_thinking",
                            json!({ "text": format!("{task}/{batch}/{i}") }),
                        )
                    })
                    .collect();
                mine.push(store.append_events(&thread, events).await.expect("append"));
            }
            mine
        }));
    }
    let mut all: BTreeMap<i64, String> = BTreeMap::new();
    for task in tasks {
        let batches = task.await.expect("task");
        let mut previous = 0;
        for batch in batches {
            // A batch gets consecutive seqs, and a caller's batches are in order.
            for (i, stored) in batch.iter().enumerate() {
                assert_eq!(stored.seq, batch[0].seq + i as i64);
                assert!(stored.seq > previous);
                previous = stored.seq;
                let v = parse(&stored.json);
                assert_eq!(v["seq"], stored.seq);
                assert_eq!(v["thread_id"], a.thread_id.as_str());
                assert_eq!(v["run_id"], stored.run_id.as_str());
                assert!(
                    all.insert(stored.seq, stored.json.clone()).is_none(),
                    "duplicate seq"
                );
            }
        }
    }
    let total = all.len() as i64;
    // Six tasks, each 12 batches of 1, 2 and 3 events in turn.
    assert_eq!(total, 6 * 4 * (1 + 2 + 3));
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );

    // Replay returns the exact text that was handed out live.
    let replay = store
        .events_after("alice", &a.thread_id, 0, 10_000)
        .await
        .expect("replay");
    let replayed: BTreeMap<i64, String> = replay.into_iter().map(|e| (e.seq, e.json)).collect();
    assert_eq!(replayed, all);
    let list = store.list_threads("alice").await.expect("list");
    assert_eq!(list[0].last_seq, total);
}

pub async fn events_after_filters_and_limits(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "go"))
        .await
        .expect("accept");
    let first = (0..4)
        .map(|i| event(&a.run_id, "agent_response", json!({ "delta": i })))
        .collect();
    store
        .append_events(&a.thread_id, first)
        .await
        .expect("batch");
    for i in 4..10 {
        store
            .append_events(
                &a.thread_id,
                vec![event(&a.run_id, "agent_response", json!({ "delta": i }))],
            )
            .await
            .expect("single");
    }
    assert!(
        store
            .append_events(&a.thread_id, Vec::new())
            .await
            .expect("empty")
            .is_empty()
    );

    let seqs = |events: Vec<StoredEvent>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let after = |n, limit| store.events_after("alice", &a.thread_id, n, limit);
    assert_eq!(
        seqs(after(0, 100).await.expect("all")),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(seqs(after(4, 3).await.expect("window")), vec![5, 6, 7]);
    assert_eq!(seqs(after(9, 5).await.expect("tail")), vec![10]);
    assert!(after(10, 5).await.expect("none").is_empty());
    assert!(after(0, 0).await.expect("limit 0").is_empty());
    let fifth = parse(&after(4, 1).await.expect("one")[0].json);
    assert_eq!(fifth["delta"], 4);
    assert_eq!(fifth["type"], "agent_response");

    // Seqs are per thread.
    let other = store
        .accept_message(msg("alice", "c2", None, "other"))
        .await
        .expect("accept");
    let stored = store
        .append_events(
            &other.thread_id,
            vec![event(&other.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("append other");
    assert_eq!(stored[0].seq, 1);
    assert_eq!(after(0, 100).await.expect("unchanged").len(), 10);

    match store
        .append_events("t_missing", vec![event("r_x", "agent_started", json!({}))])
        .await
    {
        Err(StoreError::ThreadNotFound) => {}
        other => panic!("append to a missing thread: {other:?}"),
    }
}

pub async fn data_survives_reopen(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "keep me"))
        .await
        .expect("accept");
    let events = (0..3)
        .map(|i| event(&a.run_id, "agent_response", json!({ "delta": i })))
        .collect();
    let before = store
        .append_events(&a.thread_id, events)
        .await
        .expect("append");
    store.close().await;
    drop(store);

    if db.is_sqlite() {
        // The journal mode is stored in the file, so a separate connection can see it.
        let path = db.url.trim_start_matches("sqlite://");
        assert!(
            std::path::Path::new(path).exists(),
            "database file created at {path}"
        );
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("raw connect");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
        conn.close().await.expect("close");
    }

    let store = db.open().await;
    let after = store
        .events_after("alice", &a.thread_id, 0, 100)
        .await
        .expect("replay");
    assert_eq!(after, before);
    let again = store
        .accept_message(msg("alice", "c1", None, "keep me"))
        .await
        .expect("repeat");
    assert!(again.duplicate);
    assert_eq!(again.message_id, a.message_id);
    let next = store
        .append_events(
            &a.thread_id,
            vec![event(&a.run_id, "agent_response", json!({ "delta": 3 }))],
        )
        .await
        .expect("append after reopen");
    assert_eq!(next[0].seq, 4);
}

pub async fn bad_urls_are_clear_errors_without_secrets() {
    let quick = Duration::from_secs(2);
    let cases = [
        ("mysql://root:hunter2@localhost/db", "STORE_BAD_URL"),
        ("hunter2", "STORE_BAD_URL"),
        ("", "STORE_BAD_URL"),
        ("postgres://u:hunter2@[::1/db", "STORE_BAD_URL"),
        // Nothing listens on port 1: unavailable, which is retryable.
        ("postgres://u:hunter2@127.0.0.1:1/db", "STORE_UNAVAILABLE"),
    ];
    for (url, code) in cases {
        let err = match Store::connect(url, 1, quick).await {
            Ok(_) => panic!("{url:?} connected"),
            Err(e) => e,
        };
        assert_eq!(err.code(), code, "{url:?}: {err}");
        assert_eq!(err.is_retryable(), code == "STORE_UNAVAILABLE");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("hunter2"),
            "{url:?} leaked the password: {text}"
        );
    }
    let seen: HashSet<&str> = cases.iter().map(|(_, c)| *c).collect();
    assert_eq!(seen.len(), 2);
}

/// Many concurrent runs on many threads, as the group-commit writer sees them: every
/// thread's seqs stay 1..n without gaps or duplicates, and every caller gets back exactly
/// the events it sent, in its order, with the completion last.
pub async fn concurrent_runs_on_many_threads_keep_seqs_and_answers(db: &TestDb) {
    let store = db.open().await;
    const THREADS: usize = 8;
    const RUNS_PER_THREAD: usize = 4;
    const EVENTS_PER_RUN: usize = 10;
    let mut runs = Vec::new();
    for t in 0..THREADS {
        let first = store
            .accept_message(msg("alice", &format!("t{t}r0"), None, "go"))
            .await
            .expect("accept");
        let thread = first.thread_id.clone();
        runs.push(first);
        for r in 1..RUNS_PER_THREAD {
            runs.push(
                store
                    .accept_message(msg("alice", &format!("t{t}r{r}"), Some(&thread), "go"))
                    .await
                    .expect("accept"),
            );
        }
    }
    let mut tasks = Vec::new();
    for run in runs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<StoredEvent> = Vec::new();
            for i in 0..EVENTS_PER_RUN {
                let text = format!("{}/{i}", run.run_id);
                // Some single events, some pairs: batches mix both.
                let events = if i % 3 == 0 {
                    vec![
                        event(&run.run_id, "agent_thinking", json!({ "text": text })),
                        event(&run.run_id, "agent_response", json!({ "delta": text })),
                    ]
                } else {
                    vec![event(
                        &run.run_id,
                        "agent_thinking",
                        json!({ "text": text }),
                    )]
                };
                let sent = events.len();
                let got = store
                    .append_events(&run.thread_id, events)
                    .await
                    .expect("append");
                assert_eq!(got.len(), sent);
                for stored in &got {
                    let v = parse(&stored.json);
                    assert_eq!(v["run_id"], run.run_id.as_str());
                    assert_eq!(v["thread_id"], run.thread_id.as_str());
                    assert_eq!(v["seq"], stored.seq);
                    let own = v["text"].as_str().or(v["delta"].as_str());
                    assert_eq!(own, Some(text.as_str()), "someone else's event");
                }
                mine.extend(got);
            }
            let done = store
                .finish_run(
                    &run.thread_id,
                    &run.run_id,
                    "ok",
                    &run.run_id,
                    event(&run.run_id, "agent_completed", json!({})),
                )
                .await
                .expect("finish");
            assert_eq!(parse(&done.json)["message"]["content"], run.run_id.as_str());
            mine.push(done);
            (run.thread_id, mine)
        }));
    }
    let mut by_thread: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
    for task in tasks {
        let (thread, mine) = task.await.expect("task");
        assert!(
            mine.windows(2).all(|w| w[0].seq < w[1].seq),
            "a caller's events are in its order"
        );
        let seqs = by_thread.entry(thread).or_default();
        for stored in mine {
            assert!(
                seqs.insert(stored.seq, stored.json).is_none(),
                "duplicate seq"
            );
        }
    }
    assert_eq!(by_thread.len(), THREADS);
    let per_thread = RUNS_PER_THREAD * (EVENTS_PER_RUN + EVENTS_PER_RUN.div_ceil(3) + 1);
    for (thread, seqs) in &by_thread {
        assert_eq!(
            seqs.keys().copied().collect::<Vec<_>>(),
            (1..=per_thread as i64).collect::<Vec<_>>(),
            "thread {thread} has gaps"
        );
        // Stored is what was answered, byte for byte.
        let replay = store
            .events_after("alice", thread, 0, 10_000)
            .await
            .expect("replay");
        assert_eq!(replay.len(), per_thread);
        for stored in replay {
            assert_eq!(seqs.get(&stored.seq), Some(&stored.json));
        }
    }
}

/// A write the database rejects (here: an event row the seq counter does not know about
/// makes one thread's insert collide; on SQLite a trigger refuses it) fails alone; writes
/// batched with it still commit.
pub async fn a_rejected_write_does_not_fail_the_others(db: &TestDb) {
    let store = db.open().await;
    let bad = store
        .accept_message(msg("alice", "bad", None, "go"))
        .await
        .expect("accept");
    let mut good = Vec::new();
    for i in 0..8 {
        good.push(
            store
                .accept_message(msg("alice", &format!("good{i}"), None, "go"))
                .await
                .expect("accept"),
        );
    }
    if db.is_sqlite() {
        // SQLite stores a run's events of one commit as one row (migration 4), so a
        // duplicate row cannot be arranged: the database refuses this run's writes.
        let mut conn = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("connect");
        assert!(
            bad.run_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        );
        let trigger = format!(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON events \
             WHEN NEW.run_no = (SELECT no FROM runs WHERE id = '{}') \
             BEGIN SELECT RAISE(FAIL, 'refused by the test'); END",
            bad.run_id
        );
        // Audited: the run id was just checked to be ASCII letters, digits and `_`.
        sqlx::query(sqlx::AssertSqlSafe(trigger))
            .execute(&mut conn)
            .await
            .expect("rogue trigger");
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("INSERT INTO events (thread_id, seq, run_id, body) VALUES ($1, 1, $2, '{}')")
            .bind(&bad.thread_id)
            .bind(&bad.run_id)
            .execute(&mut conn)
            .await
            .expect("rogue row");
    }
    let mut tasks = Vec::new();
    for round in 0..3 {
        for run in good.iter().chain(std::iter::once(&bad)) {
            let (store, run) = (store.clone(), run.clone());
            let is_bad = run.run_id == bad.run_id;
            tasks.push(tokio::spawn(async move {
                let e = event(&run.run_id, "agent_thinking", json!({ "text": round }));
                (is_bad, store.append_events(&run.thread_id, vec![e]).await)
            }));
        }
    }
    for task in tasks {
        match task.await.expect("task") {
            (true, result) => assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}"),
            (false, result) => assert_eq!(result.expect("good write").len(), 1),
        }
    }
    for run in &good {
        let events = store
            .events_after("alice", &run.thread_id, 0, 100)
            .await
            .expect("replay");
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}
