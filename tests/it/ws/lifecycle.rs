//! A connection's life beyond single messages: token expiry and refresh while connected,
//! graceful shutdown with a run in flight, and readiness.

use std::time::Duration;

use super::harness::*;
use portcullis::wire::ClientMessage;

const NO_LEEWAY: (&str, &str) = ("AUTH__JWT__LEEWAY_S", "0");

/// Connects `user` with a token that expires `ttl_s` seconds from now.
async fn short_lived(s: &TestServer, user: &str, ttl_s: i64) -> (Client, i64) {
    let c = claims(user, ttl_s);
    let (mut client, _) = s.connect().bearer(&sign(&c)).open().await.unwrap();
    client.recv_type("connection_established").await;
    (client, c["exp"].as_i64().unwrap())
}

#[tokio::test]
async fn an_expiring_token_is_warned_about_then_closes_4401() {
    // No leeway, so the close is due at `exp` itself.
    let s = TestServer::start(&[NO_LEEWAY]).await;
    let (mut c, exp) = short_lived(&s, "alice", 3).await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4401, "{msgs:?}");
    assert_eq!(types(&msgs), ["token_expiring", "error"], "{msgs:?}");
    let at = chrono::DateTime::parse_from_rfc3339(msgs[0]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(at.timestamp(), exp);
    assert_eq!(msgs[1]["code"], "TOKEN_EXPIRED");
    assert!(
        chrono::Utc::now().timestamp() >= exp,
        "not closed before exp"
    );
}

#[tokio::test]
async fn refreshing_with_the_same_subject_keeps_the_connection() {
    // No leeway: without the refresh the close would be due at `exp`.
    let s = TestServer::start(&[NO_LEEWAY]).await;
    let (mut c, exp) = short_lived(&s, "alice", 3).await;
    c.recv_type("token_expiring").await;
    let fresh = claims("alice", 600);
    c.send_msg(ClientMessage::auth(&sign(&fresh))).await;
    let refreshed = c.recv_type("auth_refreshed").await;
    let new_exp =
        chrono::DateTime::parse_from_rfc3339(refreshed["token_expires_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(new_exp.timestamp(), fresh["exp"].as_i64().unwrap());
    // Past the old expiry (plus a margin) nothing arrives, and the connection answers.
    let left = exp - chrono::Utc::now().timestamp() + 1;
    c.expect_silence(Duration::from_secs(left.max(0) as u64))
        .await;
    c.ping_pong().await;
}

#[tokio::test]
async fn refreshing_with_another_subject_closes_4403() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    c.send_msg(ClientMessage::auth(&token("bob", 600))).await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4403, "{msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["code"], "FORBIDDEN");
}

#[tokio::test]
async fn an_invalid_refresh_is_an_error_and_the_connection_stays() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    c.send_msg(ClientMessage::auth(&token("alice", -60))).await;
    assert_eq!(c.recv_type("error").await["code"], "TOKEN_EXPIRED");
    c.ping_pong().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_runs_then_closes_1001() {
    let mut s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "[[slow:50]] what is 2+3?", None).await;
    let started = c.recv_type("agent_started").await;
    let server = s.server.take().unwrap();
    server.shutdown();
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1001, "{msgs:?}");
    let done = msgs.last().expect("the run's remaining events");
    assert_eq!(done["type"], "agent_completed", "{msgs:?}");
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["run_id"], ack["run_id"]);
    let mut seq = started["seq"].as_i64().unwrap();
    for m in &msgs {
        seq += 1;
        assert_eq!(m["seq"].as_i64(), Some(seq), "{m}");
    }
    tokio::time::timeout(FRAME_TIMEOUT, server.wait())
        .await
        .expect("the server stops after draining");
}

#[tokio::test]
async fn ready_and_health_answer_200() {
    let s = TestServer::start(&[]).await;
    let ready = s.http("GET", "/ready", &[]).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    let health = s.http("GET", "/health", &[]).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped() {
    let s = TestServer::start(&[
        ("WEBSOCKET__HEARTBEAT_MS", "1000"),
        ("WEBSOCKET__PONG_TIMEOUT_MS", "500"),
    ])
    .await;
    let app = s.app().clone();
    // Reading nothing means answering no ping: the client looks dead.
    let ws = s.user("alice").await.into_inner();
    assert_eq!(app.bus.connections_of("alice"), 1);
    let started = tokio::time::Instant::now();
    while app.bus.connections_of("alice") > 0 {
        assert!(
            started.elapsed() < FRAME_TIMEOUT,
            "the session outlived its dead client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The close frame was sent before the socket was dropped.
    let (_, code) = Client::from_stream(ws).until_close().await;
    assert_eq!(
        code, 1002,
        "a missed pong is a protocol error (docs/PROTOCOL.md)"
    );
}

#[tokio::test]
async fn while_draining_new_messages_are_refused_and_the_run_still_finishes() {
    let mut s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "[[slow:50]] what is 2+3?", None).await;
    c.recv_type("agent_started").await;
    let app = s.app().clone();
    let server = s.server.take().unwrap();
    server.shutdown();
    let started = tokio::time::Instant::now();
    while !app.is_draining() {
        assert!(started.elapsed() < FRAME_TIMEOUT, "never started draining");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.ask("m2", "hello", None).await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1001, "{msgs:?}");
    let refused: Vec<_> = msgs.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(refused.len(), 1, "{msgs:?}");
    assert_eq!(refused[0]["code"], "SHUTTING_DOWN");
    assert_eq!(refused[0]["ref_id"], "m2");
    assert_eq!(refused[0]["retryable"], true);
    assert!(msgs.iter().all(|m| m["type"] != "ack"), "{msgs:?}");
    let done = msgs.last().unwrap();
    assert_eq!(done["type"], "agent_completed", "{msgs:?}");
    assert_eq!(done["run_id"], ack["run_id"]);
    tokio::time::timeout(FRAME_TIMEOUT, server.wait())
        .await
        .expect("the server stops after draining");
}

#[tokio::test]
async fn a_run_outliving_the_grace_period_is_completed_as_cancelled_before_1001() {
    let mut s = TestServer::start(&[("SERVER__SHUTDOWN_GRACE_MS", "100")]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "[[slow:300]] what is 2+3?", None).await;
    c.recv_type("agent_started").await;
    let server = s.server.take().unwrap();
    server.shutdown();
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1001, "{msgs:?}");
    let done = msgs.last().expect("the run's completion");
    assert_eq!(done["type"], "agent_completed", "{msgs:?}");
    assert_eq!(done["run_id"], ack["run_id"]);
    assert_eq!(done["status"], "cancelled", "{done}");
    tokio::time::timeout(FRAME_TIMEOUT, server.wait())
        .await
        .expect("the server stops after draining");
}

/// The leeway that let a token in also keeps it in: a token accepted up to `leeway_s`
/// after its `exp` is not declared expired the moment the connection opens.
#[tokio::test]
async fn a_token_accepted_within_the_leeway_is_not_expired_at_once() {
    // A leeway of 4 s with a token expired 1 s ago leaves 3 s for the handshake, so a
    // loaded CI machine cannot push the handshake itself past the leeway.
    let s = TestServer::start(&[("AUTH__JWT__LEEWAY_S", "4")]).await;
    // Expired one second ago: inside the four-second leeway.
    let (mut c, exp) = short_lived(&s, "alice", -1).await;
    // Warned at once (the token is past its exp), but not closed.
    assert_eq!(
        c.recv_type("token_expiring").await["type"],
        "token_expiring"
    );
    c.ping_pong().await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4401, "{msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["code"], "TOKEN_EXPIRED");
    assert!(
        chrono::Utc::now().timestamp() >= exp + 4,
        "closed before exp + leeway"
    );
}

#[tokio::test]
async fn without_a_store_ready_is_503_and_sockets_are_told_to_retry() {
    // A database path that cannot be created: the store never connects.
    let unreachable = (
        "SERVICES__DATABASE__URL",
        "sqlite:///proc/portcullis/none.db",
    );
    let s = TestServer::start_unready(&[unreachable]).await;
    let ready = s.http("GET", "/ready", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let (mut c, _) = s
        .connect()
        .bearer(&token("alice", 600))
        .open()
        .await
        .unwrap();
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1013, "{msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["code"], "STORE_UNAVAILABLE");
    assert_eq!(msgs[0]["retryable"], true);

    let s = TestServer::start_unready(&[unreachable, ("AUTH__REJECT_AT", "handshake")]).await;
    let reply = s.connect().bearer(&token("alice", 600)).refused().await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error_code"], "STORE_UNAVAILABLE");
    assert!(reply.json()["message"].is_string());
}
