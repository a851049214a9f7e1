//! Logging setup: JSON lines in staging and production, readable text elsewhere.
//! Nothing here or anywhere else logs a token or a secret; fields are structured
//! (`user_id`, `%error`) so log pipelines can filter on them.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| EnvFilter::new(directives(&config.log_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// The configured level, with the MCP SDK silenced unless the level names it: `rmcp` logs
/// the server's URL (which may carry a credential in its query) at ERROR on every failed
/// connection attempt, and `agent::tools::mcp` already logs each failure without it.
fn directives(level: &str) -> String {
    match level.contains("rmcp") {
        true => level.to_string(),
        false => format!("{level},rmcp=off"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mcp_sdk_is_silenced_unless_asked_for() {
        assert_eq!(super::directives("info"), "info,rmcp=off");
        assert_eq!(super::directives("info,rmcp=debug"), "info,rmcp=debug");
    }
}
