//! The wire messages of `portcullis.v1` (docs/PROTOCOL.md §2): what clients may send, and
//! builders for what the session itself sends (events come stored from the run).

use serde::Deserialize;
use serde_json::{Value, json};

/// Protocol name selected as the subprotocol and announced in `connection_established`.
pub const PROTOCOL: &str = "portcullis.v1";

/// A message from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Ask an agent.
    UserMessage {
        /// Client-chosen idempotency key.
        id: String,
        /// The text.
        content: String,
        /// Thread to continue; absent starts a new one.
        #[serde(default)]
        thread_id: Option<String>,
        /// Agent name; absent picks the default.
        #[serde(default)]
        agent: Option<String>,
    },
    /// Stop a run.
    Cancel {
        /// The run.
        run_id: String,
    },
    /// Replay a thread's stored events after a seq, then continue live.
    Resume {
        /// The thread.
        thread_id: String,
        /// Replay events with a larger seq.
        #[serde(default)]
        after_seq: i64,
    },
    /// First-message auth or token refresh.
    Auth {
        /// The JWT.
        token: String,
    },
    /// Application-level ping.
    Ping {},
}

/// Why a text frame is not a valid client message.
pub enum ParseError {
    /// Not JSON.
    BadJson(String),
    /// JSON, but the `type` is unknown.
    UnknownType(String),
    /// A known type with missing or wrong fields.
    BadMessage(String),
}

/// Parses a text frame. A valid message is read straight into its type; anything else
/// is read again as a `Value` to say precisely what is wrong with it.
pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
    if let Ok(message) = serde_json::from_str(text) {
        return Ok(message);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ParseError::BadJson(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind.as_deref() {
        Some("user_message" | "cancel" | "resume" | "auth" | "ping") => {
            serde_json::from_value(value).map_err(|e| ParseError::BadMessage(e.to_string()))
        }
        Some(other) => Err(ParseError::UnknownType(other.to_string())),
        None => Err(ParseError::BadMessage(
            "a message needs a string `type`".into(),
        )),
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
    crate::json_out::string_object(&[
        ("id", id),
        ("message_id", message_id),
        ("run_id", run_id),
        ("thread_id", thread_id),
        ("type", "ack"),
    ])
}

/// `token_expiring`.
pub fn token_expiring(expires_at: &chrono::DateTime<chrono::Utc>) -> String {
    json!({ "type": "token_expiring", "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }).to_string()
}

/// `auth_refreshed` (portcullis addition, see docs/PROTOCOL.md): the refresh took.
pub fn auth_refreshed(expires_at: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    json!({ "type": "auth_refreshed", "token_expires_at": expires_at.map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) }).to_string()
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

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_valid_messages_and_names_what_is_wrong_with_the_rest() {
        assert!(matches!(
            parse(r#"{"type":"user_message","id":"c1","content":"hi"}"#),
            Ok(ClientMessage::UserMessage {
                thread_id: None,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping {})
        ));
        // A repeated key still resolves to the last one, as the parser always did.
        assert!(matches!(
            parse(r#"{"type":"cancel","run_id":"a","run_id":"b"}"#),
            Ok(ClientMessage::Cancel { run_id }) if run_id == "b"
        ));
        assert!(matches!(parse("{nope"), Err(ParseError::BadJson(_))));
        assert!(matches!(
            parse(r#"{"type":"shout"}"#),
            Err(ParseError::UnknownType(t)) if t == "shout"
        ));
        assert!(matches!(
            parse(r#"{"type":"user_message","id":"c1"}"#),
            Err(ParseError::BadMessage(m)) if m.contains("content")
        ));
        assert!(matches!(
            parse(r#"{"type":"ping","extra":1}"#),
            Err(ParseError::BadMessage(m)) if m.contains("extra")
        ));
        assert!(matches!(
            parse(r#"{"id":"x"}"#),
            Err(ParseError::BadMessage(_))
        ));
    }
}
