//! Store cases about ending runs: `finish_run` and the boot-time recovery of runs a
//! crash left open, which together keep "one `agent_completed` per run".

use std::collections::BTreeMap;

use portcullis::store::{SWEEP_INTERVAL, StoreError};
use portcullis::wire::StoredEvent;
use serde_json::json;

use super::harness::{TestDb, event, msg, parse};

pub async fn finish_run_stores_answer_and_completion(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "hello"))
        .await
        .expect("accept");
    let started = event(&a.run_id, "agent_started", json!({ "agent": "echo" }));
    let delta = event(&a.run_id, "agent_response", json!({ "delta": "Hello" }));
    store
        .append_events(&a.thread_id, vec![started, delta])
        .await
        .expect("append");

    let extra = event(
        &a.run_id,
        "ignored",
        json!({ "status": "overwritten", "usage": 7 }),
    );
    let done = store
        .finish_run(&a.thread_id, &a.run_id, "ok", "Hello there", extra)
        .await
        .expect("finish");
    assert_eq!(done.seq, 3);
    let v = parse(&done.json);
    assert_eq!(v["type"], "agent_completed");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["usage"], 7);
    assert_eq!(v["run_id"], a.run_id.as_str());
    assert_eq!(v["thread_id"], a.thread_id.as_str());
    assert_eq!(v["seq"], 3);
    assert_eq!(v["message"]["content"], "Hello there");
    let answer_id = v["message"]["id"].as_str().expect("message id").to_string();
    assert!(answer_id.starts_with("m_"));

    let messages = store
        .thread_messages("alice", &a.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].role, "assistant");
    assert_eq!(messages[1].message_id, answer_id);
    assert_eq!(messages[1].content, "Hello there");
    assert_eq!(messages[1].run_id, a.run_id);

    // A run ends once: a second finish, or one naming the wrong thread, is refused.
    let again = store
        .finish_run(
            &a.thread_id,
            &a.run_id,
            "ok",
            "twice",
            event(&a.run_id, "x", json!({})),
        )
        .await;
    assert!(
        matches!(&again, Err(e) if e.code() == "RUN_NOT_ACTIVE"),
        "{again:?}"
    );
    let b = store
        .accept_message(msg("alice", "c2", None, "elsewhere"))
        .await
        .expect("accept");
    let wrong = store
        .finish_run(
            &b.thread_id,
            &a.run_id,
            "ok",
            "",
            event(&a.run_id, "x", json!({})),
        )
        .await;
    assert!(matches!(wrong, Err(StoreError::RunNotActive)), "{wrong:?}");

    let failure = event(
        &b.run_id,
        "agent_completed",
        json!({ "error": { "code": "MODEL", "message": "down" } }),
    );
    let failed = store
        .finish_run(&b.thread_id, &b.run_id, "error", "", failure)
        .await
        .expect("finish b");
    let v = parse(&failed.json);
    assert_eq!(
        (v["status"].clone(), v["error"]["code"].clone()),
        (json!("error"), json!("MODEL"))
    );
    assert_eq!(failed.seq, 1);
    assert!(
        store
            .recover_interrupted_runs()
            .await
            .expect("recover")
            .is_empty()
    );
    assert_eq!(
        store
            .events_after("alice", &a.thread_id, 0, 100)
            .await
            .expect("events")
            .len(),
        3
    );
}

pub async fn interrupted_runs_are_closed_at_boot(db: &TestDb) {
    let store = db.open().await;
    let done = store
        .accept_message(msg("alice", "c1", None, "one"))
        .await
        .expect("accept");
    let thread = done.thread_id.clone();
    store
        .append_events(
            &thread,
            vec![event(&done.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("append");
    store
        .finish_run(
            &thread,
            &done.run_id,
            "ok",
            "fine",
            event(&done.run_id, "x", json!({})),
        )
        .await
        .expect("finish");
    let cut = store
        .accept_message(msg("alice", "c2", Some(&thread), "two"))
        .await
        .expect("accept");
    store
        .append_events(
            &thread,
            vec![event(&cut.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("append");
    let bobs = store
        .accept_message(msg("bob", "c1", None, "bob"))
        .await
        .expect("accept");
    store.close().await;

    // "Restart": a new pool on the same database.
    let store = db.open().await;
    let recovered = store.recover_interrupted_runs().await.expect("recover");
    let mut by_run: BTreeMap<String, StoredEvent> = recovered
        .into_iter()
        .map(|e| (e.run_id.clone(), e))
        .collect();
    assert_eq!(by_run.len(), 2);
    let alice_end = by_run.remove(&cut.run_id).expect("alice's cut run closed");
    let bob_end = by_run.remove(&bobs.run_id).expect("bob's run closed");
    assert_eq!(alice_end.seq, 4);
    assert_eq!(bob_end.seq, 1);
    for ended in [&alice_end, &bob_end] {
        let v = parse(&ended.json);
        assert_eq!(v["type"], "agent_completed");
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "INTERRUPTED");
        assert_eq!(
            v["error"]["message"],
            "the server restarted during this run"
        );
        assert_eq!(v["message"]["content"], "");
        assert!(
            v["message"]["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("m_"))
        );
    }
    assert!(
        store
            .recover_interrupted_runs()
            .await
            .expect("second recover")
            .is_empty()
    );
    let late = store
        .finish_run(
            &thread,
            &cut.run_id,
            "ok",
            "late",
            event(&cut.run_id, "x", json!({})),
        )
        .await;
    assert!(matches!(late, Err(StoreError::RunNotActive)), "{late:?}");

    let roles: Vec<(String, String)> = store
        .thread_messages("alice", &thread)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| (m.role, m.content))
        .collect();
    let expected = [
        ("user", "one"),
        ("assistant", "fine"),
        ("user", "two"),
        ("assistant", ""),
    ];
    assert_eq!(roles, expected.map(|(r, c)| (r.to_string(), c.to_string())));
}

/// Finishing an already-finished run, racing with other runs' writes (which the SQLite
/// store commits in the same batches), fails only that call.
pub async fn refused_finish_does_not_fail_concurrent_writes(db: &TestDb) {
    let store = db.open().await;
    let done = store
        .accept_message(msg("alice", "c0", None, "first"))
        .await
        .expect("accept");
    store
        .finish_run(
            &done.thread_id,
            &done.run_id,
            "ok",
            "x",
            event(&done.run_id, "agent_completed", json!({})),
        )
        .await
        .expect("finish");
    let mut live = Vec::new();
    for i in 0..6 {
        live.push(
            store
                .accept_message(msg("alice", &format!("c{}", i + 1), None, "go"))
                .await
                .expect("accept"),
        );
    }
    let mut tasks = Vec::new();
    for round in 0..5 {
        for run in &live {
            let (store, run) = (store.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                let e = event(&run.run_id, "agent_thinking", json!({ "text": round }));
                store
                    .append_events(&run.thread_id, vec![e])
                    .await
                    .map(|_| ())
            }));
        }
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let again = store
                .finish_run(
                    &done.thread_id,
                    &done.run_id,
                    "ok",
                    "again",
                    event(&done.run_id, "agent_completed", json!({})),
                )
                .await;
            assert!(matches!(again, Err(StoreError::RunNotActive)), "{again:?}");
            Ok(())
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("write");
    }
    for run in &live {
        let events = store
            .events_after("alice", &run.thread_id, 0, 100)
            .await
            .expect("replay");
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }
    // The finished run still has exactly one completion.
    let events = store
        .events_after("alice", &done.thread_id, 0, 100)
        .await
        .expect("replay");
    assert_eq!(events.len(), 1);
}

/// Events go only to a running run of their own thread (a thread's events are found
/// through its runs, and nothing of a run follows its completion); a thread's messages
/// list each user message followed by the reply that ended its run, also when a second
/// message was stored before the first run ended.
pub async fn appends_need_a_running_run_of_the_thread(db: &TestDb) {
    let store = db.open().await;
    let first = store
        .accept_message(msg("alice", "c1", None, "one"))
        .await
        .expect("accept");
    let thread = first.thread_id.clone();
    // Stored while the first run is still going.
    let second = store
        .accept_message(msg("alice", "c2", Some(&thread), "two"))
        .await
        .expect("accept");
    let elsewhere = store
        .accept_message(msg("alice", "c3", None, "three"))
        .await
        .expect("accept");
    store
        .finish_run(
            &thread,
            &first.run_id,
            "ok",
            "answer one",
            event(&first.run_id, "x", json!({})),
        )
        .await
        .expect("finish first");

    let refused = [
        (&thread, &first.run_id),               // ended
        (&thread, &elsewhere.run_id),           // another thread's run
        (&elsewhere.thread_id, &second.run_id), // the same, the other way round
        (&thread, &"r_unknown".to_string()),    // no such run
    ];
    for (thread_id, run_id) in refused {
        let result = store
            .append_events(thread_id, vec![event(run_id, "agent_thinking", json!({}))])
            .await;
        assert!(
            matches!(result, Err(StoreError::RunNotActive)),
            "{run_id} in {thread_id}: {result:?}"
        );
    }
    // A batch with one refused event stores none of it.
    let mixed = store
        .append_events(
            &thread,
            vec![
                event(&second.run_id, "agent_thinking", json!({})),
                event(&first.run_id, "agent_thinking", json!({})),
            ],
        )
        .await;
    assert!(matches!(mixed, Err(StoreError::RunNotActive)), "{mixed:?}");
    let stored = store
        .append_events(
            &thread,
            vec![event(&second.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("the running run of the thread");
    assert_eq!(stored[0].seq, 2, "refused appends took no seq");
    let replay = store
        .events_after("alice", &thread, 0, 100)
        .await
        .expect("replay");
    assert_eq!(
        replay
            .iter()
            .map(|e| (e.seq, e.run_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, first.run_id.as_str()), (2, second.run_id.as_str())]
    );
    store
        .finish_run(
            &thread,
            &second.run_id,
            "ok",
            "answer two",
            event(&second.run_id, "x", json!({})),
        )
        .await
        .expect("finish second");
    let messages: Vec<(String, String, String)> = store
        .thread_messages("alice", &thread)
        .await
        .expect("messages")
        .into_iter()
        .map(|m| (m.role, m.content, m.run_id))
        .collect();
    let expected = [
        ("user", "one", &first.run_id),
        ("assistant", "answer one", &first.run_id),
        ("user", "two", &second.run_id),
        ("assistant", "answer two", &second.run_id),
    ]
    .map(|(r, c, id)| (r.to_string(), c.to_string(), id.clone()));
    assert_eq!(messages, expected);
}

/// A run whose end could not be stored is handed to the store, whose sweep stores that
/// end within a few intervals: the replay then has it, with the error the client saw.
/// Ending it again is refused, and so is anything more of it. A running run nobody
/// abandoned (another node's, say) is left alone.
pub async fn abandoned_runs_are_closed_by_the_sweep(db: &TestDb) {
    let store = db.open().await;
    let live = store
        .accept_message(msg("alice", "c0", None, "still running"))
        .await
        .expect("accept");
    let started = event(&live.run_id, "agent_started", json!({ "agent": "echo" }));
    store
        .append_events(&live.thread_id, vec![started])
        .await
        .expect("append");
    let a = store
        .accept_message(msg("alice", "c1", None, "hello"))
        .await
        .expect("accept");
    let started = event(&a.run_id, "agent_started", json!({ "agent": "echo" }));
    store
        .append_events(&a.thread_id, vec![started])
        .await
        .expect("append");
    let error = json!({ "code": "STORAGE_UNAVAILABLE", "message": "lost" });
    let end = event(&a.run_id, "agent_completed", json!({ "error": error }));
    store.abandon(&a.thread_id, &a.run_id, "partial answer", end);
    assert!(store.has_abandoned());
    let deadline = tokio::time::Instant::now() + SWEEP_INTERVAL * 4;
    let replay = loop {
        let replay = store
            .events_after("alice", &a.thread_id, 0, 10)
            .await
            .expect("replay");
        if replay.len() == 2 {
            break replay;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not swept: {replay:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let v = parse(&replay[1].json);
    assert_eq!(v["type"], "agent_completed");
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"], error);
    assert_eq!(v["message"]["content"], "partial answer");
    // The sweep forgets the run right after its commit, which the replay may see first.
    while store.has_abandoned() {
        assert!(tokio::time::Instant::now() < deadline, "still abandoned");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let untouched = store
        .events_after("alice", &live.thread_id, 0, 10)
        .await
        .expect("replay");
    assert_eq!(
        untouched.len(),
        1,
        "the sweep closed a run nobody abandoned"
    );
    let late = store
        .append_events(
            &a.thread_id,
            vec![event(&a.run_id, "agent_thinking", json!({}))],
        )
        .await;
    assert!(matches!(late, Err(StoreError::RunNotActive)), "{late:?}");
}

/// Appends racing their run's finish: each append is either stored whole, before the
/// completion, or refused (`RunNotActive`) with nothing stored; each run has exactly one
/// completion, and nothing of a run follows it (on Postgres the append checks the run and
/// takes its seqs in one statement, so this is what its row locks must keep).
pub async fn appends_racing_their_finish_never_follow_it(db: &TestDb) {
    let store = db.open().await;
    let mut runs = Vec::new();
    for i in 0..8 {
        // Two runs per thread: a run's appends also race the other run's finish.
        let thread = runs
            .get(i - i % 2)
            .map(|a: &portcullis::store::Accepted| a.thread_id.clone());
        let accepted = store
            .accept_message(msg("alice", &format!("c{i}"), thread.as_deref(), "go"))
            .await
            .expect("accept");
        runs.push(accepted);
    }
    let mut tasks = Vec::new();
    for run in &runs {
        for appender in 0..3 {
            let (store, run) = (store.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                let mut stored = Vec::new();
                for batch in 0.. {
                    let events = (0..1 + batch % 3)
                        .map(|i| {
                            event(
                                &run.run_id,
                                "agent_thinking",
                                json!({ "text": format!("{appender}/{batch}/{i}") }),
                            )
                        })
                        .collect();
                    match store.append_events(&run.thread_id, events).await {
                        Ok(batch) => stored.extend(batch),
                        Err(StoreError::RunNotActive) => return stored,
                        Err(e) => panic!("append: {e}"),
                    }
                }
                unreachable!()
            }));
        }
        let (store, run) = (store.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let done = event(&run.run_id, "agent_completed", json!({}));
            let end = store.finish_run(&run.thread_id, &run.run_id, "ok", "done", done);
            vec![end.await.expect("finish")]
        }));
    }
    let mut reported: BTreeMap<(String, i64), String> = BTreeMap::new();
    for task in tasks {
        for ev in task.await.expect("task") {
            let thread = parse(&ev.json)["thread_id"]
                .as_str()
                .expect("thread")
                .to_string();
            reported.insert((thread, ev.seq), ev.json);
        }
    }
    let mut replayed = BTreeMap::new();
    for thread in runs.iter().step_by(2).map(|a| &a.thread_id) {
        let events = store
            .events_after("alice", thread, 0, 10_000)
            .await
            .expect("replay");
        let mut ended = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(ev.seq, i as i64 + 1, "seqs of {thread} are gap-free");
            let v = parse(&ev.json);
            assert!(
                !ended.contains(&ev.run_id),
                "{} after its completion",
                ev.json
            );
            if v["type"] == "agent_completed" {
                ended.push(ev.run_id.clone());
            }
            replayed.insert((thread.clone(), ev.seq), ev.json.clone());
        }
        assert_eq!(ended.len(), 2, "one completion per run of {thread}");
    }
    // What was reported stored is what is stored, and nothing else is.
    assert_eq!(reported, replayed);
}
