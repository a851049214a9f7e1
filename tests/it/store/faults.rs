//! Storage faults against a real Postgres, over the store API and over a real server:
//! backends terminated during runs (`pg_terminate_backend`, as an operator or a failover
//! does), a database refusing connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`),
//! and data the database refuses. What must hold: no `agent_completed` `ok` without its
//! stored row; every stored `agent_started` gets its `agent_completed` (after the
//! store's sweep); failures that may pass say `STORE_UNAVAILABLE` (retryable, 503 over
//! HTTP), bad data `BAD_MESSAGE` (not retryable).

use std::time::Duration;

use portcullis::store::{Store, StoreError};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::harness::{TestDb, msg};
use crate::ws::harness::{Client, FRAME_TIMEOUT, HttpReply, TestServer, token};

mod refused;
mod runs;

/// The test database as an operator sees it.
pub struct Operator {
    conn: PgConnection,
    name: String,
}

impl Operator {
    pub async fn of(db: &TestDb) -> Operator {
        let (conn, name) = db.operator().await;
        Operator { conn, name }
    }

    /// Terminates every backend of the test database; returns how many.
    pub async fn terminate_backends(&mut self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_one(&mut self.conn)
        .await
        .expect("pg_terminate_backend")
    }

    pub async fn allow_connections(&mut self, allow: bool) {
        // Audited: the name is the harness's `portcullis_t_<hex>`.
        let sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS {allow}", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .expect("ALTER DATABASE");
    }
}

/// A server of the `test` environment on the Postgres test database.
pub async fn server_on(db: &TestDb) -> TestServer {
    TestServer::start(&[
        ("SERVICES__DATABASE__KIND", "postgres"),
        ("SERVICES__DATABASE__URL", &db.url),
        ("SERVICES__DATABASE__CONNECT_TIMEOUT_MS", "1000"),
    ])
    .await
}

/// What the server answered to one `user_message`.
#[derive(Debug)]
pub enum Answer {
    /// An `error` answering it (`ref_id` is its id).
    Refused(Value),
    /// Its ack, then its run's events up to and including `agent_completed`.
    Ran { ack: Value, events: Vec<Value> },
}

/// Sends a message and reads what answers it.
pub async fn exchange(c: &mut Client, id: &str, content: &str, thread: Option<&str>) -> Answer {
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

pub fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user, 600))
}

pub async fn thread_messages(s: &TestServer, user: &str, thread: &str) -> HttpReply {
    let path = format!("/api/threads/{thread}/messages");
    s.http("GET", &path, &[("Authorization", &bearer(user))])
        .await
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
