//! The handshake workload: N connections, C at a time, each timed from TCP connect to
//! receipt of `connection_established`, then closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use tokio::time::Instant;

use crate::report::{Counts, Samples, bump, merge, per_sec};
use crate::{Ctx, Outcome, client};

struct WorkerResult {
    latency: Samples,
    errors: Counts,
    violations: Counts,
}

pub async fn run(ctx: &Ctx, n: usize, c: usize) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // Workers borrow `ctx`, so they run as futures on this task rather than spawned tasks;
    // the runtime still overlaps their I/O.
    let workers = (0..c.max(1)).map(|_| worker(ctx, &next, n));
    let results = futures_util::future::join_all(workers).await;
    let wall = started.elapsed();

    let mut latency = Samples::default();
    let mut errors = Counts::new();
    let mut violations = Counts::new();
    for r in results {
        latency.extend(r.latency);
        merge(&mut errors, r.errors);
        merge(&mut violations, r.violations);
    }
    let ok = latency.len() as u64;
    Outcome {
        figures: json!({
            "workload": "handshake", "n": n, "c": c, "ok": ok,
            "conns_per_s": per_sec(ok, wall),
            "latency_us": latency.summary(),
            "errors": errors, "violations": violations,
            "note": "server cpu_us_per_op covers one handshake plus its close",
        }),
        ops: ok,
        op_name: "connection",
    }
}

async fn worker(ctx: &Ctx, next: &AtomicUsize, n: usize) -> WorkerResult {
    let mut r = WorkerResult {
        latency: Samples::default(),
        errors: Counts::new(),
        violations: Counts::new(),
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        if Instant::now() >= ctx.deadline {
            bump(&mut r.errors, "not_started_deadline");
            continue;
        }
        let token = ctx.minter.mint(&format!("user-{i}"));
        match client::open(&ctx.target, &token, ctx.timeout).await {
            Ok(o) => {
                r.latency.push(o.elapsed);
                if !o.subprotocol_ok {
                    bump(&mut r.violations, "subprotocol_not_portcullis_v1");
                }
                client::close(o.ws).await;
            }
            Err(e) => bump(&mut r.errors, e.kind()),
        }
    }
    r
}
