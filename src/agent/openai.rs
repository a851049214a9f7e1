//! The `openai` provider: any OpenAI-compatible chat-completions API (OpenAI, vLLM,
//! Ollama, llama.cpp's server, LiteLLM, ...), streamed.
//!
//! Each step is one `POST {url}/chat/completions` with `stream: true` and
//! `stream_options.include_usage` ([`body`]), sent with retries before the first byte
//! ([`send`]), read as SSE (`eventsource-stream`) and decoded into chunks ([`decode`]).
//! Dropping the returned stream drops the HTTP response, which closes the connection:
//! that is how cancellation and the run timeout stop the model at once.
//!
//! Events that are already in the socket buffer when one is read are merged (consecutive
//! deltas, consecutive thinking): a fast model then costs one stored event per network
//! read rather than one per token, and clients concatenate deltas anyway.

mod body;
mod decode;
mod send;

use std::sync::Arc;

use eventsource_stream::Eventsource;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt};

use super::event::codes;
use super::provider::{Chunk, Provider, ProviderError, ProviderRequest};
use crate::config::{Secret, ServiceConfig};

pub use body::Params;
use decode::Decoder;

/// Most bytes of one response (a step); a server streaming more is cut off
/// (`MODEL_BAD_RESPONSE`), so a broken one cannot fill memory with a line that never ends.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Most SSE events merged into one batch of chunks.
const MERGE_EVENTS: usize = 256;

/// Where and how requests go: built once per agent, holding the service's one client.
pub struct Endpoint {
    client: reqwest::Client,
    /// `{url}/chat/completions`.
    url: String,
    api_key: Option<Secret>,
    max_retries: u32,
    /// Service name, for messages.
    service: String,
}

impl Endpoint {
    /// The client for service `name`: its connect and read timeouts, the system's trust
    /// store, no redirects; plain `http://` only where the validator allowed it. No
    /// request is made.
    pub fn new(name: &str, svc: &ServiceConfig, client: reqwest::Client) -> Self {
        let base = svc.url.as_ref().map(|u| u.expose()).unwrap_or_default();
        Self {
            client,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            api_key: svc.api_key.clone().filter(Secret::is_set),
            max_retries: svc.max_retries,
            service: name.to_string(),
        }
    }

    /// The HTTP client of one `openai` service (process scope): the system's trust store
    /// plus the service's `ca_file`.
    pub fn client(svc: &ServiceConfig) -> Result<reqwest::Client, String> {
        let roots = crate::tls::client_roots(svc.ca_file.as_deref()).map_err(|e| e.to_string())?;
        crate::tls::http_client(roots)?
            .connect_timeout(svc.connect_timeout)
            .read_timeout(svc.read_timeout)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// An agent's model behind an OpenAI-compatible endpoint.
pub struct OpenAiProvider {
    endpoint: Arc<Endpoint>,
    params: Params,
}

impl OpenAiProvider {
    /// A provider for `params.model` at `endpoint`.
    pub fn new(endpoint: Arc<Endpoint>, params: Params) -> Self {
        Self { endpoint, params }
    }
}

impl Provider for OpenAiProvider {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        &self.params.model
    }

    fn stream<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxStream<'a, Result<Chunk, ProviderError>> {
        let body = body::body(&self.params, request.messages, request.tools);
        let start = async move {
            match send::send(&self.endpoint, body).await {
                Ok(response) => chunks(response, &self.params.model).boxed(),
                Err(error) => stream::once(async { Err(error) }).boxed(),
            }
        };
        stream::once(start).flatten().boxed()
    }
}

/// The response body as chunks, ending after `Finished` or the first error.
fn chunks(
    response: reqwest::Response,
    model: &str,
) -> impl futures_util::Stream<Item = Result<Chunk, ProviderError>> + Send + use<> {
    let mut received = 0usize;
    let capped = response
        .bytes_stream()
        .map(move |item| match item {
            Err(e) => Err(Broken::Read(e)),
            Ok(bytes) => {
                received += bytes.len();
                match received > MAX_RESPONSE_BYTES {
                    true => Err(Broken::TooLarge),
                    false => Ok(bytes),
                }
            }
        })
        .boxed();
    let events = capped.eventsource();
    let state = (events, Decoder::new(model), false);
    stream::unfold(state, |(mut events, mut decoder, over)| async move {
        if over {
            return None;
        }
        let mut out = Vec::new();
        let result = batch(&mut events, &mut decoder, &mut out).await;
        let mut items: Vec<Result<Chunk, ProviderError>> = merge(out).into_iter().map(Ok).collect();
        let over = match result {
            Ok(ended) => ended,
            Err(error) => {
                items.push(Err(error));
                true
            }
        };
        Some((stream::iter(items), (events, decoder, over)))
    })
    .flatten()
}

/// Why the body could not be read to its end.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("{}", send::describe(.0))]
    Read(reqwest::Error),
    #[error("the response exceeded {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// Reads one event and every event already buffered behind it; true when the step
/// ended (`Finished` pushed).
async fn batch<S>(
    events: &mut S,
    decoder: &mut Decoder,
    out: &mut Vec<Chunk>,
) -> Result<bool, ProviderError>
where
    S: futures_util::Stream<
            Item = Result<eventsource_stream::Event, eventsource_stream::EventStreamError<Broken>>,
        > + Unpin,
{
    let mut next = events.next().await;
    for _ in 0..MERGE_EVENTS {
        match next {
            None => {
                decoder.finish(out)?;
                return Ok(true);
            }
            Some(Err(error)) => return Err(broken(error)),
            Some(Ok(event)) => {
                decoder.data(&event.data, out)?;
                if decoder.done() {
                    return Ok(true);
                }
            }
        }
        match events.next().now_or_never() {
            Some(item) => next = item,
            None => return Ok(false),
        }
    }
    Ok(false)
}

fn broken(error: eventsource_stream::EventStreamError<Broken>) -> ProviderError {
    use eventsource_stream::EventStreamError as E;
    match error {
        E::Transport(Broken::TooLarge) => {
            ProviderError::new(codes::MODEL_BAD_RESPONSE, Broken::TooLarge.to_string())
        }
        E::Transport(e) => ProviderError::new(
            codes::MODEL_STREAM_BROKEN,
            format!("the model's stream broke off: {e}"),
        ),
        E::Utf8(_) | E::Parser(_) => ProviderError::new(
            codes::MODEL_BAD_RESPONSE,
            format!("the model's stream is not valid server-sent events: {error}"),
        ),
    }
}

/// Merges consecutive deltas and consecutive thinking texts.
fn merge(chunks: Vec<Chunk>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        match (out.last_mut(), chunk) {
            (Some(Chunk::Delta(text)), Chunk::Delta(more))
            | (Some(Chunk::Thinking(text)), Chunk::Thinking(more)) => text.push_str(&more),
            (_, chunk) => out.push(chunk),
        }
    }
    out
}
