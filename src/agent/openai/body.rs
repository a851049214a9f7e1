//! The JSON body of one `POST {url}/chat/completions` request: the conversation in the
//! chat-completions message format (assistant `tool_calls`, one `role: "tool"` message per
//! call answered by `tool_call_id`), the tools as `function`s, and streaming with usage.

use serde_json::{Map, Value, json};

use super::super::provider::{ChatMessage, ToolCall, ToolSpec};

/// The per-agent parameters of every request.
#[derive(Debug, Clone)]
pub struct Params {
    /// `model`.
    pub model: String,
    /// `max_tokens`, when set.
    pub max_output_tokens: Option<u32>,
    /// `temperature`, when set.
    pub temperature: Option<f64>,
}

/// The request body, serialized once (retries resend the same bytes).
pub fn body(params: &Params, messages: &[ChatMessage], tools: &[ToolSpec]) -> bytes::Bytes {
    let mut body = Map::new();
    body.insert("model".into(), params.model.clone().into());
    body.insert(
        "messages".into(),
        messages.iter().map(message).collect::<Vec<_>>().into(),
    );
    body.insert("stream".into(), true.into());
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if !tools.is_empty() {
        body.insert(
            "tools".into(),
            tools.iter().map(tool).collect::<Vec<_>>().into(),
        );
    }
    if let Some(max) = params.max_output_tokens {
        body.insert("max_tokens".into(), max.into());
    }
    if let Some(t) = params.temperature {
        body.insert("temperature".into(), t.into());
    }
    // Serializing a Value cannot fail.
    bytes::Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

fn message(m: &ChatMessage) -> Value {
    match m {
        ChatMessage::System { content } => json!({"role": "system", "content": content}),
        ChatMessage::User { content } => json!({"role": "user", "content": content}),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let mut out = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                // Servers expect `content: null` beside tool calls when there was no text.
                if content.is_empty() {
                    out["content"] = Value::Null;
                }
                out["tool_calls"] = tool_calls.iter().map(call).collect::<Vec<_>>().into();
            }
            out
        }
        ChatMessage::Tool {
            call_id, outcome, ..
        } => {
            let content = match outcome {
                Ok(result) => result.to_string(),
                Err(error) => json!({"error": error}).to_string(),
            };
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
    }
}

/// A call as the model made it: `arguments` is a JSON string; arguments the model sent
/// as text that is not JSON are sent back as they came.
fn call(c: &ToolCall) -> Value {
    let arguments = match &c.arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    };
    json!({
        "id": c.call_id,
        "type": "function",
        "function": {"name": c.name, "arguments": arguments},
    })
}

fn tool(t: &ToolSpec) -> Value {
    json!({
        "type": "function",
        "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{ErrorInfo, codes};

    #[test]
    fn a_tool_turn_is_an_assistant_message_with_calls_and_one_tool_message_per_call() {
        let params = Params {
            model: "m".into(),
            max_output_tokens: Some(64),
            temperature: Some(0.2),
        };
        let messages = [
            ChatMessage::User {
                content: "1+1?".into(),
            },
            ChatMessage::Assistant {
                content: String::new(),
                tool_calls: vec![ToolCall {
                    call_id: "c1".into(),
                    name: "calculator".into(),
                    arguments: json!({"expression": "1+1"}),
                }],
            },
            ChatMessage::Tool {
                call_id: "c1".into(),
                name: "calculator".into(),
                outcome: Err(ErrorInfo::new(codes::TOOL_FAILED, "no")),
            },
        ];
        let body: Value = serde_json::from_slice(&body(&params, &messages, &[])).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m", "stream": true, "stream_options": {"include_usage": true},
                "max_tokens": 64, "temperature": 0.2,
                "messages": [
                    {"role": "user", "content": "1+1?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "calculator", "arguments": "{\"expression\":\"1+1\"}"}}]},
                    {"role": "tool", "tool_call_id": "c1",
                     "content": "{\"error\":{\"code\":\"TOOL_FAILED\",\"message\":\"no\"}}"},
                ],
            })
        );
    }
}
