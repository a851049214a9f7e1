//! Nodes for the multi-node tests: a config directory written per test (the shipped
//! `base.toml` and `test.toml`, with Postgres, the test's Redis and the Redis event bus),
//! a throwaway Redis server, and nodes started from it that share the store.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::config::load::LoadOptions;
use portcullis::server::Server;
use std::collections::BTreeMap;

use serde_json::Value;
use tempfile::TempDir;

use crate::store::harness::TestDb;
use crate::ws::harness::{
    Client, Connect, FRAME_TIMEOUT, HttpReply, http_request, last_seq, token,
};

/// A `redis-server` of the test's own, on a port it keeps across restarts.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl Redis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: crate::support::free_port(),
            child: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let client = deadpool_redis::redis::Client::open(self.url()).unwrap();
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && deadpool_redis::redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < FRAME_TIMEOUT,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store and a Redis URL shared by the nodes of one test.
pub struct Cluster {
    _db: TestDb,
    config: TempDir,
}

impl Cluster {
    /// A fresh Postgres database and a config directory whose `test` environment uses it,
    /// `redis_url` and the Redis event bus, for `server.nodes = 2`.
    pub async fn new(redis_url: &str) -> Cluster {
        let db = TestDb::postgres().await;
        let config = tempfile::tempdir().expect("temp dir");
        let base = std::fs::read_to_string("environments/base.toml").unwrap();
        std::fs::write(config.path().join("base.toml"), base).unwrap();
        let test = std::fs::read_to_string("environments/test.toml")
            .unwrap()
            .replace(
                "shutdown_grace_ms = 2000",
                "shutdown_grace_ms = 2000\nnodes = 2",
            )
            .replace("kind = \"sqlite\"", "kind = \"postgres\"")
            .replace("sqlite://portcullis-test.db", &db.url);
        let test = format!(
            "{test}\n[services.redis]\nkind = \"redis\"\nurl = \"{redis_url}\"\nconnect_timeout_ms = 500\n\n\
             [components.event_bus]\nkind = \"redis\"\nscope = \"process\"\nneeds = [\"redis\"]\n"
        );
        std::fs::write(config.path().join("test.toml"), test).unwrap();
        Cluster { _db: db, config }
    }

    /// Starts a node and waits until its store is connected.
    pub async fn node(&self) -> Node {
        let data = tempfile::tempdir().expect("temp dir");
        let opts = LoadOptions::new(self.config.path().to_str().unwrap(), Default::default());
        let server = crate::support::serve(&opts, "test").await;
        crate::support::store_connected(&server).await;
        Node {
            addr: server.addr,
            server,
            _data: data,
        }
    }

    /// Starts a node and waits until its Redis subscription is up too.
    pub async fn subscribed_node(&self) -> Node {
        let node = self.node().await;
        node.wait_bus(true).await;
        node
    }
}

/// One running node.
pub struct Node {
    pub server: Server,
    pub addr: SocketAddr,
    _data: TempDir,
}

impl Node {
    /// Connects `user` and reads `connection_established`.
    pub async fn user(&self, user: &str) -> Client {
        let (mut c, _) = Connect::new(format!("ws://{}/websocket", self.addr))
            .bearer(&token(user, 600))
            .open()
            .await
            .expect("connect");
        let est = c.recv().await;
        assert_eq!(est["type"], "connection_established", "{est}");
        c
    }

    /// Waits until the bus's subscription is up (`true`) or down.
    pub async fn wait_bus(&self, up: bool) {
        let started = tokio::time::Instant::now();
        loop {
            let status = self.server.app.bus.status().expect("a redis bus");
            if status.subscribed == up {
                return;
            }
            assert!(
                started.elapsed() < FRAME_TIMEOUT,
                "the bus subscription never became {up}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> HttpReply {
        http_request(self.addr, "GET", path, &[]).await
    }

    /// `/ready`: its status code and JSON body.
    pub async fn ready(&self) -> (u16, Value) {
        let r = self.get("/ready").await;
        (r.status, r.json())
    }
}

/// Events (with a `seq`) of `thread` a client reads until `agent_completed` of `run_id`,
/// skipping anything else (acks, pongs); fails on a timeout.
pub async fn events_until_completed(c: &mut Client, run_id: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = c.recv().await;
        if v.get("seq").is_none() {
            continue;
        }
        let done = v["type"] == "agent_completed" && v["run_id"] == run_id;
        got.push(v);
        if done {
            return got;
        }
    }
}

/// The seqs events cover (merged deltas cover `seq..=seq_to`, docs/PROTOCOL.md).
pub fn seqs(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .flat_map(|e| e["seq"].as_i64().unwrap()..=last_seq(e))
        .collect()
}

/// Asserts the events cover consecutive seqs from `first`, each once; returns how many.
pub fn assert_consecutive(events: &[Value], first: i64) -> i64 {
    let got = seqs(events);
    let want: Vec<i64> = (first..first + got.len() as i64).collect();
    assert_eq!(got, want, "every event once, in seq order");
    got.len() as i64
}

/// What a socket saw, whatever deltas its queue merged: the other events as sent, each
/// run's answer text, and the seqs covered.
pub fn view(events: &[Value]) -> (Vec<Value>, BTreeMap<String, String>, Vec<i64>) {
    let mut others = Vec::new();
    let mut answers: BTreeMap<String, String> = BTreeMap::new();
    for e in events {
        if e["type"] == "agent_response" {
            let run = e["run_id"].as_str().unwrap().to_string();
            answers
                .entry(run)
                .or_default()
                .push_str(e["delta"].as_str().unwrap());
        } else {
            others.push(e.clone());
        }
    }
    (others, answers, seqs(events))
}

/// Asserts two sockets saw the same events.
pub fn assert_same(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(view(got), view(want), "{what}");
}
