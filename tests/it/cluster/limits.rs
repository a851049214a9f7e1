//! Limits shared by nodes: the per-user message rate and connection cap held in Redis
//! (`[components.rate_limiter] kind = "redis"`), and the local fallback, reported in
//! `/metrics`, while Redis does not answer.

use std::net::SocketAddr;

use serde_json::Value;

use super::*;
use crate::store::harness::TestDb;
use crate::ws::harness::{Client, Connect, token};

/// Overrides giving nodes shared limits of 3 messages per minute and 2 open sockets per
/// user on Redis at `url`.
fn shared_limit(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WEBSOCKET__MESSAGES_PER_MINUTE", "3".into()),
        ("WEBSOCKET__MAX_CONNECTIONS_PER_USER", "2".into()),
        // One Redis for the bus and the limits (a down one takes both away).
        ("SERVICES__REDIS__URL", url.to_string()),
        ("SERVICES__REDIS__REQUIRED", "false".into()),
        ("SERVICES__REDIS__CONNECT_TIMEOUT_MS", "300".into()),
        ("COMPONENTS__RATE_LIMITER__KIND", "redis".into()),
        ("COMPONENTS__RATE_LIMITER__NEEDS", "[\"redis\"]".into()),
    ]
}

async fn start(db: &TestDb, overrides: &[(&'static str, String)]) -> Node {
    let pairs: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Node::start_with(&db.url, &pairs).await
}

/// Sends a message; `true` when it was acked (its run is then read to the end), `false`
/// when it was refused as `RATE_LIMITED`. Events of the user's runs on the other node,
/// which the bus brings, are skipped.
async fn send(c: &mut Client, id: &str) -> bool {
    c.ask(id, "hello", None).await;
    loop {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("ack") if v["id"] == id => {
                let run = v["run_id"].as_str().unwrap();
                recv_until(c, "agent_completed", Some(run), FRAME_TIMEOUT).await;
                return true;
            }
            Some("error") => {
                assert_eq!(v["code"], "RATE_LIMITED", "{v}");
                assert_eq!(v["ref_id"], id, "{v}");
                assert_eq!(v["retryable"], true, "{v}");
                return false;
            }
            _ => continue,
        }
    }
}

/// The value of the metric line starting with `name` in `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let reply = http_request(addr, "GET", "/metrics", &[]).await;
    assert_eq!(reply.status, 200);
    reply
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", reply.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_rate_holds_across_nodes() {
    let db = TestDb::postgres().await;
    let overrides = shared_limit(&redis_url());
    let a = start(&db, &overrides).await;
    let b = start(&db, &overrides).await;
    let user = fresh_user();
    let mut on_a = connect(a.addr, &user).await;
    let mut on_b = connect(b.addr, &user).await;
    assert!(send(&mut on_a, "m1").await);
    assert!(send(&mut on_a, "m2").await);
    assert!(send(&mut on_b, "m3").await, "the third of 3 per minute");
    // Node B has seen one message of this user: only the shared bucket refuses this.
    assert!(
        !send(&mut on_b, "m4").await,
        "over 3 per minute across the nodes"
    );
    assert!(!send(&mut on_a, "m5").await);
    assert_eq!(metric(a.addr, "portcullis_rate_limiter_shared").await, 1.0);
    assert_eq!(
        metric(b.addr, "portcullis_rate_limiter_fallbacks_total").await,
        0.0
    );
    // Another user has their own bucket.
    let mut other = connect(b.addr, &fresh_user()).await;
    assert!(send(&mut other, "m1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_node_keeps_its_local_limit_and_says_so() {
    let db = TestDb::postgres().await;
    // A port nothing listens on: every Redis call is refused.
    let port = crate::support::free_port();
    let a = start(&db, &shared_limit(&format!("redis://127.0.0.1:{port}"))).await;
    let mut c = connect(a.addr, &fresh_user()).await;
    for id in ["m1", "m2", "m3"] {
        assert!(send(&mut c, id).await, "{id} is within the local limit");
    }
    assert!(!send(&mut c, "m4").await, "the local limit still holds");
    assert_eq!(metric(a.addr, "portcullis_rate_limiter_shared").await, 0.0);
    let fallbacks = metric(a.addr, "portcullis_rate_limiter_fallbacks_total").await;
    assert_eq!(
        fallbacks, 5.0,
        "the socket's place and every message were decided locally"
    );
}

/// A socket of `user` that the node refuses after authentication: the error and close
/// code it gets.
async fn refused(addr: SocketAddr, user: &str) -> (Value, u16) {
    let (mut c, _) = Connect::new(format!("ws://{addr}/websocket"))
        .bearer(&token(user, 600))
        .open()
        .await
        .expect("the upgrade itself succeeds");
    let (seen, code) = c.until_close().await;
    assert_eq!(seen.len(), 1, "one error, then the close: {seen:?}");
    (seen[0].clone(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_per_user_holds_across_nodes() {
    let db = TestDb::postgres().await;
    let overrides = shared_limit(&redis_url());
    let a = start(&db, &overrides).await;
    let b = start(&db, &overrides).await;
    let user = fresh_user();
    let first = connect(a.addr, &user).await;
    let _second = connect(b.addr, &user).await;
    // B holds one socket of this user: only the count across nodes refuses a second.
    let (error, code) = refused(b.addr, &user).await;
    assert_eq!(code, 4429);
    assert_eq!(error["code"], "USER_CONNECTION_LIMIT", "{error}");
    assert_eq!(error["retryable"], true, "{error}");
    // Another user is not affected.
    let _other = connect(b.addr, &fresh_user()).await;
    // Closing the socket on A frees its place for a socket on B.
    first.close().await;
    let started = tokio::time::Instant::now();
    loop {
        let (mut c, _) = Connect::new(format!("ws://{}/websocket", b.addr))
            .bearer(&token(&user, 600))
            .open()
            .await
            .expect("upgrade");
        if c.recv().await["type"] == "connection_established" {
            break;
        }
        assert!(
            started.elapsed() < FRAME_TIMEOUT,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_connection_cap_holds_per_node() {
    let db = TestDb::postgres().await;
    let port = crate::support::free_port();
    let a = start(&db, &shared_limit(&format!("redis://127.0.0.1:{port}"))).await;
    let user = fresh_user();
    let _one = connect(a.addr, &user).await;
    let _two = connect(a.addr, &user).await;
    let (error, code) = refused(a.addr, &user).await;
    assert_eq!(
        (code, error["code"].as_str()),
        (4429, Some("USER_CONNECTION_LIMIT"))
    );
    assert_eq!(metric(a.addr, "portcullis_rate_limiter_shared").await, 0.0);
    assert_eq!(
        metric(a.addr, "portcullis_rate_limiter_fallbacks_total").await,
        3.0,
        "three sockets were counted locally"
    );
}
