//! Chat submission, whatever transport carried it: a user's message is checked (at once,
//! then against a shared rate limit), stored, acknowledged and its run started. The
//! caller turns a [`Rejection`] into its own error frame; the `ack` goes to the
//! connection's queue from here, held for the run's first events (`HeldAck`), so its
//! order does not depend on the transport.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::OnceCell;

use super::{HeldAck, RunDeps, RunManager};
use crate::agent::{Agent, Registry};
use crate::bus::EventBus;
use crate::hub::{Outbound, Outbox, Pushed};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{Accepted, NewMessage, Store, StoreError};
use crate::wire::ErrorCode;
use crate::wire::server::ack;

/// What chat submission needs from the process, built once at boot.
pub struct Chat {
    /// The agents a message may ask for.
    pub agents: Arc<Registry>,
    /// Chat message rate.
    pub limiter: Arc<RateLimiter>,
    /// Where accepted messages' runs start.
    pub runs: Arc<RunManager>,
    /// The store, once connected.
    pub store: Arc<OnceCell<Store>>,
    /// Event routing, for the runs.
    pub bus: Arc<dyn EventBus>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown has begun: new messages are refused.
    pub draining: Arc<AtomicBool>,
    /// `websocket.messages_per_minute`, for the rate limit's message.
    pub messages_per_minute: u32,
    /// More than one node may share the store (`server.nodes > 1`).
    pub several_nodes: bool,
}

/// A chat message as the client sent it.
pub struct Submission {
    /// The client's id: the idempotency key, echoed in the ack and in errors.
    pub id: String,
    /// The text.
    pub content: String,
    /// The thread to post into; `None` starts one.
    pub thread_id: Option<String>,
    /// The agent asked for; `None` is the default one.
    pub agent: Option<String>,
}

/// A submission past the checks that need no wait.
pub struct Admitted {
    agent: Arc<Agent>,
    deps: RunDeps,
    /// The connection's id when the limit is shared and still to be asked.
    shared_limit: Option<String>,
}

/// What became of a stored submission: its ids.
#[derive(Debug)]
pub enum Submitted {
    /// A repeated client id: the original ids, acknowledged again; no run started.
    Duplicate(Accepted),
    /// Stored; its run started, and holds the ack for its first events.
    Started(Accepted),
}

/// Why a submission was not taken.
#[derive(Debug)]
pub enum Rejection {
    /// Refused by a check, or no such thread of the user.
    Refused {
        /// The error code.
        code: ErrorCode,
        /// What the client is told.
        message: Cow<'static, str>,
    },
    /// The store failed to take it; resending with the same id is safe.
    Store(StoreError),
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }

    /// The error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused { code, .. } => code.as_str(),
            Self::Store(e) => e.code(),
        }
    }

    /// What the client is told.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Self::Refused { message, .. } => Cow::Borrowed(message),
            Self::Store(e) => Cow::Owned(e.client_message()),
        }
    }

    /// Whether the same message may be taken when sent again (with the same id).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Refused { code, .. } => code.retryable(),
            Self::Store(e) => e.is_retryable(),
        }
    }
}

impl Chat {
    /// The checks that need no wait, in the order a client meets them: the message's
    /// shape, shutdown, the agent, the local rate limit, the store being connected.
    pub fn admit(
        &self,
        user_id: &str,
        conn_id: &str,
        sub: &Submission,
    ) -> Result<Admitted, Rejection> {
        if sub.id.is_empty() || sub.id.len() > 200 {
            let message = "`id` must be 1 to 200 characters";
            return Err(Rejection::new(ErrorCode::BadMessage, message));
        }
        if sub.content.trim().is_empty() {
            let message = "`content` must not be empty";
            return Err(Rejection::new(ErrorCode::BadMessage, message));
        }
        if self.draining.load(Ordering::Relaxed) {
            let message = "the server is shutting down; resend after reconnecting";
            return Err(Rejection::new(ErrorCode::ShuttingDown, message));
        }
        let Some(agent) = self.agents.resolve(sub.agent.as_deref()) else {
            let message = "no agent by that name; client_config lists them";
            return Err(Rejection::new(ErrorCode::UnknownAgent, message));
        };
        // A shared (Redis) limit is asked in `submit`, before the message is stored.
        let shared_limit = self.limiter.is_shared().then(|| conn_id.to_string());
        if shared_limit.is_none() && !self.limiter.allow(user_id, conn_id, Instant::now()) {
            return Err(self.rate_limited());
        }
        let Some(deps) = self.run_deps() else {
            let message = "the message store is not reachable";
            return Err(Rejection::new(ErrorCode::StoreUnavailable, message));
        };
        Ok(Admitted {
            agent,
            deps,
            shared_limit,
        })
    }

    /// Takes an admitted message: the shared rate limit, then the store. A new message's
    /// ack is held by its run until its first events (`HeldAck`); a repeated id's ack is
    /// queued on `outbox` at once and starts no second run.
    pub async fn submit(
        &self,
        admitted: Admitted,
        user_id: &str,
        outbox: &Arc<Outbox>,
        sub: &Submission,
    ) -> Result<Submitted, Rejection> {
        let Admitted {
            agent,
            deps,
            shared_limit,
        } = admitted;
        if let Some(conn_id) = shared_limit
            && !self
                .limiter
                .allow_shared(user_id, &conn_id, Instant::now())
                .await
        {
            return Err(self.rate_limited());
        }
        let new = NewMessage {
            user_id,
            client_id: &sub.id,
            thread_id: sub.thread_id.as_deref(),
            content: &sub.content,
            agent: agent.name(),
        };
        let acc = match deps.store.accept_message(new).await {
            Ok(acc) => acc,
            Err(StoreError::ThreadNotFound) => {
                return Err(Rejection::new(ErrorCode::ThreadNotFound, "no such thread"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "storing a user message failed");
                return Err(Rejection::Store(e));
            }
        };
        let ack: Arc<str> = Arc::from(ack(&sub.id, &acc.thread_id, &acc.message_id, &acc.run_id));
        if acc.duplicate {
            if outbox.push(Outbound::Reply(ack)) == Pushed::Closed {
                tracing::debug!("acknowledged a message on a closing connection");
            }
            return Ok(Submitted::Duplicate(acc));
        }
        deps.metrics.user_messages.inc();
        // The run queues the ack just ahead of its first events, so both leave in one
        // write (see `HeldAck`).
        let ack = HeldAck::new(Arc::clone(outbox), ack);
        self.runs
            .start(deps, &acc, user_id, &sub.content, agent, ack);
        Ok(Submitted::Started(acc))
    }

    fn rate_limited(&self) -> Rejection {
        let per_minute = self.messages_per_minute;
        let message = format!("at most {per_minute} messages per minute");
        Rejection::new(ErrorCode::RateLimited, message)
    }

    /// What runs need, when the store is connected.
    fn run_deps(&self) -> Option<RunDeps> {
        self.store.get().map(|s| RunDeps {
            store: s.clone(),
            bus: Arc::clone(&self.bus),
            metrics: Arc::clone(&self.metrics),
            // Only a store shared by several nodes can hold another node's runs (one
            // node's runs take turns in memory; the check would cost a round trip).
            shared_turns: s.node().is_some() && self.several_nodes,
        })
    }
}
