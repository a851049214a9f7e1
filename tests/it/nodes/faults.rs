//! Redis faults: Redis only makes cross-node delivery fast, the store makes it whole.
//! Killed and restarted mid-run, nothing is lost or repeated; down at boot, the node is
//! ready (degraded) and serves its own sockets; blackholed, chat on the node goes on.

use std::time::Duration;

use serde_json::Value;

use super::harness::*;

/// A message the scripted agent answers slowly, in many chunks (its echo).
const SLOW: &str = "[[slow:150]] one two three four five six seven eight nine ten eleven twelve \
                    thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";

#[tokio::test]
async fn redis_restarted_mid_chat_loses_nothing() {
    let mut redis = Redis::start().await;
    let cluster = Cluster::new(&redis.url()).await;
    let a = cluster.subscribed_node().await;
    let b = cluster.subscribed_node().await;
    let mut a1 = a.user("erin").await;
    let mut b1 = b.user("erin").await;

    let ack = a1.ask_acked("m1", SLOW, None).await;
    let run = ack["run_id"].as_str().unwrap().to_string();
    let thread = ack["thread_id"].as_str().unwrap().to_string();
    let mut on_a = vec![a1.recv().await];
    let mut on_b = vec![b1.recv().await];
    assert_same(&on_b, &on_a, "cross-node delivery works before the fault");

    redis.kill();
    b.wait_bus(false).await;
    // The run goes on while Redis is away: node A's own socket keeps getting its events.
    for _ in 0..3 {
        on_a.push(a1.recv().await);
    }
    redis.restart().await;
    on_a.extend(events_until_completed(&mut a1, &run).await);
    on_b.extend(events_until_completed(&mut b1, &run).await);
    let n = assert_consecutive(&on_a, 1);
    assert!(n >= 8, "a run long enough to span the outage: {n}");
    assert_consecutive(&on_b, 1);
    assert_same(&on_b, &on_a, "node B got every event once, in order");
    b.wait_bus(true).await;

    // After the restart, live cross-node delivery is back.
    let ack = b1.ask_acked("m2", "what is 1+1?", Some(&thread)).await;
    let run = ack["run_id"].as_str().unwrap().to_string();
    let again = b1.run_events(&run).await;
    assert_consecutive(&again, n + 1);
    assert_same(
        &events_until_completed(&mut a1, &run).await,
        &again,
        "node A",
    );
    a1.ping_pong().await;
    b1.ping_pong().await;
    // What Redis dropped came from the store.
    let fills = counter(
        &b.get("/metrics").await.body,
        "portcullis_bus_store_fills_total",
    );
    assert!(fills >= 1.0, "node B filled from the store: {fills}");
}

#[tokio::test]
async fn redis_down_at_boot_leaves_the_node_ready_degraded_and_serving_its_sockets() {
    let mut redis = Redis::start().await;
    let cluster = Cluster::new(&redis.url()).await;
    redis.kill();
    let a = cluster.node().await;
    a.wait_bus(false).await;
    let (status, ready) = a.ready().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    let bus = dependency(&ready, "event_bus");
    assert_eq!(bus["ok"], false, "{ready}");
    assert_eq!(bus["required"], false, "{ready}");

    let mut a1 = a.user("frank").await;
    let mut a2 = a.user("frank").await;
    let ack = a1.ask_acked("m1", "what is 6*7?", None).await;
    let run = ack["run_id"].as_str().unwrap().to_string();
    let events = a1.run_events(&run).await;
    assert_consecutive(&events, 1);
    assert_same(
        &events_until_completed(&mut a2, &run).await,
        &events,
        "tab 2",
    );
    let metrics = a.get("/metrics").await.body;
    assert!(metrics.contains("portcullis_bus_redis_up 0"), "{metrics}");

    // Redis arrives: the node subscribes and reports ready.
    redis.restart().await;
    a.wait_bus(true).await;
    let started = tokio::time::Instant::now();
    loop {
        let (status, ready) = a.ready().await;
        if ready["status"] == "ready" {
            assert_eq!(status, 200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_blackholed_redis_costs_timeouts_not_hangs() {
    // Accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let cluster = Cluster::new(&format!("redis://127.0.0.1:{port}")).await;
    let a = cluster.node().await;
    let mut a1 = a.user("gina").await;
    for i in 0..3 {
        let ack = a1.ask_acked(&format!("m{i}"), "what is 6*7?", None).await;
        let events = a1.run_events(ack["run_id"].as_str().unwrap()).await;
        assert_consecutive(&events, 1);
    }
    let (status, ready) = a.ready().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    held.abort();
}

/// A metric's value in a Prometheus exposition.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn dependency<'a>(ready: &'a Value, name: &str) -> &'a Value {
    ready["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {ready}"))
}
