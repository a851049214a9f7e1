//! The declared tools in `check --online`: an `mcp` tool's server must open a session and
//! list every `allow` entry (one session through the agent's own MCP client, closed after
//! the listing); an `http` tool's URL must answer a `HEAD` below 500.

use std::time::Duration;

use super::{Outcome, Problem, unreachable, web};
use crate::config::{ToolConfig, ToolKindConfig};
use crate::keypath::kp;

const MCP_HINT: &str = "check the tool's url (the MCP server's streamable HTTP endpoint, e.g. https://host/mcp) and that the server runs";

/// Checks one declaration; `limit` bounds the whole exchange.
pub async fn tool(name: &str, t: &ToolConfig, limit: Duration) -> Outcome {
    match &t.kind {
        ToolKindConfig::Http { .. } => web::head(&t.url, limit, None).await,
        ToolKindConfig::Mcp { allow } => mcp(name, &t.url, allow, limit).await,
    }
}

async fn mcp(name: &str, url: &str, allow: &[String], limit: Duration) -> Outcome {
    let client = match web::client(limit, None) {
        Ok(c) => c,
        Err(e) => return unreachable(e, MCP_HINT),
    };
    let offered = match crate::agent::offered_tools(url, client, limit).await {
        Ok(o) => o,
        Err(e) => return unreachable(e, MCP_HINT),
    };
    let problems = allow
        .iter()
        .enumerate()
        .filter(|(_, a)| !offered.contains(a))
        .map(|(i, a)| Problem {
            path: Some(kp(&format!("tools.{name}.allow[{i}]"))),
            ..Problem::new(
                "E_MCP_TOOL_MISSING",
                format!(
                    "the MCP server does not offer `{a}` (it offers {})",
                    offered.len()
                ),
                format!(
                    "remove `{a}` from allow or fix its spelling; the server offers: {}",
                    offered
                        .iter()
                        .take(12)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
        .collect();
    Outcome {
        detail: format!(
            "tools/list: {} offered, {} of {} allowed found",
            offered.len(),
            allow.iter().filter(|a| offered.contains(a)).count(),
            allow.len()
        ),
        problems,
    }
}
