//! `[tools.NAME] kind = "mcp"`: an MCP server over streamable HTTP (the `rmcp` SDK's
//! client). One session per declaration, process scope: a background task connects,
//! lists the server's tools and keeps the allowed ones (with the server's description and
//! input schema), then reconnects with backoff when the session ends or a call finds the
//! transport broken. Calls are `tools/call`; `isError` results, JSON-RPC errors and
//! transport failures come back as tool errors. `/ready` shows the state.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{Peer, ServiceError, ServiceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::intern::intern;
use super::tool_codes as codes;
use crate::agent::codes::{TOOL_FAILED, TOOL_TIMEOUT};
use crate::agent::context::RunContext;
use crate::agent::event::ErrorInfo;
use crate::agent::provider::ToolSpec;
use crate::agent::tools::Tool;

/// First and longest wait between connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// One allowed tool as the server listed it.
#[derive(Debug, Clone)]
struct Listed {
    description: &'static str,
    parameters: Value,
}

#[derive(Default)]
struct State {
    peer: Option<Peer<RoleClient>>,
    listed: HashMap<String, Listed>,
    missing: Vec<String>,
    error: Option<String>,
    attempts: u64,
}

/// The state `/ready` reports for one MCP server.
#[derive(Debug, Clone, Serialize)]
pub struct McpStatus {
    /// The declaration's name (`[tools.NAME]`).
    pub name: String,
    /// A session is open and the tools were listed.
    pub connected: bool,
    /// Allowed tools the server lists, callable.
    pub tools: Vec<String>,
    /// Allowed tools the server does not list (calls fail with `TOOL_UNAVAILABLE`).
    pub missing: Vec<String>,
    /// Why the last connection attempt failed (no URL in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Connection attempts so far.
    pub attempts: u64,
}

/// One MCP server declaration: its session and what it listed. Process scope.
pub struct McpServer {
    name: String,
    url: String,
    allow: Vec<String>,
    timeout: Duration,
    max_bytes: u64,
    client: reqwest::Client,
    state: RwLock<State>,
    /// A call found the transport broken: reconnect now.
    broken: Notify,
}

impl McpServer {
    pub(super) fn new(
        name: &str,
        url: &str,
        allow: &[String],
        timeout: Duration,
        max_bytes: u64,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_string(),
            url: url.to_string(),
            allow: allow.to_vec(),
            timeout,
            max_bytes,
            client,
            state: RwLock::new(State::default()),
            broken: Notify::new(),
        }
    }

    /// The state for `/ready`.
    pub fn status(&self) -> McpStatus {
        let state = self.state.read().expect("mcp state lock");
        let mut tools: Vec<String> = state.listed.keys().cloned().collect();
        tools.sort();
        McpStatus {
            name: self.name.clone(),
            connected: state.peer.is_some(),
            tools,
            missing: state.missing.clone(),
            error: state.error.clone(),
            attempts: state.attempts,
        }
    }

    /// Connects, lists, and keeps the session until shutdown, reconnecting with backoff.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delay = BACKOFF.0;
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = tokio::time::timeout(self.timeout.max(BACKOFF.0), self.connect()) => attempt,
            };
            match attempt.unwrap_or_else(|_| Err("no answer in time".into())) {
                Ok(running) => {
                    delay = BACKOFF.0;
                    let cancel = running.cancellation_token();
                    tokio::select! {
                        () = shutdown.cancelled() => {
                            cancel.cancel();
                            return;
                        }
                        _ = running.waiting() => {}
                        () = self.broken.notified() => cancel.cancel(),
                    }
                    self.down("the session ended");
                }
                Err(error) => self.down(&error),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(BACKOFF.1);
        }
    }

    fn down(&self, error: &str) {
        tracing::warn!(tool = %self.name, %error, "MCP server not reachable; retrying");
        let mut state = self.state.write().expect("mcp state lock");
        state.peer = None;
        state.error = Some(error.to_string());
    }

    /// One session: initialize, list every tool, keep the allowed ones.
    async fn connect(&self) -> Result<RunningService<RoleClient, ClientConfig>, String> {
        self.state.write().expect("mcp state lock").attempts += 1;
        let (running, listed) = open(&self.url, self.client.clone(), self.max_bytes).await?;
        let mut found = HashMap::new();
        for tool in listed {
            if self.allow.iter().any(|a| **a == *tool.name) {
                let description = tool.description.as_deref().unwrap_or("");
                found.insert(
                    tool.name.to_string(),
                    Listed {
                        description: intern(description),
                        parameters: Value::Object((*tool.input_schema).clone()),
                    },
                );
            }
        }
        let missing: Vec<String> = self
            .allow
            .iter()
            .filter(|a| !found.contains_key(*a))
            .cloned()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(tool = %self.name, ?missing, "the MCP server does not list these allowed tools");
        }
        tracing::info!(tool = %self.name, tools = found.len(), "MCP server connected");
        let mut state = self.state.write().expect("mcp state lock");
        state.peer = Some(running.peer().clone());
        state.listed = found;
        state.missing = missing;
        state.error = None;
        Ok(running)
    }

    async fn call(&self, name: &str, arguments: Value) -> Result<Value, ErrorInfo> {
        let unavailable = |why: String| {
            ErrorInfo::new(
                codes::TOOL_UNAVAILABLE,
                format!(
                    "`{name}` (MCP server `{}`) is unavailable: {why}",
                    self.name
                ),
            )
        };
        let peer = {
            let state = self.state.read().expect("mcp state lock");
            match &state.peer {
                None => return Err(unavailable("not connected (retrying)".into())),
                Some(_) if !state.listed.contains_key(name) => {
                    return Err(unavailable("the server does not list this tool".into()));
                }
                Some(peer) => peer.clone(),
            }
        };
        let Value::Object(arguments) = arguments else {
            return Err(ErrorInfo::new(
                crate::agent::codes::INVALID_ARGUMENTS,
                format!("arguments of `{name}` must be a JSON object"),
            ));
        };
        let params = CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
        let answer = tokio::time::timeout(self.timeout, peer.call_tool(params)).await;
        match answer {
            Err(_) => Err(ErrorInfo::new(
                TOOL_TIMEOUT,
                format!(
                    "`{name}` did not answer within {} ms",
                    self.timeout.as_millis()
                ),
            )),
            Ok(Ok(result)) => self.result(name, result),
            Ok(Err(ServiceError::McpError(e))) => Err(ErrorInfo::new(
                TOOL_FAILED,
                format!("`{name}` failed: MCP error {}: {}", e.code.0, e.message),
            )),
            Ok(Err(ServiceError::Timeout { .. })) => Err(ErrorInfo::new(
                TOOL_TIMEOUT,
                format!("`{name}` did not answer in time"),
            )),
            Ok(Err(e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed))) => {
                self.broken.notify_one();
                Err(unavailable(self.cause(&e)))
            }
            Ok(Err(e)) => Err(ErrorInfo::new(
                TOOL_FAILED,
                format!("`{name}` failed: {}", self.cause(&e)),
            )),
        }
    }

    /// A result as the model gets it: the structured content when there is one, else the
    /// text blocks joined (other blocks as JSON). `isError` makes it an error.
    fn result(&self, name: &str, result: CallToolResult) -> Result<Value, ErrorInfo> {
        let text = || {
            result
                .content
                .iter()
                .map(|block| match block.as_text() {
                    Some(text) => text.text.clone(),
                    None => serde_json::to_string(block).unwrap_or_default(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        if result.is_error == Some(true) {
            return Err(ErrorInfo::new(
                TOOL_FAILED,
                format!("`{name}` reported an error: {}", text()),
            ));
        }
        let value = match &result.structured_content {
            Some(value) => value.clone(),
            None if result.content.iter().all(|b| b.as_text().is_some()) => {
                json!({"text": text()})
            }
            None => json!({"content": result.content.iter().map(content_json).collect::<Vec<_>>()}),
        };
        let size = serde_json::to_vec(&value).map_or(0, |v| v.len()) as u64;
        if size > self.max_bytes {
            return Err(ErrorInfo::new(
                codes::TOOL_RESULT_OVER_CAP,
                format!(
                    "`{name}` answered with {size} bytes, more than {} (max_result_bytes)",
                    self.max_bytes
                ),
            ));
        }
        Ok(value)
    }
}

impl McpServer {
    fn cause(&self, e: &(dyn std::error::Error + 'static)) -> String {
        cause(e, &self.url)
    }
}

/// The innermost cause of `e` ("Connection refused (os error 111)"), not the SDK's
/// chain of wrapper types; never the URL.
fn cause(e: &(dyn std::error::Error + 'static), url: &str) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    loop {
        // The transport's HTTP client error is not its `source` either.
        if let Some(StreamableHttpError::Client(client)) =
            last.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            last = client;
        } else if let Some(next) = last.source() {
            last = next;
        } else {
            break;
        }
    }
    scrub(&last.to_string(), url)
}

fn content_json(block: &ContentBlock) -> Value {
    serde_json::to_value(block).unwrap_or(Value::Null)
}

/// Opens a session (`initialize`) and lists every tool the server offers; errors never
/// quote the URL. Shared by the session task and `check --online`.
pub(crate) async fn open(
    url: &str,
    client: reqwest::Client,
    max_bytes: u64,
) -> Result<
    (
        RunningService<RoleClient, ClientConfig>,
        Vec<rmcp::model::Tool>,
    ),
    String,
> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    // Room for the JSON-RPC envelope around a result at the cap.
    config.max_json_response_size = (max_bytes as usize).saturating_add(64 * 1024);
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let running = ClientConfig::default()
        .serve(transport)
        .await
        .map_err(|e| match &e {
            // Its transport error is not its `source`: reach into it.
            ClientInitializeError::TransportError { error, .. } => cause(&*error.error, url),
            other => cause(other, url),
        })
        .map_err(|why| format!("initialize failed: {why}"))?;
    let listed = running
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {}", cause(&e, url)))?;
    Ok((running, listed))
}

/// The names an MCP server offers (one session, closed after listing), for
/// `check --online`.
pub async fn offered_tools(
    url: &str,
    client: reqwest::Client,
    limit: Duration,
) -> Result<Vec<String>, String> {
    let (running, listed) = tokio::time::timeout(limit, open(url, client, 1 << 20))
        .await
        .map_err(|_| format!("no answer within {} ms", limit.as_millis()))??;
    // The listing is all we wanted: close the session.
    let _ = running.cancel().await;
    Ok(listed.into_iter().map(|t| t.name.to_string()).collect())
}

/// Error texts may quote the URL (which may carry a credential): it is cut out.
fn scrub(text: &str, url: &str) -> String {
    text.replace(url, "<the server's url>")
}

/// One allowed tool of an MCP server, as an agent holds it.
pub struct McpTool {
    pub(super) server: Arc<McpServer>,
    pub(super) name: &'static str,
}

impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        let state = self.server.state.read().expect("mcp state lock");
        match state.listed.get(self.name) {
            Some(listed) => ToolSpec {
                name: self.name,
                description: listed.description,
                parameters: listed.parameters.clone(),
            },
            None => ToolSpec {
                name: self.name,
                description: "",
                parameters: json!({"type": "object"}),
            },
        }
    }

    fn dynamic(&self) -> bool {
        true
    }

    fn available(&self) -> bool {
        let state = self.server.state.read().expect("mcp state lock");
        state.peer.is_some() && state.listed.contains_key(self.name)
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        _: &'a RunContext,
    ) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(self.server.call(self.name, arguments))
    }
}
