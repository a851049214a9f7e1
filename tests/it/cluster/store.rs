//! The store's side of runs across nodes, on Postgres: what a run row records, renewal,
//! the cancel flag, and which runs a boot or a sweep closes.

use std::time::Duration;

use portcullis::store::{LeasedRun, Node, Store};

use crate::store::harness::{TestDb, msg, parse};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn as_node(db: &TestDb, lease: Duration) -> Store {
    Store::connect_node(&db.url, 2, TIMEOUT, Node::new(lease))
        .await
        .expect("connect as a node")
}

#[tokio::test]
async fn a_boot_closes_unleased_and_expired_runs_but_not_a_live_nodes() {
    let db = TestDb::postgres().await;
    let live = as_node(&db, Duration::from_secs(60)).await;
    let short = as_node(&db, Duration::from_secs(1)).await;
    // A run of a binary from before leases: no node, no lease.
    let old = db.open().await;
    let leased = live
        .accept_message(msg("alice", "k1", None, "hi"))
        .await
        .unwrap();
    let expiring = short
        .accept_message(msg("alice", "k2", None, "hi"))
        .await
        .unwrap();
    let unleased = old
        .accept_message(msg("bob", "k1", None, "hi"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The periodic sweep closes only expired leases; a boot also unleased runs.
    let swept = live.close_expired_runs(false).await.unwrap();
    let ids: Vec<&str> = swept.iter().map(|c| c.event.run_id.as_str()).collect();
    assert_eq!(ids, [expiring.run_id.as_str()]);
    let booted = as_node(&db, Duration::from_secs(60)).await;
    let closed = booted.recover_runs_at_boot().await.unwrap();
    let ids: Vec<&str> = closed.iter().map(|c| c.event.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [unleased.run_id.as_str()],
        "the live node's run is left alone"
    );
    assert_eq!(closed[0].user_id, "bob");
    let end = parse(&closed[0].event.json);
    assert_eq!(end["type"], "agent_completed");
    assert_eq!(end["status"], "error");
    assert_eq!(end["error"]["code"], "RUN_INTERRUPTED");

    // The live node renews its run; a cancel requested elsewhere reaches it there.
    let renewed = live.renew_leases().await.unwrap();
    let run = |cancel_requested| LeasedRun {
        run_id: leased.run_id.clone(),
        cancel_requested,
    };
    assert_eq!(renewed, [run(false)]);
    assert!(
        !booted
            .request_cancel("mallory", &leased.run_id)
            .await
            .unwrap()
    );
    assert!(
        booted
            .request_cancel("alice", &leased.run_id)
            .await
            .unwrap()
    );
    assert_eq!(live.renew_leases().await.unwrap(), [run(true)]);
    // Closed runs are no longer anyone's to cancel.
    assert!(
        !booted
            .request_cancel("alice", &expiring.run_id)
            .await
            .unwrap()
    );
}
