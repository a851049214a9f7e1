//! Throwaway databases for the store tests: a SQLite file in a temp dir, or a fresh
//! Postgres database that is dropped again when the test ends (even when it panics).

use std::time::Duration;

use portcullis::store::{NewMessage, Store};
use portcullis::wire::{EventBody, EventRecord};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tempfile::TempDir;

/// Default admin URL of the local test server (trust auth).
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Pool timeout for tests: long enough for a loaded CI machine.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A database for one test.
pub struct TestDb {
    pub url: String,
    /// Kept so the directory outlives the test; `None` for Postgres.
    dir: Option<TempDir>,
    /// `(admin URL, database name)` to drop on `Drop`; `None` for SQLite.
    postgres: Option<(String, String)>,
}

fn admin_url() -> String {
    std::env::var("PORTCULLIS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// `base` with its database name replaced by `name` (query string kept).
fn with_database(base: &str, name: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (base, None),
    };
    let after_scheme = main.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = main[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(main.len());
    let mut url = format!("{}/{name}", &main[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

async fn admin_connection(admin: &str) -> PgConnection {
    PgConnection::connect(admin).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach the test Postgres server ({e}); start it on 127.0.0.1:5432 \
             or set PORTCULLIS_TEST_POSTGRES_URL"
        )
    })
}

impl TestDb {
    /// A SQLite file in a directory that does not exist yet (the store must create it).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested").join("store.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            dir: Some(dir),
            postgres: None,
        }
    }

    /// A new, empty Postgres database.
    pub async fn postgres() -> Self {
        let admin = admin_url();
        let mut conn = admin_connection(&admin).await;
        let name = format!("portcullis_t_{:016x}", rand::random::<u64>());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE on the test server");
        conn.close().await.expect("close admin connection");
        Self {
            url: with_database(&admin, &name),
            dir: None,
            postgres: Some((admin, name)),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.dir.is_some()
    }

    /// A connection to the server's admin database and this database's name, to act on it
    /// as an operator (or a failover) would: terminate its backends, refuse connections.
    /// Postgres only.
    pub async fn operator(&self) -> (PgConnection, String) {
        let (admin, name) = self.postgres.as_ref().expect("a Postgres test database");
        (admin_connection(admin).await, name.clone())
    }

    /// Connects and migrates.
    pub async fn open(&self) -> Store {
        Store::connect(&self.url, 5, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("connect to the {} test store: {e}", self.kind()))
    }

    fn kind(&self) -> &'static str {
        if self.is_sqlite() {
            "sqlite"
        } else {
            "postgres"
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // thread with its own runtime does the async cleanup. FORCE ends pool connections
        // the test left open.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async move {
                let mut conn = admin_connection(&admin).await;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
                    eprintln!("could not drop test database {name}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A user message with the default agent.
pub fn msg<'a>(
    user_id: &'a str,
    client_id: &'a str,
    thread_id: Option<&'a str>,
    content: &'a str,
) -> NewMessage<'a> {
    NewMessage {
        user_id,
        client_id,
        thread_id,
        content,
        agent: "echo",
    }
}

/// An event of `kind` for `run_id` with extra fields from a JSON object literal.
pub fn event(run_id: &str, kind: &str, extra: Value) -> EventRecord {
    let mut body = match extra {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("type".into(), Value::from(kind));
    EventRecord {
        run_id: run_id.to_string(),
        body: EventBody::Map(body),
    }
}

/// Parses a stored event's JSON text.
pub fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("stored event is not JSON ({e}): {json}"))
}

#[test]
fn database_name_is_replaced() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
