//! Tests of the protocol judge: a scripted server on port 0 misbehaves in one way per test,
//! and the chat conversation must count exactly that violation (and none for a correct
//! script), so a judge that stopped looking would fail here.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::chat::converse;
use crate::procstat::Watch;
use crate::report::Counts;
use crate::{Ctx, client, target, token};

/// Frames the scripted server answers the `n`th user message (`id`) with.
type Script = fn(id: &str, n: u64) -> Vec<Value>;

fn good_run(id: &str, n: u64) -> Vec<Value> {
    let run = format!("r{n}");
    let ev =
        |ty: &str, k: u64| json!({"type": ty, "run_id": run, "thread_id": "t1", "seq": n * 6 + k});
    let mut v =
        vec![json!({"type": "ack", "id": id, "thread_id": "t1", "message_id": "m", "run_id": run})];
    v.push(ev("agent_started", 1));
    v.push(ev("agent_thinking", 2));
    v.push(ev("tool_executing", 3));
    v.push(ev("tool_completed", 4));
    v.push(ev("agent_response", 5));
    let mut done = ev("agent_completed", 6);
    done["status"] = json!("ok");
    v.push(done);
    v
}

/// Starts a one-connection server running `script` and `select` as subprotocol.
async fn scripted(script: Script, select: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The callback's signature, with its large `ErrorResponse`, is tungstenite's to choose.
        #[allow(clippy::result_large_err)]
        let cb = |_: &Request, mut resp: Response| {
            let v = HeaderValue::from_static(select);
            resp.headers_mut().insert("sec-websocket-protocol", v);
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, cb)
            .await
            .unwrap();
        let hello = json!({"type": "connection_established", "protocol": "portcullis.v1"});
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .unwrap();
        let mut n = 0;
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            for f in script(v["id"].as_str().unwrap_or(""), n) {
                ws.send(Message::Text(f.to_string().into())).await.unwrap();
            }
            n += 1;
        }
    });
    addr
}

fn ctx(addr: std::net::SocketAddr) -> Ctx {
    Ctx {
        target: target::Target {
            url: format!("ws://{addr}/ws"),
            addr,
        },
        minter: token::Minter::new("test-secret-test-secret-test-secret", None, None),
        timeout: Duration::from_millis(500),
        deadline: Instant::now() + Duration::from_secs(10),
        nonce: "test".into(),
        server: None,
        me: Watch::start("self"),
    }
}

/// Runs three messages against `script`; returns (runs ok, violations, errors).
async fn judge(script: Script) -> (u64, Counts, Counts) {
    let addr = scripted(script, "portcullis.v1").await;
    let ctx = ctx(addr);
    let token = ctx.minter.mint("user-1");
    let mut opened = client::open(&ctx.target, &token, ctx.timeout)
        .await
        .unwrap();
    assert!(opened.subprotocol_ok);
    let r = converse(&ctx, &mut opened.ws, "c0", 3, false).await;
    (r.runs_ok, r.violations, r.errors)
}

fn only(kind: &str, n: u64) -> Counts {
    Counts::from([(kind.to_owned(), n)])
}

#[tokio::test]
async fn a_correct_server_has_no_violations() {
    let (ok, v, e) = judge(good_run).await;
    assert_eq!((ok, v, e), (3, Counts::new(), Counts::new()));
}

#[tokio::test]
async fn a_seq_gap_is_counted() {
    let (_, v, _) = judge(|id, n| {
        let mut f = good_run(id, n);
        f[3]["seq"] = json!(1000 + n);
        f
    })
    .await;
    // Each run jumps to 1000+n and back: two gaps per run.
    assert_eq!(v, only("seq_not_plus_one", 6));
}

#[tokio::test]
async fn a_missing_ack_is_counted() {
    let (ok, v, _) = judge(|id, n| good_run(id, n).split_off(1)).await;
    assert_eq!(ok, 3);
    assert_eq!(
        v,
        Counts::from([
            ("event_before_ack".to_owned(), 3),
            ("missing_ack".to_owned(), 3)
        ])
    );
}

#[tokio::test]
async fn a_duplicate_ack_is_counted() {
    let (_, v, _) = judge(|id, n| {
        let mut f = good_run(id, n);
        f.insert(1, f[0].clone());
        f
    })
    .await;
    assert_eq!(v, only("duplicate_ack", 3));
}

#[tokio::test]
async fn a_missing_agent_started_is_counted() {
    let (_, v, _) = judge(|id, n| {
        let mut f = good_run(id, n);
        f.remove(1);
        f
    })
    .await;
    // Without agent_started the first event of each run also skips a seq.
    assert_eq!(v["missing_agent_started"], 3);
}

#[tokio::test]
async fn an_event_after_completed_is_counted() {
    let (_, v, _) = judge(|id, n| {
        let mut f = good_run(id, n);
        let mut late = f[2].clone();
        late["seq"] = json!(n * 6 + 7);
        f.push(late);
        f
    })
    .await;
    assert_eq!(v["event_after_completed"], 3);
}

#[tokio::test]
async fn an_event_of_another_run_is_counted() {
    let (_, v, _) = judge(|id, n| {
        let mut f = good_run(id, n);
        let mut stray = f[2].clone();
        stray["run_id"] = json!("someone-else");
        f.insert(2, stray);
        f
    })
    .await;
    assert_eq!(v, only("foreign_run_event", 3));
}

#[tokio::test]
async fn a_wrong_subprotocol_is_reported() {
    let addr = scripted(good_run, "jwt.whatever").await;
    let ctx = ctx(addr);
    // The server selects an entry we did not offer: tungstenite refuses the handshake.
    let token = ctx.minter.mint("user-1");
    let err = client::open(&ctx.target, &token, ctx.timeout)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), "protocol_subprotocol_not_selected");
}

#[tokio::test]
async fn a_non_loopback_target_is_refused() {
    let err = target::Target::resolve("ws://192.0.2.1:80/ws", false)
        .await
        .unwrap_err();
    assert!(err.contains("refusing non-loopback"), "{err}");
    assert!(
        target::Target::resolve("ws://127.0.0.1:80/ws", false)
            .await
            .is_ok()
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let mut s = crate::report::Samples::default();
    for us in 1..=100u64 {
        s.push(Duration::from_micros(us));
    }
    let v = s.summary();
    assert_eq!(
        (v["p50"].as_u64(), v["p99"].as_u64(), v["max"].as_u64()),
        (Some(50), Some(99), Some(100))
    );
}
