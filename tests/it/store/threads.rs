//! Store cases about threads and user messages: acks, idempotency, isolation. Each is
//! written once against [`Store`] and run on both databases by the macro in `store.rs`.

use std::time::Duration;

use portcullis::store::{Accepted, NewMessage, Store, StoreError};
use serde_json::json;
use tokio::sync::Barrier;

use super::harness::{TestDb, event, msg};

/// Lets wall-clock timestamps (millisecond precision) move on between two writes whose
/// order a test asserts. Real time is the point here, so `tokio::time::pause` cannot help.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(e @ StoreError::ThreadNotFound) => assert_eq!(e.code(), "THREAD_NOT_FOUND"),
        other => panic!("{what}: expected ThreadNotFound, got {other:?}"),
    }
}

pub async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.open().await;
    first.ping().await.expect("ping");
    let a = first
        .accept_message(msg("alice", "c1", None, "hi"))
        .await
        .expect("accept");
    // A second connect while the first is open re-runs the migrations: a no-op.
    let second = db.open().await;
    second.ping().await.expect("ping second");
    let threads = second.list_threads("alice").await.expect("list");
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].thread_id, a.thread_id);
    first.close().await;
    second.close().await;
    let third = db.open().await;
    assert_eq!(third.list_threads("alice").await.expect("list").len(), 1);
}

pub async fn new_thread_and_ack_ids(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "  What is\n the weather?  "))
        .await
        .expect("accept");
    assert!(!a.duplicate);
    assert!(a.thread_id.starts_with("t_"), "{a:?}");
    assert!(a.message_id.starts_with("m_"), "{a:?}");
    assert!(a.run_id.starts_with("r_"), "{a:?}");

    let threads = store.list_threads("alice").await.expect("list");
    assert_eq!(threads.len(), 1);
    let t = &threads[0];
    assert_eq!(t.thread_id, a.thread_id);
    assert_eq!(t.title, "What is the weather?");
    assert_eq!(t.last_seq, 0);
    chrono::DateTime::parse_from_rfc3339(&t.created_at).expect("created_at is RFC 3339");
    chrono::DateTime::parse_from_rfc3339(&t.updated_at).expect("updated_at is RFC 3339");

    let b = store
        .accept_message(msg("alice", "c2", Some(&a.thread_id), "and tomorrow?"))
        .await
        .expect("accept into thread");
    assert!(!b.duplicate);
    assert_eq!(b.thread_id, a.thread_id);
    assert_ne!(b.message_id, a.message_id);
    assert_ne!(b.run_id, a.run_id);

    let messages = store
        .thread_messages("alice", &a.thread_id)
        .await
        .expect("messages");
    let got: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m.message_id.as_str(),
                m.role.as_str(),
                m.content.as_str(),
                m.run_id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                a.message_id.as_str(),
                "user",
                "  What is\n the weather?  ",
                a.run_id.as_str()
            ),
            (
                b.message_id.as_str(),
                "user",
                "and tomorrow?",
                b.run_id.as_str()
            ),
        ]
    );

    let long = "x".repeat(200);
    let c = store
        .accept_message(msg("alice", "c3", None, &long))
        .await
        .expect("accept");
    let threads = store.list_threads("alice").await.expect("list");
    let title = &threads
        .iter()
        .find(|t| t.thread_id == c.thread_id)
        .expect("listed")
        .title;
    assert!(
        title.chars().count() <= 60 && title.ends_with('…'),
        "{title}"
    );
}

pub async fn thread_list_is_newest_first(db: &TestDb) {
    let store = db.open().await;
    let one = store
        .accept_message(msg("alice", "c1", None, "one"))
        .await
        .expect("accept");
    next_millisecond().await;
    let two = store
        .accept_message(msg("alice", "c2", None, "two"))
        .await
        .expect("accept");
    let ids = |list: Vec<portcullis::store::ThreadSummary>| -> Vec<String> {
        list.into_iter().map(|t| t.thread_id).collect()
    };
    assert_eq!(
        ids(store.list_threads("alice").await.expect("list")),
        vec![two.thread_id.clone(), one.thread_id.clone()]
    );
    // Activity on the older thread moves it to the top.
    next_millisecond().await;
    store
        .append_events(
            &one.thread_id,
            vec![event(&one.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("append");
    let list = store.list_threads("alice").await.expect("list");
    assert_eq!(list[0].last_seq, 1);
    assert_eq!(ids(list), vec![one.thread_id, two.thread_id]);
}

pub async fn repeated_client_id_is_idempotent(db: &TestDb) {
    let store = db.open().await;
    let first = store
        .accept_message(msg("alice", "same", None, "first"))
        .await
        .expect("accept");
    let again = store
        .accept_message(msg("alice", "same", None, "retry with other text"))
        .await
        .expect("repeat");
    let expected = Accepted {
        duplicate: true,
        ..first.clone()
    };
    assert_eq!(again, expected);
    let into_thread = store
        .accept_message(msg("alice", "same", Some(&first.thread_id), "again"))
        .await
        .expect("repeat naming the thread");
    assert_eq!(into_thread, expected);

    // Client ids are per user: bob's "same" is a new message.
    let bob = store
        .accept_message(msg("bob", "same", None, "bob's"))
        .await
        .expect("bob");
    assert!(!bob.duplicate);
    assert_ne!(bob.thread_id, first.thread_id);

    assert_eq!(store.list_threads("alice").await.expect("list").len(), 1);
    let messages = store
        .thread_messages("alice", &first.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content, "first");
}

/// Races `n` identical accepts and checks they all answer with one set of ids.
async fn race(store: &Store, n: usize, client_id: &str, thread_id: Option<String>) -> Accepted {
    let barrier = std::sync::Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (store, barrier) = (store.clone(), barrier.clone());
        let (client_id, thread_id) = (client_id.to_string(), thread_id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let content = format!("attempt {i}");
            store
                .accept_message(NewMessage {
                    user_id: "alice",
                    client_id: &client_id,
                    thread_id: thread_id.as_deref(),
                    content: &content,
                    agent: "echo",
                })
                .await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("accept"));
    }
    let fresh: Vec<_> = results.iter().filter(|a| !a.duplicate).collect();
    assert_eq!(
        fresh.len(),
        1,
        "exactly one caller creates the message: {results:?}"
    );
    let winner = fresh[0].clone();
    for a in &results {
        assert_eq!(
            (&a.thread_id, &a.message_id, &a.run_id),
            (&winner.thread_id, &winner.message_id, &winner.run_id)
        );
    }
    winner
}

pub async fn racing_client_ids_create_one_message(db: &TestDb) {
    let store = db.open().await;
    let winner = race(&store, 20, "racy", None).await;
    // The losers' new threads were rolled back with their messages.
    assert_eq!(store.list_threads("alice").await.expect("list").len(), 1);
    let messages = store
        .thread_messages("alice", &winner.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);

    let second = race(&store, 20, "racy-2", Some(winner.thread_id.clone())).await;
    assert_eq!(second.thread_id, winner.thread_id);
    let messages = store
        .thread_messages("alice", &winner.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 2);
    // One run per message: recovery closes exactly these two.
    assert_eq!(
        store
            .recover_interrupted_runs()
            .await
            .expect("recover")
            .len(),
        2
    );
}

pub async fn threads_are_isolated_between_users(db: &TestDb) {
    let store = db.open().await;
    let a = store
        .accept_message(msg("alice", "c1", None, "private"))
        .await
        .expect("accept");
    store
        .append_events(
            &a.thread_id,
            vec![event(&a.run_id, "agent_started", json!({}))],
        )
        .await
        .expect("append");

    let t = Some(a.thread_id.as_str());
    assert_not_found(
        store.accept_message(msg("bob", "b1", t, "hi")).await,
        "accept, other's",
    );
    assert_not_found(
        store
            .accept_message(msg("bob", "b1", Some("t_00000000000000000000"), "hi"))
            .await,
        "accept, missing",
    );
    assert_not_found(
        store.thread_messages("bob", &a.thread_id).await,
        "messages, other's",
    );
    assert_not_found(
        store.thread_messages("bob", "t_nope").await,
        "messages, missing",
    );
    assert_not_found(
        store.events_after("bob", &a.thread_id, 0, 100).await,
        "events, other's",
    );
    assert_not_found(
        store.events_after("bob", "t_nope", 0, 100).await,
        "events, missing",
    );
    assert!(store.list_threads("bob").await.expect("list").is_empty());

    // The refused attempt stored nothing: alice's thread is unchanged and bob's client
    // id was not consumed.
    let messages = store
        .thread_messages("alice", &a.thread_id)
        .await
        .expect("messages");
    assert_eq!(messages.len(), 1);
    let b = store
        .accept_message(msg("bob", "b1", None, "own"))
        .await
        .expect("bob");
    assert!(!b.duplicate);
    assert_eq!(
        store
            .thread_owner(&a.thread_id)
            .await
            .expect("owner")
            .as_deref(),
        Some("alice")
    );
    assert_eq!(store.thread_owner("t_nope").await.expect("owner"), None);
}
