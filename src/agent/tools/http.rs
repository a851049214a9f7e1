//! `[tools.NAME] kind = "http"`: the arguments POSTed as JSON to the tool's URL, the JSON
//! body of a 2xx answer is the result. The verified user id goes in `X-Portcullis-User`
//! (unless the declaration says `needs = []`), and nothing of the client's (no token, no
//! cookie, no address). Results are read up to `max_result_bytes`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::tool_codes as codes;
use crate::agent::context::RunContext;
use crate::agent::event::ErrorInfo;
use crate::agent::provider::ToolSpec;
use crate::agent::tools::Tool;

/// The header carrying the verified user id.
pub const USER_HEADER: &str = "x-portcullis-user";

/// One declared HTTP tool; process scope (the user comes from the run on each call).
pub struct HttpTool {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) parameters: Value,
    /// Checks the arguments before anything is sent (compiled from `parameters`).
    pub(super) validator: jsonschema::Validator,
    pub(super) url: String,
    pub(super) timeout: Duration,
    pub(super) max_bytes: u64,
    pub(super) send_user: bool,
    pub(super) client: reqwest::Client,
}

impl Tool for HttpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name,
            description: self.description,
            parameters: self.parameters.clone(),
        }
    }

    fn call<'a>(
        &'a self,
        arguments: Value,
        ctx: &'a RunContext,
    ) -> BoxFuture<'a, Result<Value, ErrorInfo>> {
        Box::pin(async move {
            self.check(&arguments)?;
            match tokio::time::timeout(self.timeout, self.post(&arguments, ctx)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(self.timed_out()),
            }
        })
    }
}

impl HttpTool {
    fn check(&self, arguments: &Value) -> Result<(), ErrorInfo> {
        let problems: Vec<String> = self
            .validator
            .iter_errors(arguments)
            .map(|e| match e.instance_path().as_str() {
                "" => e.to_string(),
                at => format!("{at}: {e}"),
            })
            .collect();
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ErrorInfo::new(
                crate::agent::codes::INVALID_ARGUMENTS,
                format!(
                    "arguments of `{}` do not match its parameters: {}",
                    self.name,
                    problems.join("; ")
                ),
            )),
        }
    }

    fn timed_out(&self) -> ErrorInfo {
        ErrorInfo::new(
            crate::agent::codes::TOOL_TIMEOUT,
            format!(
                "`{}` did not answer within {} ms",
                self.name,
                self.timeout.as_millis()
            ),
        )
    }

    async fn post(&self, arguments: &Value, ctx: &RunContext) -> Result<Value, ErrorInfo> {
        let body = serde_json::to_vec(arguments).unwrap_or_else(|_| b"{}".to_vec());
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if self.send_user {
            request = request.header(USER_HEADER, &ctx.user_id);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ErrorInfo::new(
                codes::TOOL_HTTP_STATUS,
                format!("`{}` answered HTTP {status}", self.name),
            ));
        }
        let body = self.read_capped(response).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ErrorInfo::new(
                codes::TOOL_BAD_RESULT,
                format!(
                    "`{}` answered with a body that is not JSON ({e})",
                    self.name
                ),
            )
        })
    }

    /// The body, refused as soon as it passes the cap (never buffered whole).
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ErrorInfo> {
        let too_large = || {
            ErrorInfo::new(
                codes::TOOL_RESULT_OVER_CAP,
                format!(
                    "`{}` answered with more than {} bytes (max_result_bytes)",
                    self.name, self.max_bytes
                ),
            )
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A transport failure; the message names the tool, never the URL (it may carry a
    /// credential in its query).
    fn unreachable(&self, e: &reqwest::Error) -> ErrorInfo {
        if e.is_timeout() {
            return self.timed_out();
        }
        let what = if e.is_connect() {
            "could not connect"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else {
            "the request failed"
        };
        ErrorInfo::new(
            codes::TOOL_UNAVAILABLE,
            format!("`{}` is unreachable: {what}", self.name),
        )
    }
}
