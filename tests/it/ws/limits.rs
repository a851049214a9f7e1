//! Limits and bad input: slow consumers (4509), oversize messages (1009), malformed
//! messages and binary frames (an `error`, connection kept), the per-user rate limit.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::harness::*;

#[tokio::test]
async fn bad_messages_get_an_error_and_the_connection_stays_open() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let cases: [(Message, &str); 6] = [
        (Message::text("not json"), "BAD_JSON"),
        (Message::text(r#"{"type":"nope"}"#), "UNKNOWN_TYPE"),
        (Message::text(r#"{"type":"user_message"}"#), "BAD_MESSAGE"),
        (Message::text(r#"{"no_type":1}"#), "BAD_MESSAGE"),
        (Message::text("[1,2,3]"), "BAD_MESSAGE"),
        (Message::binary(vec![1u8, 2, 3]), "UNSUPPORTED_FRAME"),
    ];
    for (msg, code) in cases {
        let shown = format!("{msg:?}");
        c.send_raw(msg).await;
        let err = c.recv_type("error").await;
        assert_eq!(err["code"], code, "{shown}: {err}");
        assert_eq!(err["retryable"], false, "{err}");
        c.ping_pong().await;
    }
    // Field-level mistakes name the client message they answer.
    c.ask("", "hello", None).await;
    assert_eq!(c.recv_type("error").await["code"], "BAD_MESSAGE");
    c.ask("m1", "   ", None).await;
    let err = c.recv_type("error").await;
    assert_eq!(
        (&err["code"], &err["ref_id"]),
        (&json!("BAD_MESSAGE"), &json!("m1"))
    );
    c.send(json!({ "type": "user_message", "id": "m2", "content": "hi", "agent": "nobody" }))
        .await;
    assert_eq!(c.recv_type("error").await["code"], "UNKNOWN_AGENT");
    c.ping_pong().await;
}

#[tokio::test]
async fn oversize_messages_close_1009() {
    let s = TestServer::start(&[("WEBSOCKET__MAX_MESSAGE_BYTES", "1024")]).await;
    // Over the limit, but small enough to be read: an error, then 1009.
    let mut c = s.user("alice").await;
    let content = "x".repeat(1100);
    c.ask("m1", &content, None).await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1009, "{msgs:?}");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["code"], "MESSAGE_TOO_LARGE");
    // Far over the limit: the frame is not even read whole, still 1009.
    let mut c = s.user("alice").await;
    c.send_text(&"y".repeat(64 * 1024)).await;
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 1009, "{msgs:?}");
    // Exactly at the limit is fine.
    let mut c = s.user("alice").await;
    let frame = json!({ "type": "ping" }).to_string();
    let padded = format!("{}{}", " ".repeat(1024 - frame.len()), frame);
    assert_eq!(padded.len(), 1024);
    c.send_text(&padded).await;
    c.recv_type("pong").await;
}

#[tokio::test]
async fn rate_limit_refuses_with_rate_limited_and_keeps_the_connection() {
    let s = TestServer::start(&[("WEBSOCKET__MESSAGES_PER_MINUTE", "3")]).await;
    let mut c = s.user("alice").await;
    for i in 0..4 {
        c.ask(&format!("m{i}"), "hello", None).await;
    }
    let mut acks = 0;
    let mut completed = 0;
    let mut limited: Vec<Value> = Vec::new();
    while acks + limited.len() < 4 || completed < acks {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => limited.push(v),
            "agent_completed" => completed += 1,
            _ => {}
        }
    }
    assert_eq!(acks, 3);
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["code"], "RATE_LIMITED");
    assert_eq!(limited[0]["ref_id"], "m3");
    assert_eq!(limited[0]["retryable"], true);
    c.ping_pong().await;
    // The limit is per user, shared by every tab of that user, not by other users.
    let mut tab = s.user("alice").await;
    tab.ask("m9", "hello", None).await;
    assert_eq!(tab.recv_type("error").await["code"], "RATE_LIMITED");
    let mut bob = s.user("bob").await;
    bob.ask_acked("b1", "hello", None).await;
}

/// `components.rate_limiter.scope` decides what is built: per connection, a second tab of
/// the same user has its own budget (per user, above, it shares the first tab's).
#[tokio::test]
async fn a_connection_scoped_rate_limiter_limits_each_socket() {
    let s = TestServer::start(&[
        ("WEBSOCKET__MESSAGES_PER_MINUTE", "1"),
        ("COMPONENTS__RATE_LIMITER__SCOPE", "connection"),
    ])
    .await;
    let mut first = s.user("alice").await;
    first.ask_acked("a1", "hello", None).await;
    first.ask("a2", "hello", None).await;
    let refused = loop {
        let v = first.recv().await;
        if v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(refused["code"], "RATE_LIMITED");
    assert_eq!(refused["ref_id"], "a2");
    let mut second = s.user("alice").await;
    second.ask_acked("a3", "hello", None).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_4509() {
    let s = TestServer::start(&[("WEBSOCKET__SEND_QUEUE", "8")]).await;
    let app = s.app().clone();
    let c = s.user("alice").await;
    let mut ws = c.into_inner();
    // Each of these earns a reply echoing ~60 KB, so the socket buffers fill quickly
    // while the client reads nothing.
    let big = json!({ "type": "t".repeat(60_000) }).to_string();
    let mut sent = 0;
    while app.metrics.slow_consumers.get() == 0 {
        assert!(sent < 2_000, "never detected as a slow consumer");
        let send = tokio::time::timeout(
            Duration::from_millis(500),
            ws.send(Message::text(big.clone())),
        );
        if send.await.is_err() {
            // Our own sends stall once the server stops reading us; that is fine.
            break;
        }
        sent += 1;
    }
    let started = tokio::time::Instant::now();
    while app.metrics.slow_consumers.get() == 0 {
        assert!(
            started.elapsed() < FRAME_TIMEOUT,
            "never detected as a slow consumer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reading again drains what was buffered; then the close comes.
    let mut c = Client::from_stream(ws);
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4509, "after {} messages", msgs.len());
    assert!(msgs.iter().all(|m| m["type"] != "connection_established"));
    // Other users are unaffected.
    let mut bob = s.user("bob").await;
    bob.ping_pong().await;
}
