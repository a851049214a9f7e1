//! An agent's `fallback`: when its model is unavailable (connect errors, 429 or 5xx after
//! the retries) before it streamed anything, the step goes to the fallback agent's model
//! (which may have a fallback of its own). A model that failed midway is not replaced: its
//! partial answer was already sent.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use super::provider::{Chunk, Provider, ProviderError, ProviderRequest};

/// `primary`, or `secondary` when `primary` fails before its first chunk.
pub struct Fallback {
    primary: Arc<dyn Provider>,
    secondary: Arc<dyn Provider>,
    /// The fallback agent's name, for logs.
    to: String,
}

impl Fallback {
    /// `primary` falling back to the agent `to`'s provider `secondary`.
    pub fn new(primary: Arc<dyn Provider>, secondary: Arc<dyn Provider>, to: &str) -> Self {
        Self {
            primary,
            secondary,
            to: to.to_string(),
        }
    }
}

impl Provider for Fallback {
    fn kind(&self) -> &'static str {
        self.primary.kind()
    }

    fn model(&self) -> &str {
        self.primary.model()
    }

    fn stream<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxStream<'a, Result<Chunk, ProviderError>> {
        let start = async move {
            let mut primary = self.primary.stream(request);
            match primary.next().await {
                Some(Err(error)) if error.wants_fallback() => {
                    tracing::warn!(code = error.code, fallback = %self.to, "model unavailable; its fallback answers");
                    self.secondary.stream(request)
                }
                Some(first) => stream::once(async { first }).chain(primary).boxed(),
                None => stream::empty().boxed(),
            }
        };
        stream::once(start).flatten().boxed()
    }
}
