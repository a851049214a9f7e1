//! Several nodes on one Postgres database and the test Redis (`server.nodes = 2`, the
//! Redis event bus): in-process servers on port 0 (each with its own node id, as separate
//! processes have) and, where a node must die with `kill -9`, a process of the built
//! binary. A fresh database per test (`TestDb::postgres`).

mod leases;
mod limits;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use portcullis::config::load::LoadOptions;
use serde_json::Value;

use crate::ws::harness::{Client, Connect, FRAME_TIMEOUT, http_request, token};
use portcullis::wire::ClientMessage;

/// The test Redis (`PORTCULLIS_TEST_REDIS_URL`). Nodes of different tests share it, so
/// each test uses users of its own ([`fresh_user`]).
pub fn redis_url() -> String {
    std::env::var("PORTCULLIS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A user no other test (or earlier run of this one) has used: the bus channels and the
/// shared limits live in the shared Redis.
pub fn fresh_user() -> String {
    format!("u-{:016x}", rand::random::<u64>())
}

/// The lease the cluster tests give runs: short, so a dead node's runs close quickly.
pub const LEASE_MS: u64 = 2000;

/// The `test` environment on the Postgres database `db_url`, with `overrides`.
fn environment(db_url: &str, listen: &str, overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| env.insert(format!("PORTCULLIS_{k}"), v.to_string());
    set("SERVICES__DATABASE__KIND", "postgres");
    set("SERVICES__DATABASE__URL", db_url);
    set("SERVER__LISTEN", listen);
    set("SERVER__RUN_LEASE_MS", &LEASE_MS.to_string());
    // Two nodes, as `server.nodes` declares them: events cross nodes on the Redis bus.
    set("SERVER__NODES", "2");
    set("SERVICES__REDIS__KIND", "redis");
    set("SERVICES__REDIS__URL", &redis_url());
    set("COMPONENTS__EVENT_BUS__KIND", "redis");
    set("COMPONENTS__EVENT_BUS__NEEDS", "[\"redis\"]");
    for (k, v) in overrides {
        set(k, v);
    }
    env
}

/// A node of the cluster: an in-process server.
pub struct Node {
    pub server: Option<portcullis::server::Server>,
    pub addr: SocketAddr,
}

impl Node {
    /// Starts a node on `db_url` and waits until its store is connected.
    pub async fn start(db_url: &str) -> Node {
        Node::start_with(db_url, &[]).await
    }

    /// [`Node::start`] with more `PORTCULLIS_*` overrides (`("WEBSOCKET__…", "3")`).
    pub async fn start_with(db_url: &str, overrides: &[(&str, &str)]) -> Node {
        let env = environment(db_url, "127.0.0.1:0", overrides);
        let server = crate::support::serve(&LoadOptions::new("environments", env), "test").await;
        let addr = server.addr;
        let node = Node {
            server: Some(server),
            addr,
        };
        wait_ready(addr).await;
        node
    }

    /// Stops the node as SIGTERM does: runs drain, sockets close with 1001.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            tokio::time::timeout(FRAME_TIMEOUT, server.wait())
                .await
                .expect("the node stops");
        }
    }
}

/// A node that is a process of the built binary, killed with SIGKILL on drop.
pub struct ProcessNode {
    child: Child,
    pub addr: SocketAddr,
}

impl ProcessNode {
    /// Starts `portcullis serve --env test` on a free port and waits for `/ready`.
    pub async fn start(db_url: &str) -> ProcessNode {
        let port = crate::support::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let env = environment(db_url, &addr.to_string(), &[]);
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--env", "test", "--config-dir", "environments"])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let node = ProcessNode { child, addr };
        wait_ready(addr).await;
        node
    }

    /// `kill -9`: the process gets no chance to close anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/ready` answers 200 (the store is connected and migrated).
async fn wait_ready(addr: SocketAddr) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        // Only once the port accepts: the request helper fails the test on a refusal.
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let reply = http_request(addr, "GET", "/ready", &[]).await;
            if reply.status == 200 {
                return reply.json();
            }
        }
        assert!(
            started.elapsed() < FRAME_TIMEOUT * 3,
            "node on {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `user`'s socket on the node at `addr`, past `connection_established`.
pub async fn connect(addr: SocketAddr, user: &str) -> Client {
    let (mut c, _) = Connect::new(format!("ws://{addr}/websocket"))
        .bearer(&token(user, 600))
        .open()
        .await
        .expect("connect");
    let est = c.recv().await;
    assert_eq!(est["type"], "connection_established", "{est}");
    c
}

/// Every stored event of `thread` up to `last_seq`, replayed from the start, and then
/// nothing more. (A replay is served in pages by the socket's writer, so a `pong` may
/// overtake it: the replay's end is its last seq.)
pub async fn replay(c: &mut Client, thread: &str, last_seq: i64) -> Vec<Value> {
    c.send_msg(ClientMessage::resume(thread, 0)).await;
    let mut events: Vec<Value> = Vec::new();
    while events.last().and_then(|e| e["seq"].as_i64()) != Some(last_seq) {
        events.push(c.recv().await);
    }
    c.expect_silence(Duration::from_millis(300)).await;
    events
}

/// The next message of `kind` (of `run_id`, when given), skipping others: events of other
/// runs, which the bus delivers to every socket of the user.
pub async fn recv_until(c: &mut Client, kind: &str, run_id: Option<&str>, wait: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_within(left).await {
            Some(crate::ws::harness::Frame::Json(v))
                if v["type"] == kind && run_id.is_none_or(|r| v["run_id"] == r) =>
            {
                return v;
            }
            Some(crate::ws::harness::Frame::Json(_)) => continue,
            other => panic!("no `{kind}` within {wait:?}: {other:?}"),
        }
    }
}

/// Sends a ping and reads up to its pong, returning what came before it.
pub async fn until_pong(c: &mut Client) -> Vec<Value> {
    c.send_msg(ClientMessage::Ping {}).await;
    let mut before = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "pong" {
            return before;
        }
        before.push(v);
    }
}
