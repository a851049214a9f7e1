//! The golden-path stages: `chat` (one user message: the ack, the run's events, and every
//! invariant of docs/PROTOCOL.md §2 a client relies on) and `resume` (a second connection
//! replays the thread from seq 0, and that equals what the first one received).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_tungstenite::WebSocketStream;

use super::explain::code_hint;
use super::net::BoxIo;
use super::socket::{Ended, next_json, send};
use super::{Fail, Pass};
use crate::wire::{ClientMessage, EventKind};

/// What `chat` received: the run's ids and its events in arrival order.
pub struct ChatRun {
    /// The thread.
    pub thread_id: String,
    /// The run.
    pub run_id: String,
    /// The run's events.
    pub events: Vec<Value>,
}

const INVARIANTS: &str = "docs/PROTOCOL.md §2's invariants are broken: this is a server bug (or something rewrites frames between client and server); report it with this output";

/// `chat`: sends `content`, reads the ack and the run to its `agent_completed`, then a
/// ping (whose pong shows nothing of the run came after its end), and checks the lot.
pub async fn chat(
    ws: &mut WebSocketStream<BoxIo>,
    content: &str,
    within: Duration,
) -> Result<(ChatRun, Pass), Fail> {
    let id = format!("probe-{:016x}", rand::random::<u64>());
    let started = Instant::now();
    send(ws, &ClientMessage::user_message(&id, content, None, None))
        .await
        .map_err(|e| Fail::new(e, "the socket closed before the message was sent"))?;
    let mut problems = Vec::new();
    let (run, ack_ms) = read_run(ws, &id, started, within, &mut problems).await?;
    after_completion(ws, &run, within, &mut problems).await?;
    problems.extend(invariants(&run));
    if !problems.is_empty() {
        return Err(Fail::new(
            format!("{}: {}", summary(&run, ack_ms), problems.join("; ")),
            INVARIANTS,
        ));
    }
    let completed = run.events.last().cloned().unwrap_or(Value::Null);
    if completed["status"] != "ok" {
        let code = completed["error"]["code"].as_str().unwrap_or("?");
        return Err(Fail::new(
            format!("{}: the run ended {} with {code}: {}", summary(&run, ack_ms), completed["status"], completed["error"]["message"]),
            code_hint(code, None).unwrap_or_else(|| "the agent failed: check the agent's provider and tools (check --online for its services)".into()),
        ));
    }
    let detail = summary(&run, ack_ms);
    Ok((run, Pass::new(detail)))
}

/// Reads the ack and the run's events up to its `agent_completed`; returns the run and
/// how long the ack took.
async fn read_run(
    ws: &mut WebSocketStream<BoxIo>,
    id: &str,
    started: Instant,
    within: Duration,
    problems: &mut Vec<String>,
) -> Result<(ChatRun, u128), Fail> {
    let mut ack: Option<Value> = None;
    let mut ack_ms = 0;
    let mut events = Vec::new();
    loop {
        let v = next_json(ws, within)
            .await
            .map_err(|e| ended(&e, "the run's end"))?;
        match v["type"].as_str().unwrap_or("") {
            "ack" if v["id"] == id => {
                if ack.is_some() {
                    problems.push("a second ack for the same message".to_string());
                }
                ack_ms = started.elapsed().as_millis();
                ack = Some(v);
            }
            "error" if v["ref_id"] == id => return Err(refused(&v)),
            kind if is_event(kind) => {
                if ack.is_none() {
                    problems.push(format!("{kind} arrived before the ack"));
                }
                let done = kind == EventKind::AgentCompleted.as_str();
                events.push(v);
                if done {
                    break;
                }
            }
            _ => {}
        }
    }
    let ack = ack.unwrap_or(Value::Null);
    let run = ChatRun {
        thread_id: ack["thread_id"].as_str().unwrap_or("").to_string(),
        run_id: ack["run_id"].as_str().unwrap_or("").to_string(),
        events,
    };
    Ok((run, ack_ms))
}

fn is_event(kind: &str) -> bool {
    kind.starts_with("agent_") || kind.starts_with("tool_")
}

fn refused(v: &Value) -> Fail {
    let code = v["code"].as_str().unwrap_or("?");
    Fail::new(
        format!("the message was refused: error {code}: {}", v["message"]),
        code_hint(code, None).unwrap_or_else(|| "see the error code in docs/PROTOCOL.md".into()),
    )
}

fn ended(e: &Ended, waiting_for: &str) -> Fail {
    let hint = match e {
        Ended::Closed(Some((c, _))) => super::explain::close_hint(*c).to_string(),
        _ => "the run did not finish in time: raise --timeout-ms, or check the agent's provider (check --online) and run_timeout_ms".to_string(),
    };
    Fail::new(format!("before {waiting_for}: {}", e.describe()), hint)
}

/// A ping after `agent_completed`: anything of the run before the pong is a violation.
async fn after_completion(
    ws: &mut WebSocketStream<BoxIo>,
    run: &ChatRun,
    within: Duration,
    problems: &mut Vec<String>,
) -> Result<(), Fail> {
    send(ws, &ClientMessage::Ping {})
        .await
        .map_err(|e| Fail::new(e, "the socket closed after the run"))?;
    loop {
        let v = next_json(ws, within)
            .await
            .map_err(|e| ended(&e, "the pong after the run"))?;
        if v["type"] == "pong" {
            return Ok(());
        }
        if v["run_id"] == run.run_id.as_str() {
            problems.push(format!("{} arrived after agent_completed", v["type"]));
        }
    }
}

/// Every invariant of the run's events a client may rely on.
fn invariants(run: &ChatRun) -> Vec<String> {
    let mut problems = Vec::new();
    if run.run_id.is_empty() || run.thread_id.is_empty() {
        problems.push("no ack with thread_id and run_id arrived".to_string());
    }
    let kinds: Vec<&str> = run
        .events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    if kinds.first() != Some(&EventKind::AgentStarted.as_str()) {
        problems.push(format!(
            "the first event is {:?}, not agent_started",
            kinds.first()
        ));
    }
    let completed = kinds
        .iter()
        .filter(|k| **k == EventKind::AgentCompleted.as_str())
        .count();
    if completed != 1 {
        problems.push(format!(
            "{completed} agent_completed events, not exactly one"
        ));
    }
    let mut last: Option<i64> = None;
    let mut calls = Vec::new();
    for e in &run.events {
        let kind = e["type"].as_str().unwrap_or("");
        if e["run_id"] != run.run_id.as_str() || e["thread_id"] != run.thread_id.as_str() {
            problems.push(format!(
                "{kind} carries run_id {} thread_id {}, not the ack's",
                e["run_id"], e["thread_id"]
            ));
        }
        match (e["seq"].as_i64(), last) {
            (None, _) => problems.push(format!("{kind} has no seq (an unstored event)")),
            (Some(s), Some(l)) if s != l + 1 => {
                problems.push(format!("seq {s} follows {l}"));
                last = Some(s);
            }
            (Some(s), _) => last = Some(s),
        }
        match EventKind::parse(kind) {
            Some(EventKind::ToolExecuting) => calls.push(e["call_id"].clone()),
            Some(EventKind::ToolCompleted) if !calls.contains(&e["call_id"]) => {
                problems.push(format!(
                    "tool_completed {} without its tool_executing",
                    e["call_id"]
                ));
            }
            _ => {}
        }
    }
    problems
}

/// One line: the ack, the kinds seen, the seq range and the answer.
fn summary(run: &ChatRun, ack_ms: u128) -> String {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for e in &run.events {
        let mut kind = e["type"].as_str().unwrap_or("?").to_string();
        if let Some(tool) = e["tool"]
            .as_str()
            .filter(|_| kind == EventKind::ToolExecuting.as_str())
        {
            let _ = write!(kind, " {tool}");
        }
        if let Some(status) = e["status"].as_str() {
            let _ = write!(kind, " {status}");
        }
        match kinds.last_mut() {
            Some((k, n)) if *k == kind => *n += 1,
            _ => kinds.push((kind, 1)),
        }
    }
    let kinds: Vec<String> = kinds
        .into_iter()
        .map(|(k, n)| if n > 1 { format!("{k} x{n}") } else { k })
        .collect();
    let seqs: Vec<i64> = run
        .events
        .iter()
        .filter_map(|e| e["seq"].as_i64())
        .collect();
    let answer = run
        .events
        .last()
        .map(|e| e["message"]["content"].as_str().unwrap_or("").to_string())
        .unwrap_or_default();
    format!(
        "ack in {ack_ms} ms (thread {}); {} events: {}; seq {}..{}; answer {:?}",
        run.thread_id,
        run.events.len(),
        kinds.join(", "),
        seqs.first().unwrap_or(&0),
        seqs.last().unwrap_or(&0),
        answer.chars().take(80).collect::<String>()
    )
}

/// `resume`: on a fresh connection, the thread replayed from seq 0 equals what `chat`
/// received.
pub async fn resume(
    ws: &mut WebSocketStream<BoxIo>,
    run: &ChatRun,
    within: Duration,
) -> Result<Pass, Fail> {
    send(ws, &ClientMessage::resume(&run.thread_id, 0))
        .await
        .map_err(|e| Fail::new(e, "the socket closed before resume was sent"))?;
    let last = run
        .events
        .last()
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or(0);
    let mut replayed = Vec::new();
    while replayed.last().and_then(|e: &Value| e["seq"].as_i64()) != Some(last) {
        let v = next_json(ws, within).await.map_err(|e| {
            Fail::new(
                format!("replayed {} of {} events, then {}", replayed.len(), run.events.len(), e.describe()),
                "the thread's stored events do not come back: check the database (services.<database>) and the server's log",
            )
        })?;
        if v["type"] == "error" {
            return Err(refused(&v));
        }
        if v["thread_id"] == run.thread_id.as_str() && v.get("seq").is_some() {
            replayed.push(v);
        }
    }
    if let Some(i) =
        (0..run.events.len().max(replayed.len())).find(|&i| run.events.get(i) != replayed.get(i))
    {
        return Err(Fail::new(
            format!(
                "the replay differs from what was received at event {}: received {}, replayed {}",
                i + 1,
                show(run.events.get(i)),
                show(replayed.get(i))
            ),
            "stored events must equal the ones sent (an event is sent only after it is stored): a server bug or a database rewriting data; report it with this output",
        ));
    }
    Ok(Pass::new(format!(
        "a new connection replayed seq 1..{last} of thread {}: {} events, identical to those received",
        run.thread_id,
        replayed.len()
    )))
}

fn show(v: Option<&Value>) -> String {
    v.map_or("nothing".into(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ev(kind: &str, seq: i64) -> Value {
        json!({"type": kind, "run_id": "r", "thread_id": "t", "seq": seq, "status": "ok", "message": {"content": "84"}})
    }

    #[test]
    fn every_broken_invariant_is_named() {
        let good = ChatRun {
            thread_id: "t".into(),
            run_id: "r".into(),
            events: vec![
                ev("agent_started", 1),
                ev("agent_response", 2),
                ev("agent_completed", 3),
            ],
        };
        assert_eq!(invariants(&good), Vec::<String>::new());
        let bad = ChatRun {
            thread_id: "t".into(),
            run_id: "r".into(),
            events: vec![
                ev("agent_response", 1),
                ev("agent_completed", 3),
                ev("agent_completed", 4),
            ],
        };
        let problems = invariants(&bad);
        assert!(
            problems.iter().any(|p| p.contains("not agent_started")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("seq 3 follows 1")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("2 agent_completed")),
            "{problems:?}"
        );
    }
}
