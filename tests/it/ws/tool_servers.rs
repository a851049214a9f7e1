//! Local servers the declared tools call in the tests: an HTTP tool server (hyper, port 0)
//! that records every request's headers and body, and an MCP server built on `rmcp`'s
//! server side (streamable HTTP, port 0). Both stop when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request the HTTP tool server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The HTTP tool server. Paths: `/weather` answers from the body and the user header,
/// `/broken` 500, `/slow` after 5 s, `/big` 8 KiB of JSON, `/notjson` plain text.
pub struct HttpTools {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpTools {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpTools {
    pub async fn start() -> HttpTools {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tools");
        let addr = listener.local_addr().expect("tools address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&recorded);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let log = Arc::clone(&log);
                let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&log)));
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        HttpTools {
            addr,
            recorded,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Recorded>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = bytes
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let recorded = Recorded {
        path: path.clone(),
        headers,
        body: body.clone(),
    };
    let user = recorded.header("x-portcullis-user").map(str::to_string);
    log.lock().expect("recorded").push(recorded);
    let json = |status: StatusCode, value: Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .expect("response")
    };
    Ok(match path.as_str() {
        "/weather" => json(
            StatusCode::OK,
            json!({"city": body["city"], "temp_c": 21, "asked_by": user}),
        ),
        "/broken" => json(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "down"})),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, json!({}))
        }
        "/big" => json(StatusCode::OK, json!({"blob": "x".repeat(8192)})),
        "/notjson" => Response::new(Full::new(Bytes::from_static(b"sunny, 21 degrees"))),
        _ => json(StatusCode::NOT_FOUND, json!({"error": "no such tool"})),
    })
}

/// The MCP server's tools: `search_docs` (text result), `lookup` (structured result),
/// `failing` (an `isError` result), `rpc_error` (a JSON-RPC error), `slow_search` (5 s),
/// `secret_tool` (never allowed by the tests).
#[derive(Clone, Default)]
pub struct DocsServer;

fn object(value: Value) -> Arc<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("schemas are objects"),
    }
}

impl ServerHandler for DocsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let query = object(json!({
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        }));
        let none = object(json!({"type": "object", "properties": {}}));
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "search_docs",
                "Searches the product docs",
                Arc::clone(&query),
            ),
            Tool::new("lookup", "Looks up a page by id", Arc::clone(&none)),
            Tool::new("failing", "Always reports an error", Arc::clone(&none)),
            Tool::new(
                "rpc_error",
                "Answers with a JSON-RPC error",
                Arc::clone(&none),
            ),
            Tool::new("slow_search", "Takes five seconds", Arc::clone(&query)),
            Tool::new("secret_tool", "Not for agents", none),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match &*request.name {
            "search_docs" => CallToolResult::success(vec![ContentBlock::text(format!(
                "2 pages match {}",
                args.get("query").and_then(Value::as_str).unwrap_or("?")
            ))]),
            "lookup" => CallToolResult::structured(json!({"id": 7, "title": "Install"})),
            "failing" => CallToolResult::error(vec![ContentBlock::text("the index is offline")]),
            "rpc_error" => {
                return Err(ErrorData::invalid_params("query too short", None));
            }
            "slow_search" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                CallToolResult::success(vec![ContentBlock::text("late")])
            }
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}

/// A running MCP server on `addr`, path `/mcp`.
pub struct McpServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl McpServer {
    /// Serves on a free port.
    pub async fn start() -> McpServer {
        McpServer::start_on(TcpListener::bind("127.0.0.1:0").await.expect("bind mcp")).await
    }

    /// Serves on `listener`.
    pub async fn start_on(listener: TcpListener) -> McpServer {
        let addr = listener.local_addr().expect("mcp address");
        let service: StreamableHttpService<DocsServer, LocalSessionManager> =
            StreamableHttpService::new(
                || Ok(DocsServer),
                Default::default(),
                StreamableHttpServerConfig::default(),
            );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        McpServer { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}
