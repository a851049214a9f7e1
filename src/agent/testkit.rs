//! Test fakes shared by the agent module's unit tests: a recording sink that can be told
//! to fail, a fake thread history and a fixed clock. Fakes of this module's own traits.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::context::{Clock, RunContext, ThreadHistory};
use super::event::{AgentEvent, EventSink, SinkError};

/// 2026-11-22T00:00:00Z, the time the fixed clock reports.
pub fn fixed_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
}

/// A clock stuck at [`fixed_time`].
pub fn fixed_clock() -> Arc<dyn Clock> {
    Arc::new(fixed_time)
}

/// A thread history with canned messages, or a canned failure.
pub struct FakeHistory(pub Result<Vec<(String, String)>, String>);

impl ThreadHistory for FakeHistory {
    fn recent_messages(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        let answer = self.0.clone().map(|mut messages| {
            let skip = messages.len().saturating_sub(limit);
            messages.drain(..skip);
            messages
        });
        Box::pin(async move { answer })
    }
}

/// A run context for `content` with an empty history.
pub fn ctx(content: &str) -> RunContext {
    ctx_with_history(content, FakeHistory(Ok(Vec::new())))
}

/// A run context for `content` reading `history`.
pub fn ctx_with_history(content: &str, history: FakeHistory) -> RunContext {
    RunContext {
        run_id: "r_1".into(),
        thread_id: "t_1".into(),
        user_id: "alice".into(),
        message_id: "m_user".into(),
        assistant_message_id: "m_assistant".into(),
        content: content.into(),
        cancel: CancellationToken::new(),
        history: Arc::new(history),
    }
}

/// Records every event it is offered (also the ones it then refuses).
#[derive(Default)]
pub struct RecordingSink {
    /// Every emit attempt, in order.
    pub attempts: Mutex<Vec<AgentEvent>>,
    /// Refuse the attempt with this index (0-based) and every later one.
    pub fail_from: Option<usize>,
    /// Cancel this token once an event of this kind has been accepted.
    pub cancel_after: Option<(&'static str, CancellationToken)>,
    /// How many events had been offered at each `flush`, in order.
    pub flushes: Mutex<Vec<usize>>,
    /// Refuse every `flush`.
    pub fail_flush: bool,
}

impl RecordingSink {
    /// Event kinds offered so far.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(AgentEvent::kind)
            .collect()
    }

    /// Events offered so far.
    pub fn events(&self) -> Vec<AgentEvent> {
        self.attempts.lock().unwrap().clone()
    }
}

impl EventSink for RecordingSink {
    async fn emit(&self, event: AgentEvent) -> Result<(), SinkError> {
        let kind = event.kind();
        let index = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(event);
            attempts.len() - 1
        };
        if self.fail_from.is_some_and(|from| index >= from) {
            return Err(SinkError("database is down".into()));
        }
        if let Some((after, token)) = &self.cancel_after {
            if *after == kind {
                token.cancel();
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let offered = self.attempts.lock().unwrap().len();
        self.flushes.lock().unwrap().push(offered);
        if self.fail_flush {
            return Err(SinkError("database is down".into()));
        }
        Ok(())
    }
}
