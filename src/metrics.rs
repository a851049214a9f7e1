//! Process metrics in Prometheus text format: connections, auth failures by reason,
//! bypass uses, events sent, messages, run durations, HTTP request durations, store call
//! durations. Built once
//! at boot (process scope). Served as OpenMetrics to scrapers that ask for it, and as text
//! format 0.0.4 (`text.rs`) to everything else.

mod store_calls;
mod text;

pub use store_calls::{CallTimer, StoreCalls, StoreOp};

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::wire::EventKind;

/// Label with one `reason` / `rule` / `type` / `status` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// The label value.
    pub kind: String,
}

fn label(kind: &str) -> Label {
    Label {
        kind: kind.to_string(),
    }
}

/// Labels of an HTTP request: the route's handler and the response status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// Handler name as written in `[[routes]]` (`websocket` for upgrades).
    pub handler: &'static str,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of a model token count: the agent, the model that answered, and `prompt` or
/// `completion`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    /// Agent name.
    pub agent: String,
    /// Model as the server reported it.
    pub model: String,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// OpenMetrics' media type, which Prometheus asks for first when it scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for every other reader (promtool, agents, curl).
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections_open: Gauge,
    /// Authenticated connections since start.
    pub connections_total: Counter,
    /// Refused authentications by reason code.
    pub auth_failures: Family<Label, Counter>,
    /// Connections admitted by bypass rules, by rule.
    pub bypass_uses: Family<Label, Counter>,
    /// Messages sent to clients by type.
    pub events_sent: Family<Label, Counter>,
    /// Accepted user messages.
    pub user_messages: Counter,
    /// Run durations by final status.
    pub run_seconds: Family<Label, Histogram>,
    /// Bytes waiting in connection queues, total and largest (set when scraped).
    pub send_queue_bytes: Gauge,
    /// The largest single connection queue, in bytes (set when scraped).
    pub send_queue_bytes_max: Gauge,
    /// Connections closed as slow consumers.
    pub slow_consumers: Counter,
    /// HTTP request durations by handler and status.
    pub http_requests: Family<HttpLabel, Histogram>,
    /// Store call durations by op, handed to the store when it connects.
    pub store_calls: StoreCalls,
    /// Model tokens by agent, model and kind.
    pub model_tokens: Family<TokenLabel, Counter>,
    /// `events_sent` counters of the [`SENT_KINDS`], looked up once each: `sent` runs for
    /// every frame, and a family lookup allocates the label and hashes it.
    sent_cache: [OnceLock<Counter>; SENT_KINDS.len()],
}

/// The kinds `sent` is called with on every chat run (the writer's frame kinds).
const SENT_KINDS: [&str; 8] = [
    "reply",
    "replay",
    EventKind::AgentStarted.as_str(),
    EventKind::AgentThinking.as_str(),
    EventKind::ToolExecuting.as_str(),
    EventKind::ToolCompleted.as_str(),
    EventKind::AgentResponse.as_str(),
    EventKind::AgentCompleted.as_str(),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let connections_open = Gauge::default();
        let connections_total = Counter::default();
        let auth_failures = Family::<Label, Counter>::default();
        let bypass_uses = Family::<Label, Counter>::default();
        let events_sent = Family::<Label, Counter>::default();
        let user_messages = Counter::default();
        let run_seconds = Family::<Label, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
        });
        let slow_consumers = Counter::default();
        let send_queue_bytes = Gauge::default();
        let send_queue_bytes_max = Gauge::default();
        registry.register(
            "send_queue_bytes",
            "Bytes waiting in this node's WebSocket send queues",
            send_queue_bytes.clone(),
        );
        registry.register(
            "send_queue_bytes_max",
            "Bytes waiting in the fullest WebSocket send queue",
            send_queue_bytes_max.clone(),
        );
        let http_requests = Family::<HttpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request durations by handler and status code",
            http_requests.clone(),
        );
        let store_family = Family::<Label, Histogram>::new_with_constructor(store_calls::histogram);
        let store_calls = StoreCalls::new(&store_family);
        registry.register(
            "store_call_duration_seconds",
            "Store call durations by operation (label kind), as the caller waited",
            store_family,
        );
        registry.register(
            "connections_open",
            "Open WebSocket connections",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Authenticated WebSocket connections",
            connections_total.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused authentications by reason (label kind)",
            auth_failures.clone(),
        );
        registry.register(
            "bypass_uses",
            "Connections admitted by a bypass rule (label kind = rule)",
            bypass_uses.clone(),
        );
        registry.register(
            "events_sent",
            "Messages sent to clients by type (label kind)",
            events_sent.clone(),
        );
        registry.register(
            "user_messages",
            "Accepted user messages",
            user_messages.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Agent run durations by final status (label kind)",
            run_seconds.clone(),
        );
        let model_tokens = Family::<TokenLabel, Counter>::default();
        registry.register(
            "model_tokens",
            "Tokens the models reported, by agent, model and kind (prompt, completion)",
            model_tokens.clone(),
        );
        registry.register(
            "slow_consumers",
            "Connections closed with 4509",
            slow_consumers.clone(),
        );
        Self {
            registry,
            connections_open,
            connections_total,
            auth_failures,
            bypass_uses,
            events_sent,
            user_messages,
            run_seconds,
            slow_consumers,
            send_queue_bytes,
            send_queue_bytes_max,
            http_requests,
            store_calls,
            model_tokens,
            sent_cache: Default::default(),
        }
    }

    /// Adds a component's own metrics (the shared rate limit's `portcullis_rate_limiter_*`,
    /// the key source's `portcullis_jwks_*`, the Redis bus's `portcullis_bus_*`) before
    /// `Metrics` is shared. The component registers itself, so this module depends on none.
    pub fn add(&mut self, register: impl FnOnce(&mut Registry)) {
        register(&mut self.registry);
    }

    /// Counts a refused authentication.
    pub fn auth_failure(&self, code: &str) {
        self.auth_failures.get_or_create(&label(code)).inc();
    }

    /// Counts a bypass use.
    pub fn bypass_use(&self, rule: &str) {
        self.bypass_uses.get_or_create(&label(rule)).inc();
    }

    /// Counts a message sent.
    pub fn sent(&self, kind: &str) {
        match SENT_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.sent_cache[i]
                .get_or_init(|| self.events_sent.get_or_create(&label(kind)).clone())
                .inc(),
            None => self.events_sent.get_or_create(&label(kind)).inc(),
        };
    }

    /// Records a finished run.
    pub fn run_finished(&self, status: &str, seconds: f64) {
        self.run_seconds
            .get_or_create(&label(status))
            .observe(seconds);
    }

    /// Records one HTTP request.
    pub fn http_request(&self, handler: &'static str, code: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabel { handler, code })
            .observe(took.as_secs_f64());
    }

    /// Counts a run's model tokens.
    pub fn model_tokens(&self, agent: &str, model: &str, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            let label = TokenLabel {
                agent: agent.to_string(),
                model: model.to_string(),
                kind,
            };
            self.model_tokens.get_or_create(&label).inc_by(n);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the format `accept` asks for, with its content type: OpenMetrics
    /// when the scraper accepts it, text format 0.0.4 otherwise.
    pub fn exposition(&self, accept: Option<&str>) -> (String, &'static str) {
        let openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
        match openmetrics {
            true => (self.render(), OPENMETRICS),
            false => (text::to_004(&self.render()), TEXT_004),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_counts_cached_and_other_kinds_in_the_family() {
        let m = Metrics::new();
        assert!(
            !m.render().contains("kind=\"agent_started\""),
            "no series before use"
        );
        m.sent("agent_started");
        m.sent("agent_started");
        m.sent("something_else");
        let text = m.render();
        assert!(
            text.contains("portcullis_events_sent_total{kind=\"agent_started\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_events_sent_total{kind=\"something_else\"} 1"),
            "{text}"
        );
    }
}
