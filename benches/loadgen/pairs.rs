//! The pairs workload: C users, each with a sender socket on `--url` and a watcher socket
//! on `--watch-url` (another node behind the same store and Redis, or the same node); each
//! user sends M messages on its sender, one run at a time, all users at once. Every run
//! event must reach the watcher exactly once and in seq order; the watcher's lag behind
//! the sender, per event, is what a second node adds to delivery (same node: ~0).

use std::collections::HashMap;

use serde_json::json;
use tokio::sync::watch;

use crate::chat::{converse, open_many, open_many_at};
use crate::fanout::replica;
use crate::report::{Counts, Samples, bump, merge, per_sec};
use crate::target::Target;
use crate::{Ctx, Outcome};

pub async fn run(ctx: &Ctx, watch_at: &Target, c: usize, m: usize) -> Outcome {
    let user = |i: usize| format!("user-pairs-{}-{i}", ctx.nonce);
    let (senders, mut errors) = open_many(ctx, c, 50, user).await;
    let (watchers, more) = open_many_at(ctx, watch_at, c, 50, user).await;
    merge(&mut errors, more);
    if senders.len() != c || watchers.len() != c {
        return Outcome {
            figures: json!({"workload": "pairs", "c": c, "m": m, "errors": errors}),
            ops: 0,
            op_name: "event",
        };
    }
    ctx.start_measuring();
    let started = tokio::time::Instant::now();
    let pairs = senders
        .into_iter()
        .zip(watchers)
        .enumerate()
        .map(|(i, (mut s, w))| async move {
            let (done_tx, done_rx) = watch::channel(None::<usize>);
            let send = async {
                let r = converse(ctx, &mut s, &format!("p{i}"), m, true).await;
                let _ = done_tx.send(Some(r.rtt.len()));
                r
            };
            let (r, rep) = futures_util::future::join(send, replica(ctx, w, done_rx)).await;
            crate::client::close(s).await;
            (r, rep)
        });
    let results = futures_util::future::join_all(pairs).await;
    let wall = started.elapsed();

    let (mut lag, mut rtt) = (Samples::default(), Samples::default());
    let mut violations = Counts::new();
    let (mut runs_ok, mut events, mut missing, mut duplicates, mut extra) = (0, 0u64, 0, 0, 0);
    for (mut r, rep) in results {
        let sent: HashMap<_, _> = r.log.iter().map(|(at, k)| (k, *at)).collect();
        let mut seen: HashMap<_, u64> = HashMap::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (at, key) in &rep.log {
            *seen.entry(key).or_insert(0) += 1;
            if let Some(l) = last.insert(&key.run_id, key.seq)
                && key.seq != l + 1
            {
                bump(&mut violations, "watcher_seq_not_plus_one");
            }
            match sent.get(key) {
                Some(s) => lag.push(at.saturating_duration_since(*s)),
                None => extra += 1,
            }
        }
        events += rep.log.len() as u64;
        missing += sent.keys().filter(|k| !seen.contains_key(*k)).count() as u64;
        duplicates += seen.values().map(|n| n - 1).sum::<u64>();
        runs_ok += r.runs_ok;
        rtt.extend(std::mem::take(&mut r.rtt));
        merge(&mut errors, r.errors);
        merge(&mut errors, rep.errors);
        merge(&mut violations, r.violations);
    }
    Outcome {
        figures: json!({
            "workload": "pairs", "c": c, "m": m, "watch_url": watch_at.url,
            "runs_ok": runs_ok, "runs_per_s": per_sec(runs_ok, wall),
            "watcher_events": events, "missing": missing, "duplicates": duplicates, "extra": extra,
            "watch_lag_us": lag.summary(), "rtt_us": rtt.summary(),
            "errors": errors, "violations": violations,
        }),
        // Events delivered: each reached its sender and its watcher.
        ops: events * 2,
        op_name: "delivered_event",
    }
}
