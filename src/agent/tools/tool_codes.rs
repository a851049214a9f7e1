//! Error codes of declared tools (`http`, `mcp`), in `tool_completed.error.code`; listed in
//! docs/PROTOCOL.md ("Codes added by tools"). Timeouts use `TOOL_TIMEOUT`, bad
//! arguments `INVALID_ARGUMENTS`, a tool's own failure `TOOL_FAILED`.

use crate::wire::ErrorCode;

/// The tool's endpoint or MCP server could not be reached (connect error, broken answer,
/// MCP session down, or an allowed tool the server does not have). Retryable.
pub const TOOL_UNAVAILABLE: &str = ErrorCode::ToolUnavailable.as_str();
/// An `http` tool answered with a non-2xx status (named in the message).
pub const TOOL_HTTP_STATUS: &str = ErrorCode::ToolHttpStatus.as_str();
/// The result passed the tool's own `max_result_bytes`: a tool error fed back to the model,
/// the run goes on (unlike `TOOL_RESULT_TOO_LARGE`, the agent's run bound, which ends it).
pub const TOOL_RESULT_OVER_CAP: &str = ErrorCode::ToolResultOverCap.as_str();
/// An `http` tool answered 2xx with a body that is not JSON.
pub const TOOL_BAD_RESULT: &str = ErrorCode::ToolBadResult.as_str();
