//! A database that refuses connections, and data no database may store: what clients
//! are told, over the socket and HTTP.

use serde_json::Value;

use super::{Answer, Operator, bearer, exchange, server_on, thread_messages};
use crate::store::harness::TestDb;
use crate::ws::harness::TestServer;

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
