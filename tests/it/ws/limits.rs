//! Limits and bad input: slow consumers (4509), oversize messages (1009), malformed
//! messages and binary frames (an `error`, connection kept), the per-user rate limit.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::harness::*;
use portcullis::wire::ClientMessage;

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
    c.send_msg(ClientMessage::user_message(
        "m2",
        "hi",
        None,
        Some("nobody"),
    ))
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
    let frame = ClientMessage::Ping {}.to_text();
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
    let s = TestServer::start(&[
        ("WEBSOCKET__SEND_QUEUE_BYTES", "16384"),
        ("WEBSOCKET__SEND_TIMEOUT_MS", "500"),
    ])
    .await;
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

/// A 5 000-delta answer (a model streaming token by token) reaches a client that reads
/// promptly whole: no 4509, every seq once, the text intact (merged deltas included).
#[tokio::test]
async fn a_long_streamed_answer_reaches_a_prompt_reader_whole() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "[[deltas:5000]]", None).await;
    let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "agent_response")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    let want: String = (1..=5000).map(|i| format!("w{i} ")).collect();
    assert!(text == want, "the deltas concatenate to the answer");
    let done = events.last().unwrap();
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["message"]["content"], want.as_str());
    assert_eq!(last_seq(done), 5002, "started, 5000 deltas, completed");
    c.ping_pong().await;
    assert_eq!(s.app().metrics.slow_consumers.get(), 0);
}

/// A client that never reads while a long answer streams is closed with 4509 once its
/// queue has not drained for `send_timeout_ms`; the events stay stored, so a new
/// connection resumes after the last one it got and receives the rest of the run.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_4509_and_resumes_the_rest() {
    // 24 answers of ~60 KB (each under the agent's max_answer_bytes), ~1.4 MB in all:
    // more than the kernel's socket buffers take, less than twice the default budget, so
    // it is the drain timeout that closes the connection.
    let s = TestServer::start(&[("WEBSOCKET__SEND_TIMEOUT_MS", "500")]).await;
    let app = s.app().clone();
    // A small receive window, so the kernel cannot absorb the answers for us.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let tcp = tcp.connect(s.addr).await.unwrap();
    let mut req = s.url("/websocket").into_client_request().unwrap();
    let bearer = format!("Bearer {}", token("alice", 600));
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut c = Client::from_stream(ws);
    const RUNS: usize = 24;
    for i in 0..RUNS {
        c.ask(&format!("m{i}"), "[[deltas:60]] [[pad:1000]]", None)
            .await;
    }
    let started = tokio::time::Instant::now();
    let mut largest_queue = 0;
    while app.metrics.slow_consumers.get() == 0 {
        assert!(
            started.elapsed() < FRAME_TIMEOUT,
            "never detected as a slow consumer"
        );
        largest_queue = largest_queue.max(app.bus.queued_bytes().1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(largest_queue > 0, "/metrics' queue bytes saw the backlog");
    let (msgs, code) = c.until_close().await;
    assert_eq!(code, 4509, "after {} messages", msgs.len());
    let got = msgs
        .iter()
        .filter(|m| m["type"] == "agent_completed")
        .count();
    assert!(got < RUNS, "closed before everything was read");
    // The runs go on without the client and store everything. Once they ended (so no
    // live event reaches the new connection ahead of its replays), a client recovers as
    // documented: resend each message (same id: the same ack, no second run), then
    // resume each thread after the last event it got.
    let store = app.store.get().unwrap().clone();
    let started = tokio::time::Instant::now();
    loop {
        let threads = store.list_threads("alice").await.unwrap();
        let mut done = 0;
        for t in &threads {
            done += usize::from(
                !store
                    .events_after("alice", &t.thread_id, 61, 1)
                    .await
                    .unwrap()
                    .is_empty(),
            );
        }
        if done == RUNS {
            break;
        }
        assert!(
            started.elapsed() < FRAME_TIMEOUT * 3,
            "the runs never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = s.user("alice").await;
    for i in 0..RUNS {
        let ack = again
            .ask_acked(&format!("m{i}"), "[[deltas:60]] [[pad:1000]]", None)
            .await;
        let thread = ack["thread_id"].as_str().unwrap();
        let last = msgs
            .iter()
            .filter(|m| m["thread_id"] == thread && m["seq"].is_i64())
            .map(last_seq)
            .max()
            .unwrap_or(0);
        if last == 62 {
            continue;
        }
        again.send_msg(ClientMessage::resume(thread, last)).await;
        let mut next = last + 1;
        loop {
            let v = again.recv().await;
            assert_eq!(v["seq"].as_i64(), Some(next), "{v}");
            next = last_seq(&v) + 1;
            if v["type"] == "agent_completed" {
                assert_eq!(v["status"], "ok", "{v}");
                break;
            }
        }
        assert_eq!(next, 63, "started, 60 deltas, completed");
    }
}
