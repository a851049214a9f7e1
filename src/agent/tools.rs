//! Tools an agent can call: the built-ins named in configuration (`calculator`, `clock`,
//! `thread_history`), the declared ones (`[tools.NAME]`, kinds `http` and `mcp`, in
//! `declared.rs`) and the scripted provider's test-hook tools.
//!
//! Tools are built once per agent (process scope) and receive the [`RunContext`] on every
//! call, so anything user-specific (the thread history) comes from the run, never from the
//! tool itself.

mod calc;
mod declared;
mod http;
mod intern;
mod mcp;
pub mod tool_codes;

use std::sync::Arc;
use std::time::Duration;

use chrono::SecondsFormat;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::context::{Clock, RunContext};
use super::event::{ErrorInfo, codes};
use super::provider::ToolSpec;

pub use calc::{CalcError, evaluate};
pub use declared::{Declared, from_config};
pub use http::USER_HEADER;
pub use mcp::{McpStatus, offered_tools};

/// Names accepted in `agents.tools`.
pub const BUILTIN_TOOLS: [&str; 3] = ["calculator", "clock", "thread_history"];

/// Name of the hook tool that always fails (scripted provider, `[[fail_tool]]`).
pub const FAIL_TOOL: &str = "fail_tool";
/// Name of the hook tool that outlives any tool timeout (scripted provider, `[[slow_tool]]`).
pub const SLOW_TOOL: &str = "slow_tool";

/// Most messages `thread_history` returns, whatever the provider asks for.
const HISTORY_LIMIT_MAX: usize = 50;
/// Longest message text `thread_history` returns, in characters (longer ones end `…`).
const HISTORY_MESSAGE_MAX_CHARS: usize = 1_000;

/// A callable tool. `call` returns a boxed future so tools can live in `Arc<dyn Tool>`.
pub trait Tool: Send + Sync {
    /// Name, description and argument schema, as the provider is told.
    fn spec(&self) -> ToolSpec;

    /// Runs the tool. Errors are reported to the client and fed back to the provider;
    /// they never end the run.
    fn call<'a>(
        &'a self,
        arguments: Value,
        ctx: &'a RunContext,
    ) -> BoxFuture<'a, Result<Value, ErrorInfo>>;

    /// Whether the provider is told about it now (an MCP tool only once its server
    /// listed it).
    fn available(&self) -> bool {
        true
    }

    /// Whether `spec` and `available` can change after boot (MCP tools), so an agent
    /// asks again per step instead of keeping the specs it was built with.
    fn dynamic(&self) -> bool {
        false
    }
}

/// The built-in tool called `name`, if there is one.
pub fn builtin(name: &str, clock: &Arc<dyn Clock>) -> Option<Arc<dyn Tool>> {
    match name {
        "calculator" => Some(Arc::new(Calculator)),
        "clock" => Some(Arc::new(ClockTool(Arc::clone(clock)))),
        "thread_history" => Some(Arc::new(HistoryTool)),
        _ => None,
    }
}

/// The test-hook tools the scripted provider may call whatever the configuration says.
pub fn test_hooks() -> Vec<Arc<dyn Tool>> {
    vec![Arc::new(FailTool), Arc::new(SlowTool)]
}

fn invalid(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(codes::INVALID_ARGUMENTS, message)
}

/// JSON numbers without a spurious `.0` for whole values (`84`, not `84.0`).
fn number(value: f64) -> Value {
    // Below 2^53 every whole f64 is an exact integer, so the cast loses nothing.
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

struct Calculator;

impl Tool for Calculator {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator",
            description: "Evaluates an arithmetic expression with + - * / % ^ and parentheses.",
            parameters: json!({
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            }),
        }
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        _: &'a RunContext,
    ) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(async move {
            let expression = arguments
                .get("expression")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`expression` must be a string"))?;
            let value = evaluate(expression)
                .map_err(|error| ErrorInfo::new(error.code(), error.to_string()))?;
            Ok(json!({"expression": expression, "value": number(value)}))
        })
    }
}

struct ClockTool(Arc<dyn Clock>);

impl Tool for ClockTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "clock",
            description: "Returns the current date and time in UTC (RFC 3339).",
            parameters: json!({"type": "object", "properties": {}}),
        }
    }

    fn call<'a>(&'a self, _: Value, _: &'a RunContext) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        let now = self.0.now().to_rfc3339_opts(SecondsFormat::Secs, true);
        Box::pin(async move { Ok(json!({"now": now})) })
    }
}

struct HistoryTool;

impl Tool for HistoryTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "thread_history",
            description: "Returns the most recent messages of the current thread, oldest first.",
            parameters: json!({
                "type": "object",
                "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": HISTORY_LIMIT_MAX}},
            }),
        }
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        ctx: &'a RunContext,
    ) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(async move {
            let limit = match arguments.get("limit") {
                None | Some(Value::Null) => 10,
                Some(value) => value
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| invalid("`limit` must be a positive integer"))?
                    .min(HISTORY_LIMIT_MAX as u64) as usize,
            };
            let messages = ctx
                .history
                .recent_messages(limit)
                .await
                .map_err(|message| ErrorInfo::new(codes::TOOL_FAILED, message))?;
            // Each message shortened, so the result stays small whatever the thread holds.
            let messages: Vec<Value> = messages
                .into_iter()
                .map(|(role, content)| {
                    let content = match content.char_indices().nth(HISTORY_MESSAGE_MAX_CHARS) {
                        Some((at, _)) => format!("{}…", &content[..at]),
                        None => content,
                    };
                    json!({"role": role, "content": content})
                })
                .collect();
            Ok(json!({"messages": messages}))
        })
    }
}

/// Test hook: always fails, so integration tests can see a tool error fed back.
struct FailTool;

impl Tool for FailTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: FAIL_TOOL,
            description: "Test hook: always fails.",
            parameters: json!({"type": "object", "properties": {}}),
        }
    }

    fn call<'a>(&'a self, _: Value, _: &'a RunContext) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(async {
            Err(ErrorInfo::new(
                codes::TOOL_FAILED,
                "fail_tool always fails (scripted provider test hook)",
            ))
        })
    }
}

/// Test hook: sleeps far longer than any allowed `tool_timeout` (at most ten minutes).
struct SlowTool;

impl Tool for SlowTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: SLOW_TOOL,
            description: "Test hook: outlives its timeout.",
            parameters: json!({"type": "object", "properties": {}}),
        }
    }

    fn call<'a>(&'a self, _: Value, _: &'a RunContext) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(json!({"slept_s": 3600}))
        })
    }
}

#[cfg(test)]
mod tests;
