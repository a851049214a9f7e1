//! The validated `[tools.NAME]` declarations, as the agent registry builds them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::config::raw::{MAX_RESULT_BYTES, ToolKind, ToolSection, USER_CONTEXT};

/// One declared tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConfig {
    /// The declaration's name (`[tools.NAME]`), which agents list.
    pub name: String,
    /// The tool's or MCP server's URL.
    pub url: String,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Largest result accepted, in bytes.
    pub max_result_bytes: u64,
    /// What kind of tool, with its kind's keys.
    pub kind: ToolKindConfig,
}

/// Kind-specific settings of a declared tool.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolKindConfig {
    /// POST the arguments as JSON to the URL.
    Http {
        /// As the model is told.
        description: String,
        /// JSON Schema of the arguments.
        parameters: Value,
        /// Send the verified user id as `X-Portcullis-User` (`needs` has `user_context`).
        send_user: bool,
    },
    /// The allowed tools of an MCP server.
    Mcp {
        /// The server's tool names agents may call.
        allow: Vec<String>,
    },
}

/// Builds every declaration (refused values were reported by the validator; what is
/// built from them is never served).
pub fn tools(raw: &BTreeMap<String, ToolSection>) -> BTreeMap<String, ToolConfig> {
    raw.iter()
        .map(|(name, t)| (name.clone(), tool(name, t)))
        .collect()
}

fn tool(name: &str, t: &ToolSection) -> ToolConfig {
    let kind = match t.kind {
        ToolKind::Http => ToolKindConfig::Http {
            description: t.description.clone().unwrap_or_default(),
            parameters: Value::Object(t.parameters.clone().unwrap_or_default()),
            send_user: t
                .needs
                .as_ref()
                .is_none_or(|needs| needs.iter().any(|n| n == USER_CONTEXT)),
        },
        ToolKind::Mcp => ToolKindConfig::Mcp {
            allow: t.allow.clone(),
        },
    };
    ToolConfig {
        name: name.to_string(),
        url: t.url.clone(),
        timeout: Duration::from_millis(t.timeout_ms),
        max_result_bytes: t.max_result_bytes.unwrap_or(MAX_RESULT_BYTES),
        kind,
    }
}
