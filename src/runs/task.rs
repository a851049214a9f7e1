//! One run's task: it takes its thread's turn (here, then across nodes), lets the agent
//! run into a [`StoreSink`], and accounts for the end. An end that could not be stored
//! is delivered unstored, as an error, and handed to the store to be stored later.

use std::sync::Arc;
use std::time::Instant;

use super::sink::StoreSink;
use super::{HeldAck, RunDeps, RunManager, lease};
use crate::agent::{Agent, AgentEvent, ErrorInfo, RunContext, RunOutcome, codes};
use crate::hub::Outbound;
use crate::wire::{EventBody, EventRecord, RunStatus};

impl RunManager {
    /// The run's task. Kept small (a test checks): it is copied whole when it is spawned
    /// and again when it finishes, so the run's own state machine lives in a box.
    pub(super) fn task(
        self: Arc<Self>,
        deps: RunDeps,
        ctx: RunContext,
        agent: Arc<Agent>,
        ack: Arc<HeldAck>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let manager = self;
        async move {
            let started = Instant::now();
            let sink = StoreSink::new(
                deps.clone(),
                ctx.user_id.clone(),
                Arc::from(ctx.thread_id.as_str()),
                ctx.run_id.clone(),
                ack,
            );
            let turn = manager.turn_of(&ctx.thread_id);
            let guard = match Arc::clone(&turn).try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => {
                    // Another run of the thread goes first: the ack must not wait for it.
                    sink.ack.release();
                    Arc::clone(&turn).lock_owned().await
                }
            };
            if deps.shared_turns {
                // As above: the ack never waits for another node's run either.
                let release = || sink.ack.release();
                let turn = lease::wait_for_turn(&deps.store, &ctx.thread_id, &ctx.run_id, release);
                Box::pin(turn).await;
            }
            if deps.store.has_abandoned() {
                // An earlier run of the thread ended unstored: its end goes first.
                Box::pin(deps.store.close_abandoned(Some(&ctx.thread_id))).await;
            }
            // Boxed: the run's state machine is kilobytes.
            let outcome = Box::pin(crate::agent::run(&agent, &ctx, &sink)).await;
            // Whatever happened, the ack leaves before the run's end is published.
            sink.ack.release();
            if !outcome.completion_stored {
                deliver_unstored(&deps, &ctx, &outcome);
            }
            drop(guard);
            manager.release_turn(&ctx.thread_id, turn);
            manager.finished(&deps, &ctx, &agent, &outcome, started);
        }
    }

    /// Counts the run's end as the client saw it and forgets the run.
    fn finished(
        &self,
        deps: &RunDeps,
        ctx: &RunContext,
        agent: &Agent,
        outcome: &RunOutcome,
        started: Instant,
    ) {
        // As the client saw it: an end that could not be stored is an error.
        let status = if outcome.completion_stored {
            outcome.status
        } else {
            RunStatus::Error
        };
        deps.metrics
            .run_finished(status.as_str(), started.elapsed().as_secs_f64());
        if let Some(usage) = &outcome.usage {
            deps.metrics.model_tokens(
                agent.name(),
                &usage.model,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
        }
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ctx.run_id);
    }
}

/// The end of a run whose `agent_completed` could not be stored: the client still sees
/// the run end, without a seq and never `ok` (nothing unstored is reported as stored):
/// status `error`, code `STORAGE_UNAVAILABLE`. The store keeps the run and stores the
/// same completion once it can (`store/sweep.rs`), before the thread's next run starts.
fn deliver_unstored(deps: &RunDeps, ctx: &RunContext, outcome: &RunOutcome) {
    let error = match &outcome.error {
        Some(e) if e.code == codes::STORAGE_UNAVAILABLE => e.clone(),
        _ => ErrorInfo::new(
            codes::STORAGE_UNAVAILABLE,
            format!(
                "the run ended `{}` but its end could not be stored",
                outcome.status.as_str()
            ),
        ),
    };
    let completed = AgentEvent::Completed {
        status: RunStatus::Error,
        content: outcome.content.clone(),
        error: Some(error),
        usage: outcome.usage.clone(),
    };
    let body = completed.to_body("");
    let mut sent = body.clone();
    sent.insert("run_id".into(), ctx.run_id.clone().into());
    sent.insert("thread_id".into(), ctx.thread_id.clone().into());
    let json = serde_json::Value::Object(sent).to_string();
    deps.bus
        .notify(&ctx.user_id, Outbound::Reply(Arc::from(json)));
    tracing::warn!(run_id = %ctx.run_id, "run completion could not be stored; delivered unstored, stored later");
    let record = EventRecord {
        run_id: ctx.run_id.clone(),
        body: EventBody::Map(body),
    };
    deps.store
        .abandon(&ctx.thread_id, &ctx.run_id, &outcome.content, record);
}
