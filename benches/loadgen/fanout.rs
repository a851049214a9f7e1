//! The fanout workload: one user holding K sockets sends M messages on the first; every run
//! event must reach all K sockets exactly once.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::chat::{EventKey, converse, open_many};
use crate::client::{self, Ws};
use crate::report::{Counts, Samples, bump, merge, per_sec};
use crate::{Ctx, Outcome};

pub struct Replica {
    pub log: Vec<(Instant, EventKey)>,
    pub errors: Counts,
}

pub async fn run(ctx: &Ctx, k: usize, m: usize) -> Outcome {
    let user = format!("user-fanout-{}", ctx.nonce);
    let (mut wss, mut errors) = open_many(ctx, k.max(1), k.max(1), |_| user.clone()).await;
    if wss.is_empty() {
        return Outcome {
            figures: json!({"workload": "fanout", "k": k, "m": m, "errors": errors}),
            ops: 0,
            op_name: "run",
        };
    }
    ctx.start_measuring();
    let mut first = wss.remove(0);
    let (done_tx, done_rx) = watch::channel(None::<usize>);
    let started = Instant::now();
    let sender = async {
        let r = converse(ctx, &mut first, "fanout", m, true).await;
        let _ = done_tx.send(Some(r.rtt.len()));
        r
    };
    let replicas =
        futures_util::future::join_all(wss.into_iter().map(|ws| replica(ctx, ws, done_rx.clone())));
    let (mut r0, replicas) = futures_util::future::join(sender, replicas).await;
    client::close(first).await;
    let wall = r0.finished.unwrap_or(started) - started;

    let reference: HashSet<&EventKey> = r0.log.iter().map(|(_, k)| k).collect();
    let mut missing = 0u64;
    let mut duplicates = 0u64;
    let mut extra = 0u64;
    let mut violations = r0.violations.clone();
    let mut lag = Samples::default();
    for rep in &replicas {
        let mut seen: HashMap<&EventKey, u64> = HashMap::new();
        let mut last_seq: Option<u64> = None;
        for (at, key) in &rep.log {
            *seen.entry(key).or_insert(0) += 1;
            if let Some(l) = last_seq
                && key.seq != l + 1
            {
                bump(&mut violations, "replica_seq_not_plus_one");
            }
            last_seq = Some(key.seq);
            if key.ty == "agent_completed"
                && let Some(sent) = r0.sent_at.get(&key.run_id)
            {
                lag.push(*at - *sent);
            }
        }
        missing += reference.iter().filter(|k| !seen.contains_key(*k)).count() as u64;
        duplicates += seen.values().map(|c| c - 1).sum::<u64>();
        extra += seen.keys().filter(|k| !reference.contains(*k)).count() as u64;
    }
    for rep in replicas {
        merge(&mut errors, rep.errors);
    }
    merge(&mut errors, std::mem::take(&mut r0.errors));
    let runs = r0.rtt.len() as u64;
    Outcome {
        figures: json!({
            "workload": "fanout", "k": k, "m": m, "sockets": reference_sockets(k, &errors),
            "runs_ok": r0.runs_ok, "runs_per_s": per_sec(r0.runs_ok, wall),
            "events_per_socket_expected": r0.log.len(),
            "missing": missing, "duplicates": duplicates, "extra": extra,
            "rtt_us": r0.rtt.summary(),
            "completed_on_replica_us": lag.summary(),
            "errors": errors, "violations": violations,
        }),
        ops: runs,
        op_name: "run",
    }
}

fn reference_sockets(k: usize, errors: &Counts) -> usize {
    let failed: u64 = errors
        .iter()
        .filter(|(e, _)| e.starts_with("open_"))
        .map(|(_, c)| c)
        .sum();
    k.saturating_sub(failed as usize)
}

/// Records every run event reaching a secondary socket until the sender is done and as
/// many runs have completed here, or the per-operation timeout passes after that.
pub async fn replica(ctx: &Ctx, mut ws: Ws, mut done: watch::Receiver<Option<usize>>) -> Replica {
    let mut rep = Replica {
        log: Vec::new(),
        errors: Counts::new(),
    };
    let mut completed = 0usize;
    let mut read_deadline = ctx.deadline;
    let mut signalled = false;
    loop {
        if let Some(target) = *done.borrow()
            && completed >= target
        {
            break;
        }
        tokio::select! {
            r = client::next_json(&mut ws, read_deadline) => match r {
                Ok(v) => {
                    let ty = v["type"].as_str().unwrap_or("");
                    if ty == "ack" || ty == "pong" {
                        continue;
                    }
                    let key = EventKey {
                        run_id: v["run_id"].as_str().unwrap_or("").to_owned(),
                        seq: v["seq"].as_u64().unwrap_or(0),
                        ty: ty.to_owned(),
                    };
                    if ty == "agent_completed" {
                        completed += 1;
                    }
                    rep.log.push((Instant::now(), key));
                }
                Err(e) => {
                    bump(&mut rep.errors, format!("replica_{}", e.kind()));
                    break;
                }
            },
            _ = done.changed(), if !signalled => {
                signalled = true;
                read_deadline = Instant::now() + ctx.timeout;
            }
        }
    }
    client::close(ws).await;
    rep
}
