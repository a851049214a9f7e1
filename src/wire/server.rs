//! What the session itself sends in `portcullis.v1` (docs/PROTOCOL.md §2): the greeting,
//! replies and notices. Events are not built here: they come sealed from the store
//! ([`super::seal`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::client::PROTOCOL;

/// What `connection_established` tells a client about its connection.
#[derive(Debug, Clone, Copy)]
pub struct Established<'a> {
    /// This connection's id (`c_…`).
    pub connection_id: &'a str,
    /// The verified user.
    pub user_id: &'a str,
    /// How the connection authenticated (`none`, `jwt`, …).
    pub auth: &'a str,
    /// How often the server pings.
    pub heartbeat_ms: u64,
    /// When the token expires, if it does.
    pub token_expires_at: Option<&'a DateTime<Utc>>,
    /// `websocket.max_message_bytes`.
    pub max_message_bytes: usize,
    /// `websocket.messages_per_minute`.
    pub messages_per_minute: u32,
}

/// `connection_established`, the first message of every connection.
pub fn connection_established(e: &Established<'_>) -> String {
    json!({
        "type": "connection_established",
        "protocol": PROTOCOL,
        "connection_id": e.connection_id,
        "user_id": e.user_id,
        "auth": e.auth,
        "server_time": now_rfc3339(),
        "heartbeat_ms": e.heartbeat_ms,
        "token_expires_at": e.token_expires_at.map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)),
        "limits": { "max_message_bytes": e.max_message_bytes, "messages_per_minute": e.messages_per_minute },
    })
    .to_string()
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An `error` message.
pub fn error(code: &str, message: &str, ref_id: Option<&str>, retryable: bool) -> String {
    let mut v =
        json!({ "type": "error", "code": code, "message": message, "retryable": retryable });
    if let Some(r) = ref_id {
        v["ref_id"] = Value::from(r);
    }
    v.to_string()
}

/// A `pong`.
pub fn pong() -> String {
    json!({ "type": "pong", "server_time": now_rfc3339() }).to_string()
}

/// An `ack`.
pub fn ack(id: &str, thread_id: &str, message_id: &str, run_id: &str) -> String {
    // Once per message: written directly, keys in the order `json!` would sort them.
    super::json::string_object(&[
        ("id", id),
        ("message_id", message_id),
        ("run_id", run_id),
        ("thread_id", thread_id),
        ("type", "ack"),
    ])
}

/// `token_expiring`.
pub fn token_expiring(expires_at: &DateTime<Utc>) -> String {
    json!({ "type": "token_expiring", "expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Secs, true) }).to_string()
}

/// `auth_refreshed` (portcullis addition, see docs/PROTOCOL.md): the refresh took.
pub fn auth_refreshed(expires_at: Option<&DateTime<Utc>>) -> String {
    json!({ "type": "auth_refreshed", "token_expires_at": expires_at.map(|e| e.to_rfc3339_opts(SecondsFormat::Secs, true)) }).to_string()
}

#[cfg(test)]
mod ack_tests {
    use super::*;

    #[test]
    fn ack_is_what_json_writes() {
        let (id, t, m, r) = ("c \"1\" \\ \n ✓", "t_1", "m_1", "r_1");
        assert_eq!(
            ack(id, t, m, r),
            json!({ "type": "ack", "id": id, "thread_id": t, "message_id": m, "run_id": r })
                .to_string()
        );
    }
}
