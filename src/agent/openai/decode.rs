//! Decoding the chat-completions stream: one SSE event's `data` at a time into
//! [`Chunk`]s. Content becomes `Delta`, `reasoning_content`/`reasoning` becomes `Thinking`,
//! tool calls are reassembled by `index` (the `id` and `name` come in the first fragment,
//! `arguments` in string pieces) and handed over when the step finishes, the usage chunk
//! becomes `Usage`, and `finish_reason` decides how the step ends.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::super::event::Usage;
use super::super::event::codes;
use super::super::provider::{Chunk, ProviderError, ToolCall};

/// What the decoder needs of one streamed chunk; unknown fields are ignored, as the
/// servers add their own.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// DeepSeek, vLLM and llama.cpp's reasoning field.
    #[serde(default)]
    reasoning_content: Option<String>,
    /// Ollama's and OpenRouter's reasoning field.
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Vec<CallFragment>,
}

#[derive(Deserialize)]
struct CallFragment {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionFragment>,
}

#[derive(Deserialize)]
struct FunctionFragment {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The state of one step's stream.
pub struct Decoder {
    /// Model name for usage when the server does not say.
    model: String,
    calls: BTreeMap<u32, PartialCall>,
    finish: Option<String>,
    done: bool,
}

impl Decoder {
    /// A decoder for a request to `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            calls: BTreeMap::new(),
            finish: None,
            done: false,
        }
    }

    /// True once `[DONE]` was read.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Decodes one event's `data` into `out`.
    pub fn data(&mut self, data: &str, out: &mut Vec<Chunk>) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return self.finish(out);
        }
        let wire: Wire = serde_json::from_str(data).map_err(|e| {
            ProviderError::new(
                codes::MODEL_BAD_RESPONSE,
                format!("the model sent a chunk that is not chat-completions JSON ({e})"),
            )
        })?;
        if let Some(usage) = wire.usage {
            out.push(Chunk::Usage(Usage {
                model: wire.model.unwrap_or_else(|| self.model.clone()),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            }));
        }
        for choice in wire.choices {
            if let Some(delta) = choice.delta {
                self.delta(delta, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
        }
        Ok(())
    }

    fn delta(&mut self, delta: Delta, out: &mut Vec<Chunk>) {
        let thinking = delta.reasoning_content.or(delta.reasoning);
        if let Some(text) = thinking.filter(|t| !t.is_empty()) {
            out.push(Chunk::Thinking(text));
        }
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            out.push(Chunk::Delta(text));
        }
        for fragment in delta.tool_calls {
            let call = self.calls.entry(fragment.index).or_default();
            if let Some(id) = fragment.id {
                call.id = id;
            }
            if let Some(function) = fragment.function {
                if let Some(name) = function.name {
                    call.name.push_str(&name);
                }
                if let Some(arguments) = function.arguments {
                    call.arguments.push_str(&arguments);
                }
            }
        }
    }

    /// The end of the stream (`[DONE]` or the body's end): hands over the calls, or says
    /// why the step cannot be used.
    pub fn finish(&mut self, out: &mut Vec<Chunk>) -> Result<(), ProviderError> {
        match self.finish.as_deref() {
            None if !self.done => {
                return Err(ProviderError::new(
                    codes::MODEL_STREAM_BROKEN,
                    "the model's stream ended before the answer was finished",
                ));
            }
            Some("length") => {
                return Err(ProviderError::new(
                    codes::MODEL_OUTPUT_LIMIT,
                    "the model stopped at the agent's max_output_tokens; raise it for longer answers",
                ));
            }
            Some("content_filter") => {
                return Err(ProviderError::new(
                    codes::MODEL_CONTENT_FILTERED,
                    "the model's content filter stopped the answer",
                ));
            }
            _ => {}
        }
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(ProviderError::new(
                    codes::MODEL_BAD_RESPONSE,
                    format!("the model sent tool call {index} without a function name"),
                ));
            }
            out.push(Chunk::ToolCall(ToolCall {
                call_id: match call.id.is_empty() {
                    true => format!("call_{index}"),
                    false => call.id,
                },
                name: call.name,
                arguments: arguments(call.arguments),
            }));
        }
        out.push(Chunk::Finished);
        Ok(())
    }
}

/// The reassembled argument text as JSON; text that is not JSON stays a string, so the
/// tool answers `INVALID_ARGUMENTS` and the model sees its own mistake.
fn arguments(text: String) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

#[cfg(test)]
mod tests;
