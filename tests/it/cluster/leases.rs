//! Runs across nodes: a dead node's runs are closed by lease expiry, a restarting node
//! leaves the others' runs alone, a cancel reaches the node executing the run, and runs
//! of one thread take turns across nodes.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::store::harness::TestDb;
use crate::ws::harness::{Client, types};
use portcullis::wire::ClientMessage;

/// A slow scripted run: one streamed chunk every `ms` (test hook `[[slow:<ms>]]`).
fn slow(ms: u64, text: &str) -> String {
    format!("[[slow:{ms}]] {text}")
}

/// Sends a `user_message` and returns its ack, skipping the events the bus brings meanwhile.
async fn ask(c: &mut Client, id: &str, content: &str, thread: Option<&str>) -> Value {
    c.ask(id, content, thread).await;
    let ack = recv_until(c, "ack", None, FRAME_TIMEOUT).await;
    assert_eq!(ack["id"], id, "{ack}");
    ack
}

fn completions(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "agent_completed")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_have_their_own_ids_in_ready() {
    let db = TestDb::postgres().await;
    let a = Node::start(&db.url).await;
    let b = Node::start(&db.url).await;
    let ready_a = wait_ready(a.addr).await;
    let ready_b = wait_ready(b.addr).await;
    let (id_a, id_b) = (ready_a["node_id"].as_str(), ready_b["node_id"].as_str());
    assert!(id_a.is_some_and(|id| id.starts_with("n_")), "{ready_a}");
    assert_ne!(id_a, id_b, "each node makes its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_run_is_closed_as_run_interrupted_and_replayed_elsewhere() {
    let db = TestDb::postgres().await;
    let mut a = ProcessNode::start(&db.url).await;
    let b = Node::start(&db.url).await;
    let user = fresh_user();
    let mut on_b = connect(b.addr, &user).await;
    let mut on_a = connect(a.addr, &user).await;
    let ack = ask(&mut on_a, "m1", &slow(1000, "tell me a long story"), None).await;
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    let run_id = ack["run_id"].as_str().unwrap().to_string();
    let started = on_a.recv_type("agent_started").await;
    assert_eq!(started["run_id"], run_id.as_str());

    a.kill();
    let killed = Instant::now();
    // The user's socket on B hears the end that B (the only live node) stored for A.
    let wait = Duration::from_millis(LEASE_MS * 3);
    let done = recv_until(&mut on_b, "agent_completed", Some(&run_id), wait).await;
    let took = killed.elapsed();
    eprintln!("run of the killed node closed {took:?} after kill -9 (lease {LEASE_MS} ms)");
    assert_eq!(done["run_id"], run_id.as_str(), "{done}");
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["error"]["code"], "RUN_INTERRUPTED", "{done}");
    assert!(
        done["seq"].as_i64().is_some(),
        "a stored completion: {done}"
    );

    // Resume on B (a fresh socket, as a reconnecting client's) shows the run with
    // exactly one end, seqs gap-free.
    let mut resumed = connect(b.addr, &user).await;
    let events = replay(&mut resumed, &thread, done["seq"].as_i64().unwrap()).await;
    assert_eq!(types(&events).first(), Some(&"agent_started"), "{events:?}");
    assert_eq!(completions(&events), [&done], "exactly one agent_completed");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    // The thread goes on on B after the interruption.
    let next = ask(&mut on_b, "m2", "what is 6*7?", Some(&thread)).await;
    let run = on_b.run_events(next["run_id"].as_str().unwrap()).await;
    assert_eq!(run.last().unwrap()["status"], "ok");
    assert_eq!(run[0]["seq"].as_i64(), Some(seqs.len() as i64 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_one_node_leaves_the_other_nodes_run_alone() {
    let db = TestDb::postgres().await;
    let a = Node::start(&db.url).await;
    let mut on_a = connect(a.addr, &fresh_user()).await;
    // About 3 s of streaming: longer than the lease, so renewals must keep it alive.
    let ack = ask(
        &mut on_a,
        "m1",
        &slow(250, "tell me a long story please"),
        None,
    )
    .await;
    let run_id = ack["run_id"].as_str().unwrap().to_string();

    // Node B restarts twice while A's run streams; each boot runs the boot recovery.
    for _ in 0..2 {
        let b = Node::start(&db.url).await;
        b.stop().await;
    }
    let events = on_a.run_events(&run_id).await;
    let done = events.last().unwrap();
    assert_eq!(done["status"], "ok", "{done}");
    assert!(
        events.len() > 8,
        "the run streamed past the restarts: {:?}",
        types(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_on_one_node_stops_the_run_on_another() {
    let db = TestDb::postgres().await;
    let a = Node::start(&db.url).await;
    let b = Node::start(&db.url).await;
    let user = fresh_user();
    let mut on_a = connect(a.addr, &user).await;
    let mut on_b = connect(b.addr, &user).await;
    let ack = ask(
        &mut on_a,
        "m1",
        &slow(500, "tell me a long story please"),
        None,
    )
    .await;
    let run_id = ack["run_id"].as_str().unwrap().to_string();
    let started = on_a.recv_type("agent_started").await;
    assert_eq!(started["run_id"], run_id.as_str());

    on_b.send_msg(ClientMessage::cancel(&run_id)).await;
    // Accepted on B: no error comes back before the pong (only the run's events).
    let before = until_pong(&mut on_b).await;
    assert!(before.iter().all(|v| v["type"] != "error"), "{before:?}");
    let done = recv_until(&mut on_a, "agent_completed", Some(&run_id), FRAME_TIMEOUT).await;
    assert_eq!(done["run_id"], run_id.as_str(), "{done}");
    assert_eq!(done["status"], "cancelled", "{done}");

    // Someone else's run, or one that is over, is still RUN_NOT_FOUND on any node.
    on_b.send_msg(ClientMessage::cancel(&run_id)).await;
    let err = recv_until(&mut on_b, "error", None, FRAME_TIMEOUT).await;
    assert_eq!(err["code"], "RUN_NOT_FOUND", "{err}");
    let mut mallory = connect(b.addr, &fresh_user()).await;
    let other = ask(&mut on_a, "m2", &slow(500, "again"), None).await;
    mallory
        .send_msg(ClientMessage::cancel(other["run_id"].as_str().unwrap()))
        .await;
    let err = mallory.recv_type("error").await;
    assert_eq!(err["code"], "RUN_NOT_FOUND", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_one_thread_take_turns_across_nodes() {
    let db = TestDb::postgres().await;
    let a = Node::start(&db.url).await;
    let b = Node::start(&db.url).await;
    let user = fresh_user();
    let mut on_a = connect(a.addr, &user).await;
    let mut on_b = connect(b.addr, &user).await;
    let first = ask(&mut on_a, "m1", &slow(200, "tell me a story"), None).await;
    let thread = first["thread_id"].as_str().unwrap().to_string();
    on_a.recv_type("agent_started").await;
    // The second message of the thread, sent to the other node while the first runs.
    let second = ask(&mut on_b, "m2", "what is 6*7?", Some(&thread)).await;
    let second_run = second["run_id"].as_str().unwrap();
    let second_done = recv_until(
        &mut on_b,
        "agent_completed",
        Some(second_run),
        FRAME_TIMEOUT,
    )
    .await;

    let last = second_done["seq"].as_i64().unwrap();
    let mut resumed = connect(b.addr, &user).await;
    let events = replay(&mut resumed, &thread, last).await;
    let runs: Vec<&str> = events
        .iter()
        .map(|e| e["run_id"].as_str().unwrap())
        .collect();
    let boundary = runs.iter().position(|r| *r != runs[0]).expect("two runs");
    assert!(
        runs[boundary..].iter().all(|r| *r == runs[boundary]),
        "the runs' events interleave: {runs:?}"
    );
    assert_eq!(runs[0], first["run_id"].as_str().unwrap(), "message order");
    assert_eq!(events[boundary - 1]["type"], "agent_completed");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
}
