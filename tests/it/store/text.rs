//! Text with U+0000 (NUL), which Postgres refuses and SQLite would store: both databases
//! answer alike (`src/store/text.rs` decides before either sees it).

use portcullis::store::StoreError;
use serde_json::json;

use super::harness::{TestDb, event, msg, parse};

/// A client's text with U+0000 is refused as bad data, not retryable, and nothing is
/// stored; ids with U+0000 name nothing.
pub async fn nul_in_client_text_is_refused_and_stores_nothing(db: &TestDb) {
    let store = db.open().await;
    let kept = store
        .accept_message(msg("alice", "c0", None, "hello"))
        .await
        .expect("accept");
    let cases = [
        msg("alice", "c1", None, "a\0b"),
        msg("alice", "c\0", None, "hello"),
        msg("alice", "c2", Some(&kept.thread_id), "\0"),
        msg("al\0ice", "c3", None, "hello"),
    ];
    for (i, new) in cases.into_iter().enumerate() {
        let refused = store.accept_message(new).await;
        match &refused {
            Err(e @ StoreError::BadData(why)) => {
                assert_eq!((e.code(), e.is_retryable()), ("BAD_MESSAGE", false));
                assert!(why.contains("U+0000"), "{why}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    let unknown = store
        .accept_message(msg("alice", "c4", Some("t_\0"), "hello"))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::ThreadNotFound)),
        "{unknown:?}"
    );
    let threads = store.list_threads("alice").await.expect("threads");
    assert_eq!(threads.len(), 1, "{threads:?}");
    let messages = store
        .thread_messages("alice", &kept.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        store
            .list_threads("al\0ice")
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.thread_owner("t_\0").await.expect("owner"), None);
    let replay = store.events_after("alice", "t_\0", 0, 10).await;
    assert!(
        matches!(replay, Err(StoreError::ThreadNotFound)),
        "{replay:?}"
    );
    // Ids with U+0000 in writes name no thread or run, as on either database.
    let thought = |run: &str| vec![event(run, "agent_thinking", json!({ "text": "x" }))];
    let appended = store.append_events("t_\0", thought(&kept.run_id)).await;
    assert!(
        matches!(appended, Err(StoreError::ThreadNotFound)),
        "{appended:?}"
    );
    let appended = store.append_events(&kept.thread_id, thought("r_\0")).await;
    assert!(
        matches!(appended, Err(StoreError::RunNotActive)),
        "{appended:?}"
    );
    for (thread, run) in [("t_\0", kept.run_id.as_str()), (&kept.thread_id, "r_\0")] {
        let finished = store
            .finish_run(thread, run, "ok", "", event(run, "x", json!({})))
            .await;
        assert!(
            matches!(finished, Err(StoreError::RunNotActive)),
            "{finished:?}"
        );
    }
}

/// U+0000 in an answer the server produced is stored as U+FFFD, in the assistant message
/// and in the completion alike; U+0000 inside an event body is JSON's `\u0000`.
pub async fn nul_in_an_answer_is_stored_as_a_replacement_character(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "hello"))
        .await
        .expect("accept");
    let delta = event(&a.run_id, "agent_response", json!({ "delta": "x\u{0}y" }));
    let stored = store
        .append_events(&a.thread_id, vec![delta])
        .await
        .expect("a delta with U+0000");
    assert!(stored[0].json.contains(r"x\u0000y"), "{}", stored[0].json);
    let done = store
        .finish_run(
            &a.thread_id,
            &a.run_id,
            "ok",
            "x\0y",
            event(&a.run_id, "x", json!({})),
        )
        .await
        .expect("finish");
    assert_eq!(parse(&done.json)["message"]["content"], "x\u{FFFD}y");
    let messages = store
        .thread_messages("alice", &a.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages[1].content, "x\u{FFFD}y");
    let replay = store
        .events_after("alice", &a.thread_id, 0, 10)
        .await
        .expect("replay");
    assert_eq!(replay, [stored[0].clone(), done]);
}
