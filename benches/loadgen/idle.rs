//! The idle workload: N authenticated connections held S seconds, reading all the while so
//! that tungstenite answers server pings; optionally measuring application `ping` → `pong`.
//! Reports server RSS per held connection and CPU per held connection over the hold.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use portcullis::wire::ClientMessage;

use crate::chat::open_many;
use crate::client::{self, ConnError, Ws};
use crate::report::{Counts, Samples, bump, merge};
use crate::{Ctx, Outcome};

#[derive(Default)]
struct Held {
    pong: Samples,
    pings_sent: u64,
    errors: Counts,
}

pub async fn run(ctx: &Ctx, n: usize, secs: u64, connect_c: usize, ping_ms: u64) -> Outcome {
    let rss = || ctx.server.as_ref().and_then(|w| w.now()).map(|s| s.rss_kb);
    let rss_before = rss();
    let (wss, mut errors) =
        open_many(ctx, n, connect_c, |i| format!("user-{}-{i}", ctx.nonce)).await;
    let held = wss.len();
    let rss_open = rss();
    ctx.start_measuring();
    let hold_end = (Instant::now() + Duration::from_secs(secs)).min(ctx.deadline);
    let holds = wss.into_iter().enumerate().map(|(i, ws)| {
        // Spread pings over the interval so they do not arrive as one burst.
        let offset = Duration::from_millis(ping_ms * i as u64 / held.max(1) as u64);
        hold(ctx, ws, hold_end, ping_ms, offset)
    });
    let results = futures_util::future::join_all(holds).await;
    let rss_after = rss();

    let mut pong = Samples::default();
    let mut pings_sent = 0;
    let mut survivors = Vec::new();
    for (ws, h) in results {
        pong.extend(h.pong);
        pings_sent += h.pings_sent;
        merge(&mut errors, h.errors);
        survivors.extend(ws);
    }
    let still_open = survivors.len();
    let per_conn = match (rss_before, rss_open) {
        (Some(a), Some(b)) if held > 0 => json!((b.saturating_sub(a)) as f64 / held as f64),
        _ => json!(null),
    };
    let figures = json!({
        "workload": "idle", "n": n, "secs": secs, "held": held, "still_open_at_end": still_open,
        "server_rss_kb": {"before_open": rss_before, "after_open": rss_open, "after_hold": rss_after},
        "server_rss_kb_per_conn": per_conn,
        "pings_sent": pings_sent,
        "pong_us": pong.summary(),
        "errors": errors,
        "note": "server cpu_us_per_op is CPU per held connection over the hold only",
    });
    futures_util::future::join_all(survivors.into_iter().map(client::close)).await;
    Outcome {
        figures,
        ops: held as u64,
        op_name: "held_connection",
    }
}

/// Holds one connection until `end`; returns it unless the server dropped it.
async fn hold(
    ctx: &Ctx,
    mut ws: Ws,
    end: Instant,
    ping_ms: u64,
    offset: Duration,
) -> (Option<Ws>, Held) {
    let mut h = Held::default();
    let mut outstanding: VecDeque<Instant> = VecDeque::new();
    let mut ticker = (ping_ms > 0).then(|| {
        let period = Duration::from_millis(ping_ms);
        let mut t = tokio::time::interval_at(Instant::now() + offset, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client::next_json(&mut ws, end) => match r {
                Ok(v) if v["type"] == "pong" => {
                    if let Some(t) = outstanding.pop_front() {
                        h.pong.push(t.elapsed());
                    }
                }
                Ok(v) => bump(&mut h.errors, format!("unexpected_{}", v["type"].as_str().unwrap_or("?"))),
                Err(ConnError::Timeout) => break,
                Err(e) => {
                    bump(&mut h.errors, format!("dropped_{}", e.kind()));
                    return (None, h);
                }
            },
            _ = tick => {
                if Instant::now() + ctx.timeout.min(Duration::from_millis(250)) > end {
                    // Too late for the pong to arrive within the hold; do not count it.
                    continue;
                }
                if let Err(e) = client::send(&mut ws, &ClientMessage::Ping {}).await {
                    bump(&mut h.errors, format!("dropped_{}", e.kind()));
                    return (None, h);
                }
                h.pings_sent += 1;
                outstanding.push_back(Instant::now());
            }
        }
    }
    if !outstanding.is_empty() {
        h.errors
            .insert("pong_missing".into(), outstanding.len() as u64);
    }
    (Some(ws), h)
}
