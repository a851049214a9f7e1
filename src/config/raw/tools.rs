//! `[tools.NAME]`: tools declared once and referenced by agents (`agents.tools`), beside
//! the built-in ones. Kind `http` POSTs the arguments as JSON to `url`; kind `mcp` calls
//! the tools an MCP server (streamable HTTP) lists, those named in `allow`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One declared tool (or, for `mcp`, one server whose allowed tools agents may call).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSection {
    /// `http` (POST the arguments as JSON, JSON result back) or `mcp` (an MCP server over
    /// streamable HTTP).
    pub kind: ToolKind,
    /// The endpoint: the tool's URL (`http`) or the MCP server's (`mcp`). https outside
    /// development and test.
    #[schemars(length(min = 1))]
    pub url: String,
    /// What the tool does, as the model is told (`http` only; MCP servers describe their
    /// own tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments (`http` only), an object schema, e.g.
    /// `{ type = "object", properties = { city = { type = "string" } } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Per-call timeout (ms); the call fails with `TOOL_TIMEOUT`. The agent's
    /// `tool_timeout_ms` also applies: the shorter wins.
    #[serde(default = "timeout_ms")]
    #[schemars(range(min = 10, max = 600_000))]
    pub timeout_ms: u64,
    /// Largest result accepted (bytes); a larger one fails with `TOOL_RESULT_OVER_CAP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16_777_216))]
    pub max_result_bytes: Option<u64>,
    /// The MCP server's tools agents may call (`mcp` only), by the server's names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// What the tool is given of the run: `user_context` (the verified user id, sent as
    /// `X-Portcullis-User`). `http` tools need it unless `needs = []`; an `mcp` server's
    /// session is process-wide, shared by every user, so it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
}

/// Kinds of declared tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    /// An HTTP endpoint.
    Http,
    /// An MCP server over streamable HTTP.
    Mcp,
}

impl ToolKind {
    /// The lowercase name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Mcp => "mcp",
        }
    }
}

/// Default largest result of a declared tool (1 MiB).
pub const MAX_RESULT_BYTES: u64 = 1 << 20;

fn timeout_ms() -> u64 {
    10_000
}
