//! Sending one request until the model starts answering: connect errors, 429 and 5xx
//! are retried with jittered exponential backoff (backon), `Retry-After` honoured; any
//! other status is final. Messages name the status and the server's own words (bounded),
//! never the key.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;

use super::super::event::codes;
use super::super::provider::ProviderError;
use super::Endpoint;

/// Longest `Retry-After` obeyed; a server asking for more is given up on sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Most bytes of an error body quoted in a message.
const ERROR_BODY_BYTES: usize = 512;

/// One failed attempt.
struct Attempt {
    error: ProviderError,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Posts `body` and returns the response once its status is 2xx.
pub async fn send(
    endpoint: &Endpoint,
    body: bytes::Bytes,
) -> Result<reqwest::Response, ProviderError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(endpoint.max_retries as usize)
        .with_jitter();
    let attempt = || once(endpoint, body.clone());
    attempt
        .retry(backoff)
        .when(|a: &Attempt| a.retryable)
        // Out of retries (`None`) stays out of retries.
        .adjust(|a: &Attempt, planned| {
            planned.map(|planned| a.retry_after.map_or(planned, |ra| ra.min(MAX_RETRY_AFTER)))
        })
        .notify(|a: &Attempt, wait: Duration| {
            tracing::info!(service = %endpoint.service, code = a.error.code, wait_ms = wait.as_millis() as u64, "model request failed; retrying");
        })
        .await
        .map_err(|a| a.error)
}

async fn once(endpoint: &Endpoint, body: bytes::Bytes) -> Result<reqwest::Response, Attempt> {
    let mut request = endpoint
        .client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .body(body);
    if let Some(key) = &endpoint.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = request.send().await.map_err(|e| Attempt {
        error: ProviderError::new(
            codes::MODEL_UNAVAILABLE,
            format!(
                "could not reach the model of service `{}`: {}",
                endpoint.service,
                describe(&e)
            ),
        ),
        retryable: true,
        retry_after: None,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut said = error_body(response).await;
    if let Some(key) = endpoint.api_key.as_ref().map(|k| k.expose()) {
        // The words reach the user and the store: never the key, even where a provider
        // echoes it back.
        said = said.replace(key, "[api key]");
    }
    let (code, retryable) = match status {
        StatusCode::TOO_MANY_REQUESTS => (codes::MODEL_RATE_LIMITED, true),
        s if s.is_server_error() => (codes::MODEL_UNAVAILABLE, true),
        _ => (codes::MODEL_REQUEST_REFUSED, false),
    };
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check the service's api_key_env)",
        StatusCode::NOT_FOUND => " (check the service's url and the agent's model)",
        _ => "",
    };
    Err(Attempt {
        error: ProviderError::new(
            code,
            format!(
                "the model of service `{}` answered HTTP {}{hint}: {said}",
                endpoint.service,
                status.as_u16()
            ),
        ),
        retryable,
        retry_after,
    })
}

/// The start of an error body, as text (servers explain refusals there).
async fn error_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(ERROR_BODY_BYTES);
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A reqwest error with its causes, without the URL.
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = e.source();
    }
    // reqwest names the URL in its own message; the URL is configuration, not a secret,
    // but it may carry a token in its query for some providers.
    match error.url() {
        Some(url) => text.replace(url.as_str(), "the model URL"),
        None => text,
    }
}
