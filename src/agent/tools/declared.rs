//! Tools from configuration (`[tools.NAME]`): [`from_config`] builds every declaration once
//! per process, sharing one HTTP client, and the registry hands each agent the tools its
//! `tools` list names. MCP servers are connected later, in the background ([`Declared::start`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Tool;
use super::http::HttpTool;
use super::intern::intern;
use super::mcp::{McpServer, McpStatus, McpTool};
use crate::config::{ToolConfig, ToolKindConfig};

/// Every declared tool, by declaration name, and the MCP servers behind some of them.
#[derive(Default)]
pub struct Declared {
    tools: HashMap<String, Vec<Arc<dyn Tool>>>,
    servers: Vec<Arc<McpServer>>,
}

impl Declared {
    /// The tools an agent's `tools` entry `name` gives (an MCP declaration gives each of
    /// its allowed tools).
    pub fn get(&self, name: &str) -> Option<&[Arc<dyn Tool>]> {
        self.tools.get(name).map(Vec::as_slice)
    }

    /// Starts each MCP server's connection task (listing its tools) until `shutdown`.
    pub fn start(&self, shutdown: &CancellationToken) {
        for server in &self.servers {
            tokio::spawn(Arc::clone(server).run(shutdown.child_token()));
        }
    }

    /// Each MCP server's state, for `/ready`.
    pub fn mcp_status(&self) -> Vec<McpStatus> {
        self.servers.iter().map(|s| s.status()).collect()
    }
}

impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.tools.keys().collect();
        names.sort();
        f.debug_struct("Declared")
            .field("tools", &names)
            .finish_non_exhaustive()
    }
}

/// Builds every declaration, without network. `allow_http` (development and test) lets
/// the client speak plain http; elsewhere it refuses anything but https.
pub fn from_config(
    tools: &BTreeMap<String, ToolConfig>,
    allow_http: bool,
) -> Result<Declared, String> {
    let mut declared = Declared::default();
    if tools.is_empty() {
        return Ok(declared);
    }
    let client = client(allow_http)?;
    for (name, config) in tools {
        let built: Vec<Arc<dyn Tool>> = match &config.kind {
            ToolKindConfig::Http {
                description,
                parameters,
                send_user,
            } => vec![Arc::new(HttpTool {
                name: intern(name),
                description: intern(description),
                validator: validator(parameters),
                parameters: parameters.clone(),
                url: config.url.clone(),
                timeout: config.timeout,
                max_bytes: config.max_result_bytes,
                send_user: *send_user,
                client: client.clone(),
            })],
            ToolKindConfig::Mcp { allow } => {
                let server = Arc::new(McpServer::new(
                    name,
                    &config.url,
                    allow,
                    config.timeout,
                    config.max_result_bytes,
                    client.clone(),
                ));
                declared.servers.push(Arc::clone(&server));
                allow
                    .iter()
                    .map(|tool| {
                        Arc::new(McpTool {
                            server: Arc::clone(&server),
                            name: intern(tool),
                        }) as Arc<dyn Tool>
                    })
                    .collect()
            }
        };
        declared.tools.insert(name.clone(), built);
    }
    Ok(declared)
}

/// The arguments' validator. Invalid `parameters` were refused by the validator
/// (`E_TOOL_PARAMETERS`) and such a configuration is never served; the tool is still
/// built so the rest of the registry's failures are reported.
fn validator(parameters: &serde_json::Value) -> jsonschema::Validator {
    jsonschema::validator_for(parameters).unwrap_or_else(|_| {
        jsonschema::validator_for(&serde_json::json!({})).expect("the empty schema compiles")
    })
}

/// The process's one client for declared tools: rustls with the system roots, no
/// redirects (a redirect could carry the user header elsewhere), no cookies.
fn client(allow_http: bool) -> Result<reqwest::Client, String> {
    let roots = crate::tls::client_roots(None).map_err(|e| e.to_string())?;
    crate::tls::http_client(roots)?
        .https_only(!allow_http)
        .build()
        .map_err(|e| format!("the tools' HTTP client: {e}"))
}
