//! Many users at once: each sees only their own events, every run complete and in order.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::harness::*;

const USERS: usize = 60;
const MESSAGES: usize = 2;

/// One user's session: send every message at once, then read until every run completed.
async fn one_user(s: &TestServer, user: String) -> Vec<Value> {
    let mut c = s.user(&user).await;
    for m in 0..MESSAGES {
        c.ask(
            &format!("{user}-m{m}"),
            &format!("{user} asks: what is {m}+{m}?"),
            None,
        )
        .await;
    }
    let mut acks: HashMap<String, Value> = HashMap::new();
    let mut seen = Vec::new();
    let mut completed = HashSet::new();
    while completed.len() < MESSAGES {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "ack" => {
                acks.insert(v["run_id"].as_str().unwrap().to_string(), v.clone());
            }
            "error" => panic!("{user}: unexpected error {v}"),
            "agent_completed" => {
                completed.insert(v["run_id"].as_str().unwrap().to_string());
                seen.push(v);
            }
            _ => seen.push(v),
        }
    }
    // Every event belongs to one of this user's acked runs.
    for e in &seen {
        let run = e["run_id"].as_str().unwrap();
        let ack = acks
            .get(run)
            .unwrap_or_else(|| panic!("{user} got an event of a run it did not start: {e}"));
        assert_eq!(e["thread_id"], ack["thread_id"], "{e}");
    }
    assert_eq!(acks.len(), MESSAGES, "{user}: every message acked");
    c.ping_pong().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_users_each_see_only_their_own_ordered_events() {
    let s = std::sync::Arc::new(TestServer::start(&[]).await);
    let tasks: Vec<_> = (0..USERS)
        .map(|i| {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move {
                let user = format!("user-{i:03}");
                (user.clone(), one_user(&s, user).await)
            })
        })
        .collect();
    let mut total_runs = 0;
    for t in tasks {
        let (user, events) = t.await.expect("user task");
        // Per run: started first, completed last and once, seq +1 within its thread.
        let mut by_run: HashMap<&str, Vec<&Value>> = HashMap::new();
        for e in &events {
            by_run
                .entry(e["run_id"].as_str().unwrap())
                .or_default()
                .push(e);
        }
        assert_eq!(by_run.len(), MESSAGES, "{user}");
        for (run, evs) in by_run {
            assert_eq!(evs[0]["type"], "agent_started", "{user} {run}");
            assert_eq!(
                evs.last().unwrap()["type"],
                "agent_completed",
                "{user} {run}"
            );
            assert_eq!(evs.last().unwrap()["status"], "ok", "{user} {run}");
            assert_eq!(evs[0]["seq"], 1, "each message opened a new thread");
            for w in evs.windows(2) {
                assert_eq!(
                    w[1]["seq"].as_i64().unwrap(),
                    w[0]["seq"].as_i64().unwrap() + 1,
                    "{user} {run}"
                );
            }
            let text: String = evs
                .iter()
                .filter(|e| e["type"] == "agent_response")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            total_runs += 1;
            assert!(!text.is_empty(), "{user} {run}");
        }
    }
    assert_eq!(total_runs, USERS * MESSAGES);
}
