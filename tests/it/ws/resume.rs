//! `resume`: replay exactly the events a client missed, in order, then continue live
//! without duplicates.

use serde_json::{Value, json};

use super::harness::*;

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn resume_replays_exactly_the_events_after_after_seq() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "what is 6*7?", None).await;
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    let all = c.run_events(ack["run_id"].as_str().unwrap()).await;
    c.close().await;

    let mut c = s.user("alice").await;
    c.send(json!({ "type": "resume", "thread_id": thread, "after_seq": 2 }))
        .await;
    let replayed = {
        let mut v = Vec::new();
        for _ in 2..all.len() {
            v.push(c.recv().await);
        }
        v
    };
    assert_eq!(replayed, all[2..], "the stored events, byte for byte");
    // Exactly those: the pong comes next.
    c.ping_pong().await;
    // Resuming at the end replays nothing.
    let last = all.last().unwrap()["seq"].clone();
    c.send(json!({ "type": "resume", "thread_id": thread, "after_seq": last }))
        .await;
    c.ping_pong().await;
}

#[tokio::test]
async fn resume_after_reconnect_mid_run_continues_live_without_gaps_or_duplicates() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c
        .ask_acked("m1", "[[slow:60]] what is 6*7 and what time is it?", None)
        .await;
    let run_id = ack["run_id"].as_str().unwrap().to_string();
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    // See the first two events, then drop the connection while the run goes on.
    let first = vec![c.recv().await, c.recv().await];
    assert_eq!(types(&first), ["agent_started", "agent_thinking"]);
    drop(c.into_inner());

    let mut c = s.user("alice").await;
    let after = first[1]["seq"].as_i64().unwrap();
    c.send(json!({ "type": "resume", "thread_id": thread, "after_seq": after }))
        .await;
    let mut rest = Vec::new();
    loop {
        let v = c.recv().await;
        assert_eq!(v["run_id"], run_id.as_str(), "{v}");
        let done = v["type"] == "agent_completed";
        rest.push(v);
        if done {
            break;
        }
    }
    let got = seqs(&rest);
    let want: Vec<i64> = (after + 1..=after + rest.len() as i64).collect();
    assert_eq!(
        got, want,
        "missed events then live ones, in order, once each"
    );
    c.ping_pong().await;

    // What the client assembled equals what is stored.
    let mut c2 = s.user("alice").await;
    c2.send(json!({ "type": "resume", "thread_id": thread, "after_seq": 0 }))
        .await;
    let mut stored = Vec::new();
    for _ in 0..first.len() + rest.len() {
        stored.push(c2.recv().await);
    }
    let mut assembled = first.clone();
    assembled.extend(rest);
    assert_eq!(stored, assembled);
    c2.ping_pong().await;
}

/// A client that reconnects and resumes gets every event it missed even when live events
/// of the same thread reach the new connection before its `resume` does (the server
/// cannot know which threads a new connection will resume). Events may then arrive out
/// of `seq` order, but each exactly once.
#[tokio::test]
async fn resume_is_complete_when_live_events_arrive_first() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c
        .ask_acked("m1", "[[slow:40]] what is 6*7 and what time is it?", None)
        .await;
    let run_id = ack["run_id"].as_str().unwrap().to_string();
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    // The client saw seq 1, then lost its connection; seq 2 is published meanwhile.
    let seen = c.recv_type("agent_started").await["seq"].as_i64().unwrap();
    let missed = c.recv_type("agent_thinking").await;
    drop(c.into_inner());

    // The new connection receives a live event of the thread before it sends `resume`.
    let mut tab = s.user("alice").await;
    let live = tab.recv().await;
    assert_eq!(live["run_id"], run_id.as_str());
    assert!(live["seq"].as_i64() > missed["seq"].as_i64(), "{live}");
    tab.send(json!({ "type": "resume", "thread_id": thread, "after_seq": seen }))
        .await;
    let mut got = vec![live];
    let mut completed = 0;
    while completed == 0 {
        let v = tab.recv().await;
        completed += usize::from(v["type"] == "agent_completed");
        got.push(v);
    }
    // A replayed event may come after the live completion; the pong ends the stream.
    tab.send(json!({ "type": "ping" })).await;
    loop {
        let v = tab.recv().await;
        if v["type"] == "pong" {
            break;
        }
        got.push(v);
    }
    assert_eq!(
        types(&got)
            .iter()
            .filter(|t| **t == "agent_completed")
            .count(),
        1
    );
    let mut s_got = seqs(&got);
    let n = s_got.len();
    s_got.sort_unstable();
    s_got.dedup();
    assert_eq!(s_got.len(), n, "no duplicates: {:?}", seqs(&got));
    let want: Vec<i64> = (seen + 1..=seen + n as i64).collect();
    assert_eq!(s_got, want, "every event after after_seq, none missing");
}

/// Any event the store accepted can be sent: a ~600 KB event (more than the socket's write
/// buffer, sent as continuation frames, split inside multi-byte characters) arrives whole
/// live and again on resume, and the connection carries on after it.
#[tokio::test]
async fn an_event_larger_than_the_write_buffer_is_delivered_live_and_on_resume() {
    use portcullis::hub::EventFrame;
    use portcullis::wire::{EventBody, EventRecord};
    use std::sync::Arc;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    // A slow run stays active while the test appends its large event to it.
    let ack = c.ask_acked("m1", "[[slow:200]] hello", None).await;
    let (thread, run) = (
        ack["thread_id"].as_str().unwrap(),
        ack["run_id"].as_str().unwrap(),
    );
    c.recv_type("agent_started").await;
    let big: String = "é-".repeat(200_000);
    let mut body = serde_json::Map::new();
    body.insert("type".into(), json!("agent_thinking"));
    body.insert("text".into(), json!(big));
    let record = EventRecord {
        run_id: run.to_string(),
        body: EventBody::Map(body),
    };
    let store = s.app().store.get().unwrap().clone();
    let stored = store.append_events(thread, vec![record]).await.unwrap();
    let ev = stored.into_iter().next().unwrap();
    assert!(ev.json.len() > 590_000, "{}", ev.json.len());
    let seq = ev.seq;
    let frame = Arc::new(EventFrame {
        thread_id: Arc::from(thread),
        seq,
        kind: "agent_thinking",
        json: Utf8Bytes::from(ev.json),
    });
    s.app().bus.publish("alice", &[frame]);
    let live = loop {
        let v = c.recv().await;
        if v["seq"].as_i64() == Some(seq) {
            break v;
        }
    };
    assert_eq!(live["text"].as_str(), Some(big.as_str()), "live");
    // The run goes on on the same connection.
    loop {
        if c.recv().await["type"] == "agent_completed" {
            break;
        }
    }
    c.close().await;
    let mut again = s.user("alice").await;
    again
        .send(json!({ "type": "resume", "thread_id": thread, "after_seq": seq - 1 }))
        .await;
    let replayed = again.recv().await;
    assert_eq!(replayed["seq"].as_i64(), Some(seq));
    assert_eq!(replayed["text"].as_str(), Some(big.as_str()), "replayed");
    // The rest of the run follows it.
    loop {
        if again.recv().await["type"] == "agent_completed" {
            break;
        }
    }
    again.ping_pong().await;
}
