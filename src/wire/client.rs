//! What clients send in `portcullis.v1` (docs/PROTOCOL.md §2): the messages, and the one
//! parser the server reads them with.

use serde::Deserialize;
use serde_json::Value;

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
