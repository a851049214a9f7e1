//! The JSON frames the baseline sends, built once per run. The "agent" is a fixed script
//! (think, call a calculator, answer), so the server's cost is protocol work only.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Number of events in every run, agent_started through agent_completed.
pub const EVENTS_PER_RUN: u64 = 6;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id with a readable prefix (`c_`, `t_`, `m_`, `r_`, `call_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn frame(v: Value) -> Utf8Bytes {
    v.to_string().into()
}

pub fn connection_established(
    conn_id: &str,
    user: &str,
    expires_at: i64,
    heartbeat_ms: u64,
) -> Utf8Bytes {
    let expires = DateTime::<Utc>::from_timestamp(expires_at, 0)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    frame(json!({
        "type": "connection_established", "protocol": crate::auth::PROTOCOL,
        "connection_id": conn_id, "user_id": user, "auth": "jwt",
        "server_time": now_rfc3339(), "heartbeat_ms": heartbeat_ms,
        "token_expires_at": expires,
        "limits": {"max_message_bytes": crate::MAX_MESSAGE_BYTES, "messages_per_minute": 120},
    }))
}

pub fn error(code: &str, message: &str, ref_id: Option<&str>) -> Utf8Bytes {
    let mut v = json!({"type": "error", "code": code, "message": message, "retryable": false});
    if let Some(r) = ref_id {
        v["ref_id"] = json!(r);
    }
    frame(v)
}

pub fn pong() -> Utf8Bytes {
    frame(json!({"type": "pong", "server_time": now_rfc3339()}))
}

/// The ack and the six events of one run; events carry `first_seq..first_seq+5`.
pub struct Run {
    pub ack: Utf8Bytes,
    pub events: Vec<Utf8Bytes>,
}

pub fn run(client_id: &str, thread: &str, first_seq: u64) -> Run {
    let run_id = new_id("r_");
    let message_id = new_id("m_");
    let call_id = new_id("call_");
    let ack = frame(json!({
        "type": "ack", "id": client_id, "thread_id": thread,
        "message_id": message_id, "run_id": run_id,
    }));
    let base =
        |ty: &str, seq: u64| json!({"type": ty, "run_id": run_id, "thread_id": thread, "seq": seq});
    let mut evs = [
        base("agent_started", first_seq),
        base("agent_thinking", first_seq + 1),
        base("tool_executing", first_seq + 2),
        base("tool_completed", first_seq + 3),
        base("agent_response", first_seq + 4),
        base("agent_completed", first_seq + 5),
    ];
    evs[0]["agent"] = json!("scripted");
    evs[0]["message_id"] = json!(message_id);
    evs[1]["text"] = json!("The question is arithmetic; using the calculator.");
    for e in &mut evs[2..4] {
        e["call_id"] = json!(call_id);
        e["tool"] = json!("calculator");
    }
    evs[2]["arguments"] = json!({"expression": "12*(3+4)"});
    evs[3]["result"] = json!(84);
    evs[3]["duration_ms"] = json!(0);
    evs[4]["delta"] = json!("12*(3+4) = 84");
    evs[5]["status"] = json!("ok");
    evs[5]["message"] = json!({"id": new_id("m_"), "content": "12*(3+4) = 84"});
    Run {
        ack,
        events: evs.into_iter().map(frame).collect(),
    }
}
