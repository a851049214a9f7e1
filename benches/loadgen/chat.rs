//! The chat workload: C connections of distinct users, each sending M user messages one
//! run at a time, checking the protocol invariants of every run it sees.
//!
//! [`converse`] is shared with the fanout workload, which also needs the event log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use portcullis::wire::{ClientMessage, EventKind};

use crate::client::{self, ConnError, Ws};
use crate::report::{Counts, Samples, bump, merge, per_sec};
use crate::{Ctx, Outcome};

pub const PROMPT: &str = "what is 12*(3+4)?";

/// Whether `ty` is the `type` of a run's event.
fn is_run_event(ty: &str) -> bool {
    EventKind::parse(ty).is_some()
}

/// How long to keep reading after the last run, to catch events that should not exist.
const TRAILING_WINDOW: Duration = Duration::from_millis(100);

/// One received run event, as the fanout workload compares them across sockets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub run_id: String,
    pub seq: u64,
    pub ty: String,
}

#[derive(Default)]
pub struct ConvResult {
    pub rtt: Samples,
    pub ack: Samples,
    pub runs_ok: u64,
    pub errors: Counts,
    pub violations: Counts,
    /// When the last run completed (before the trailing window).
    pub finished: Option<Instant>,
    /// Every run event seen, with arrival time; only filled when asked for.
    pub log: Vec<(Instant, EventKey)>,
    /// Send time of each run's user message, by run id.
    pub sent_at: HashMap<String, Instant>,
}

/// Per-connection protocol state used to judge each frame.
#[derive(Default)]
struct Judge {
    thread: Option<String>,
    last_seq: HashMap<String, u64>,
    completed: HashSet<String>,
    past_ids: HashSet<String>,
}

impl Judge {
    /// Judges an event that arrived outside the run currently awaited.
    fn stray(&self, v: &Value, r: &mut ConvResult) {
        let ty = v["type"].as_str().unwrap_or("");
        if ty == "ack" {
            let id = v["id"].as_str().unwrap_or("");
            let kind = if self.past_ids.contains(id) {
                "duplicate_ack"
            } else {
                "foreign_ack"
            };
            bump(&mut r.violations, kind);
        } else if is_run_event(ty) {
            let run = v["run_id"].as_str().unwrap_or("");
            let kind = if self.completed.contains(run) {
                "event_after_completed"
            } else {
                "foreign_run_event"
            };
            bump(&mut r.violations, kind);
        } else if ty != "pong" {
            bump(&mut r.violations, format!("unexpected_{ty}"));
        }
    }
}

/// Sends `m` user messages on `ws`, one run at a time, judging every frame.
pub async fn converse(ctx: &Ctx, ws: &mut Ws, label: &str, m: usize, keep_log: bool) -> ConvResult {
    let mut r = ConvResult::default();
    let mut j = Judge::default();
    'messages: for i in 0..m {
        if Instant::now() >= ctx.deadline {
            bump(&mut r.errors, "not_started_deadline");
            break;
        }
        let id = format!("{}-{label}-m{i}", ctx.nonce);
        let msg = ClientMessage::user_message(&id, PROMPT, j.thread.as_deref(), None);
        let sent = Instant::now();
        let op_deadline = sent + ctx.timeout;
        if let Err(e) = client::send(ws, &msg).await {
            bump(&mut r.errors, e.kind());
            break;
        }
        let mut run: Option<String> = None;
        let mut acks = 0;
        let mut started = false;
        loop {
            let v = match client::next_json(ws, op_deadline).await {
                Ok(v) => v,
                Err(e) => {
                    bump(&mut r.errors, e.kind());
                    break 'messages;
                }
            };
            let ty = v["type"].as_str().unwrap_or("");
            if ty == "ack" && v["id"] == id.as_str() {
                acks += 1;
                if acks > 1 {
                    bump(&mut r.violations, "duplicate_ack");
                    continue;
                }
                r.ack.push(sent.elapsed());
                run = v["run_id"].as_str().map(str::to_owned);
                let t = v["thread_id"].as_str().map(str::to_owned);
                match (&j.thread, t) {
                    (None, t) => j.thread = t,
                    (Some(a), Some(b)) if *a == b => {}
                    _ => bump(&mut r.violations, "ack_for_other_thread"),
                }
                continue;
            }
            if ty == "error" && v["ref_id"] == id.as_str() {
                bump(
                    &mut r.errors,
                    format!("error_{}", v["code"].as_str().unwrap_or("?")),
                );
                continue 'messages;
            }
            if !is_run_event(ty) {
                j.stray(&v, &mut r);
                continue;
            }
            let rid = v["run_id"].as_str().unwrap_or("");
            if j.completed.contains(rid) {
                bump(&mut r.violations, "event_after_completed");
                continue;
            }
            if run.is_none() {
                // The ack must precede the run's events; adopt the run to keep judging it.
                bump(&mut r.violations, "event_before_ack");
                run = Some(rid.to_owned());
                if j.thread.is_none() {
                    j.thread = v["thread_id"].as_str().map(str::to_owned);
                }
            }
            if run.as_deref() != Some(rid) {
                bump(&mut r.violations, "foreign_run_event");
                continue;
            }
            let tid = v["thread_id"].as_str().unwrap_or("");
            if j.thread.as_deref() != Some(tid) {
                bump(&mut r.violations, "event_of_other_thread");
                continue;
            }
            let seq = v["seq"].as_u64().unwrap_or(0);
            if let Some(last) = j.last_seq.insert(tid.to_owned(), seq)
                && seq != last + 1
            {
                bump(&mut r.violations, "seq_not_plus_one");
            }
            if !started {
                if ty != "agent_started" {
                    bump(&mut r.violations, "missing_agent_started");
                }
                started = true;
                r.sent_at.insert(rid.to_owned(), sent);
            } else if ty == "agent_started" {
                bump(&mut r.violations, "duplicate_agent_started");
            }
            if keep_log {
                let key = EventKey {
                    run_id: rid.to_owned(),
                    seq,
                    ty: ty.to_owned(),
                };
                r.log.push((Instant::now(), key));
            }
            if ty == "agent_completed" {
                r.rtt.push(sent.elapsed());
                if acks == 0 {
                    bump(&mut r.violations, "missing_ack");
                }
                match v["status"].as_str() {
                    Some("ok") => r.runs_ok += 1,
                    s => bump(&mut r.errors, format!("status_{}", s.unwrap_or("missing"))),
                }
                j.completed.insert(rid.to_owned());
                j.past_ids.insert(id);
                break;
            }
        }
    }
    r.finished = Some(Instant::now());
    // Anything arriving now belongs to no run we are waiting for.
    let window_end = Instant::now() + TRAILING_WINDOW;
    while let Ok(v) = client::next_json(ws, window_end).await {
        j.stray(&v, &mut r);
    }
    r
}

/// Opens `n` connections, `connect_c` at a time; user `n` gets `user-<prefix><n>`.
pub async fn open_many(
    ctx: &Ctx,
    n: usize,
    connect_c: usize,
    sub: impl Fn(usize) -> String,
) -> (Vec<Ws>, Counts) {
    open_many_at(ctx, &ctx.target, n, connect_c, sub).await
}

/// [`open_many`] on another server than `--url` (another node).
pub async fn open_many_at(
    ctx: &Ctx,
    target: &crate::target::Target,
    n: usize,
    connect_c: usize,
    sub: impl Fn(usize) -> String,
) -> (Vec<Ws>, Counts) {
    let opened: Vec<Result<client::Opened, ConnError>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let token = ctx.minter.mint(&sub(i));
            async move { client::open(target, &token, ctx.timeout).await }
        })
        .buffered(connect_c.max(1))
        .collect()
        .await;
    let mut errors = Counts::new();
    let mut wss = Vec::with_capacity(n);
    for o in opened {
        match o {
            Ok(o) => {
                if !o.subprotocol_ok {
                    bump(&mut errors, "subprotocol_not_portcullis_v1");
                }
                wss.push(o.ws);
            }
            Err(e) => bump(&mut errors, format!("open_{}", e.kind())),
        }
    }
    (wss, errors)
}

pub async fn run(ctx: &Ctx, c: usize, m: usize, connect_c: usize) -> Outcome {
    let (wss, open_errors) =
        open_many(ctx, c, connect_c, |i| format!("user-{}-{i}", ctx.nonce)).await;
    let opened = wss.len();
    ctx.start_measuring();
    let started = Instant::now();
    let convs = wss.into_iter().enumerate().map(|(i, mut ws)| async move {
        let r = converse(ctx, &mut ws, &format!("c{i}"), m, false).await;
        client::close(ws).await;
        r
    });
    let results = futures_util::future::join_all(convs).await;

    let mut rtt = Samples::default();
    let mut ack = Samples::default();
    let mut errors = open_errors;
    let mut violations = Counts::new();
    let mut runs_ok = 0;
    let mut last = started;
    for r in results {
        rtt.extend(r.rtt);
        ack.extend(r.ack);
        merge(&mut errors, r.errors);
        merge(&mut violations, r.violations);
        runs_ok += r.runs_ok;
        last = last.max(r.finished.unwrap_or(started));
    }
    let wall = last - started;
    Outcome {
        figures: json!({
            "workload": "chat", "c": c, "m": m, "connections": opened, "runs_ok": runs_ok,
            "runs_per_s": per_sec(runs_ok, wall),
            "run_wall_s": wall.as_secs_f64(),
            "rtt_us": rtt.summary(),
            "ack_us": ack.summary(),
            "errors": errors, "violations": violations,
        }),
        ops: runs_ok,
        op_name: "run",
    }
}
