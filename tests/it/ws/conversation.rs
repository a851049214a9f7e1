//! PROTOCOL.md §2 conversations: the golden path, idempotent acks, ownership, several
//! tabs, cancel, failing and timed-out tools, overlapping runs in one thread.

use super::harness::*;
use portcullis::wire::ClientMessage;

#[tokio::test]
async fn golden_path_streams_one_complete_run_with_a_computed_answer() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m1", "what is 12*(3+4)?", None).await;
    for field in ["thread_id", "message_id", "run_id"] {
        assert!(ack[field].as_str().is_some_and(|v| !v.is_empty()), "{ack}");
    }
    let run_id = ack["run_id"].as_str().unwrap();
    let events = c.run_events(run_id).await;
    let kinds = types(&events);
    assert_eq!(
        &kinds[..4],
        [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed"
        ],
        "{kinds:?}"
    );
    assert!(
        kinds[4..kinds.len() - 1]
            .iter()
            .all(|k| *k == "agent_response"),
        "{kinds:?}"
    );
    assert!(kinds.len() > 5, "at least one agent_response: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "agent_completed").count(), 1);
    assert_eq!(events[0]["seq"], 1, "a new thread starts at seq 1");
    for e in &events {
        assert_eq!(e["thread_id"], ack["thread_id"], "{e}");
    }
    assert_eq!(events[0]["agent"], "assistant");
    assert_eq!(events[0]["message_id"], ack["message_id"]);
    assert_eq!(events[2]["tool"], "calculator");
    assert_eq!(events[3]["call_id"], events[2]["call_id"]);
    assert_eq!(events[3]["result"]["value"], 84, "{}", events[3]);
    assert!(events[3]["duration_ms"].is_number(), "{}", events[3]);
    let answer: String = events
        .iter()
        .filter(|e| e["type"] == "agent_response")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(answer.contains("84"), "{answer}");
    let done = events.last().unwrap();
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["message"]["content"], answer.as_str(), "{done}");
    assert!(done["message"]["id"].is_string(), "{done}");

    // A second message in the same thread continues its seq.
    let thread = ack["thread_id"].as_str().unwrap();
    let ack2 = c.ask_acked("m2", "and what is 2+2?", Some(thread)).await;
    assert_eq!(ack2["thread_id"], thread);
    let events2 = c.run_events(ack2["run_id"].as_str().unwrap()).await;
    assert_eq!(events2[0]["seq"], done["seq"].as_i64().unwrap() + 1);
    c.ping_pong().await;
}

#[tokio::test]
async fn repeated_id_gets_the_same_ack_and_no_second_run() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("same-id", "hello", None).await;
    let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
    assert_eq!(events.last().unwrap()["status"], "ok");
    let again = c.ask_acked("same-id", "hello", None).await;
    assert_eq!(again, ack);
    // Nothing follows the second ack: the pong is the very next message.
    c.ping_pong().await;
    // Also when the repeat comes while the first run is still going: the second ack may
    // come between the run's events, but it is the same ack and there is one run.
    let ack = c.ask_acked("slow-id", "[[slow:100]] hello", None).await;
    c.ask("slow-id", "[[slow:100]] hello", None).await;
    let (mut started, mut acks) = (0, 0);
    loop {
        let v = c.recv().await;
        if v["type"] == "ack" {
            assert_eq!(v, ack);
            acks += 1;
            continue;
        }
        assert_eq!(v["run_id"], ack["run_id"], "{v}");
        started += usize::from(v["type"] == "agent_started");
        if v["type"] == "agent_completed" {
            break;
        }
    }
    if acks == 0 {
        assert_eq!(c.recv().await, ack);
    }
    assert_eq!(started, 1);
    c.ping_pong().await;
}

#[tokio::test]
async fn another_users_thread_is_not_found() {
    let s = TestServer::start(&[]).await;
    let mut alice = s.user("alice").await;
    let ack = alice.ask_acked("a1", "hello", None).await;
    alice.run_events(ack["run_id"].as_str().unwrap()).await;
    let thread = ack["thread_id"].as_str().unwrap();

    let mut bob = s.user("bob").await;
    bob.ask("b1", "hello", Some(thread)).await;
    let err = bob.recv_type("error").await;
    assert_eq!(err["code"], "THREAD_NOT_FOUND", "{err}");
    assert_eq!(err["ref_id"], "b1", "{err}");
    bob.send_msg(ClientMessage::resume(thread, 0)).await;
    assert_eq!(bob.recv_type("error").await["code"], "THREAD_NOT_FOUND");
    bob.ask("b2", "hello", Some("t_does_not_exist")).await;
    assert_eq!(bob.recv_type("error").await["code"], "THREAD_NOT_FOUND");
    bob.ping_pong().await;
    // Alice saw nothing of it.
    alice.ping_pong().await;
}

#[tokio::test]
async fn every_tab_of_a_user_receives_the_events() {
    let s = TestServer::start(&[]).await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(s.user("alice").await);
    }
    let mut bob = s.user("bob").await;
    let ack = tabs[0].ask_acked("m1", "what time is it?", None).await;
    let run_id = ack["run_id"].as_str().unwrap();
    let first = tabs[0].run_events(run_id).await;
    assert!(types(&first).contains(&"tool_executing"));
    for tab in &mut tabs[1..] {
        // Other tabs get the events, not the ack (that answers one connection's message).
        let events = tab.run_events(run_id).await;
        assert_eq!(events, first);
        tab.ping_pong().await;
    }
    bob.ping_pong().await;
}

#[tokio::test]
async fn cancel_ends_the_run_as_cancelled() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c
        .ask_acked("m1", "[[slow:200]] tell me a long story", None)
        .await;
    let run_id = ack["run_id"].as_str().unwrap();
    let started = c.recv_type("agent_started").await;
    assert_eq!(started["run_id"], run_id);
    c.send_msg(ClientMessage::cancel(run_id)).await;
    let mut events = vec![started];
    loop {
        let v = c.recv().await;
        assert_eq!(v["run_id"], run_id, "{v}");
        let done = v["type"] == "agent_completed";
        events.push(v);
        if done {
            break;
        }
    }
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    for w in events.windows(2) {
        assert_eq!(w[1]["seq"].as_i64(), w[0]["seq"].as_i64().map(|s| s + 1));
    }
    // Nothing of the run after its completion; a second cancel finds no run.
    c.send_msg(ClientMessage::cancel(run_id)).await;
    assert_eq!(c.recv_type("error").await["code"], "RUN_NOT_FOUND");
    c.ping_pong().await;

    // Nobody else can cancel a run.
    let ack = c.ask_acked("m2", "[[slow:50]] hello", None).await;
    let mut bob = s.user("bob").await;
    bob.send_msg(ClientMessage::cancel(ack["run_id"].as_str().unwrap()))
        .await;
    assert_eq!(bob.recv_type("error").await["code"], "RUN_NOT_FOUND");
    let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
    assert_eq!(events.last().unwrap()["status"], "ok");
}

/// A message sent while an earlier run of its thread is still going is acknowledged at
/// once: its run waits for its turn, its ack does not (the ack is otherwise held until
/// the run's first events are stored, `runs::HeldAck`). Were it held behind the turn, it
/// would only arrive after the first run's natural end, and that run could not be
/// cancelled in between.
#[tokio::test]
async fn a_message_behind_a_busy_turn_is_acknowledged_before_that_turn_ends() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let first = c
        .ask_acked("m1", "[[slow:1000]] tell me a long story", None)
        .await;
    let run_id = first["run_id"].as_str().unwrap().to_string();
    let thread = first["thread_id"].as_str().unwrap().to_string();
    assert_eq!(
        c.recv_type("agent_started").await["run_id"],
        run_id.as_str()
    );
    c.ask("m2", "hello again", Some(&thread)).await;
    // Only the first run's own events may come before the second ack.
    let second = loop {
        let v = c.recv().await;
        if v["type"] == "ack" {
            break v;
        }
        assert_eq!(v["run_id"], run_id.as_str(), "{v}");
        assert_ne!(
            v["type"], "agent_completed",
            "the ack waited for the turn: {v}"
        );
    };
    assert_eq!(second["id"], "m2");
    c.send_msg(ClientMessage::cancel(&run_id)).await;
    let mut last = c.recv().await;
    while last["type"] != "agent_completed" {
        assert_eq!(last["run_id"], run_id.as_str(), "{last}");
        last = c.recv().await;
    }
    assert_eq!(last["run_id"], run_id.as_str());
    assert_eq!(last["status"], "cancelled");
    // The second run then runs its turn.
    let events = c.run_events(second["run_id"].as_str().unwrap()).await;
    assert_eq!(events.last().unwrap()["status"], "ok");
}

#[tokio::test]
async fn failing_and_timed_out_tools_still_complete_the_run() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    for (id, content) in [
        ("f", "[[fail_tool]] what is 1+1?"),
        ("t", "[[slow_tool]] hi"),
    ] {
        let ack = c.ask_acked(id, content, None).await;
        let events = c.run_events(ack["run_id"].as_str().unwrap()).await;
        let failed: Vec<_> = events
            .iter()
            .filter(|e| {
                e["type"] == "tool_completed" && e.get("error").is_some_and(|x| !x.is_null())
            })
            .collect();
        assert_eq!(failed.len(), 1, "{id}: one tool failed: {events:?}");
        assert!(failed[0]["error"]["code"].is_string(), "{}", failed[0]);
        let done = events.last().unwrap();
        assert!(
            ["ok", "error"].contains(&done["status"].as_str().unwrap()),
            "{done}"
        );
        if id == "t" {
            assert!(
                failed[0]["duration_ms"].as_u64().unwrap() >= 400,
                "{}",
                failed[0]
            );
        }
    }
    // The connection is as good as before, and nothing of either run follows.
    c.ping_pong().await;
}

/// Several messages to one thread at once: their runs overlap, and the client still sees
/// the thread's events once each with `seq` increasing by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_in_one_thread_keep_seq_contiguous() {
    let s = TestServer::start(&[]).await;
    let mut c = s.user("alice").await;
    let ack = c.ask_acked("m0", "hello", None).await;
    let first = c.run_events(ack["run_id"].as_str().unwrap()).await;
    let thread = ack["thread_id"].as_str().unwrap();
    let mut last = first.last().unwrap()["seq"].as_i64().unwrap();
    const N: usize = 4;
    for i in 1..=N {
        c.ask(
            &format!("m{i}"),
            "[[slow:20]] what is 1+1 and what time is it?",
            Some(thread),
        )
        .await;
    }
    let mut completed = 0;
    let mut got = Vec::new();
    while completed < N {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "ack" => continue,
            "agent_completed" => completed += 1,
            _ => {}
        }
        got.push(v["seq"].as_i64().unwrap());
    }
    for seq in &got {
        assert_eq!(*seq, last + 1, "seqs as received: {got:?}");
        last = *seq;
    }
    c.ping_pong().await;
}
