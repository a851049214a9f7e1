//! A client's messages (docs/PROTOCOL.md §2), each answered at once or by a future that
//! waits for the store beside the connection loop: `user_message` goes to chat
//! submission (`runs::Chat`), whose rejections become `error` messages here; `resume`
//! checks the thread's owner and leaves the replay to the writer; `cancel` stops a run
//! here or flags it in the store for its node; `auth` refreshes the token.

use std::sync::Arc;

use chrono::Utc;

use super::{Handled, Session};
use crate::auth::AuthFailure;
use crate::hub::{Outbound, ReplayRequest};
use crate::runs::{Rejection, Submission};
use crate::wire::server;
use crate::wire::{ClientMessage, CloseCode, ErrorCode, ParseError, parse};
use crate::ws::writer::{AfterClose, Close};

/// A rejected `user_message` as its `error` message.
fn rejected(r: &Rejection, id: &str) -> String {
    server::error(r.code(), &r.message(), Some(id), r.retryable())
}

impl Session {
    pub(super) fn handle(&mut self, text: &str) -> Handled {
        let msg = match parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.reply(unparsed(e));
                return Handled::Done;
            }
        };
        match msg {
            ClientMessage::Ping {} => self.reply(server::pong()),
            ClientMessage::UserMessage {
                id,
                content,
                thread_id,
                agent,
            } => {
                return self.user_message(Submission {
                    id,
                    content,
                    thread_id,
                    agent,
                });
            }
            ClientMessage::Cancel { run_id } => return self.cancel(run_id),
            ClientMessage::Resume {
                thread_id,
                after_seq,
            } => return self.resume(thread_id, after_seq),
            ClientMessage::Auth { token } => {
                if let Some(c) = self.refresh(&token) {
                    return Handled::Close(c);
                }
            }
        }
        Handled::Done
    }

    /// Checks the message at once, then stores it and starts its run in the wait.
    fn user_message(&mut self, sub: Submission) -> Handled {
        let chat = &self.deps.chat;
        let admitted = match chat.admit(&self.identity.user_id, &self.conn_id, &sub) {
            Ok(admitted) => admitted,
            Err(r) => {
                self.reply(rejected(&r, &sub.id));
                return Handled::Done;
            }
        };
        let chat = Arc::clone(chat);
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            if let Err(r) = chat.submit(admitted, &user_id, &outbox, &sub).await {
                outbox.push(Outbound::Reply(Arc::from(rejected(&r, &sub.id))));
            }
        }))
    }
    fn resume(&mut self, thread_id: String, after_seq: i64) -> Handled {
        let store = self.store.clone();
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            let reply = |text: String| {
                outbox.push(Outbound::Reply(Arc::from(text)));
            };
            match store.thread_owner(&thread_id).await {
                Ok(Some(owner)) if owner == user_id => {
                    outbox.push(Outbound::Replay(Box::new(ReplayRequest {
                        thread_id,
                        after_seq,
                        ref_id: None,
                    })));
                }
                Ok(_) => reply(server::error(
                    ErrorCode::ThreadNotFound.as_str(),
                    "no such thread",
                    None,
                    false,
                )),
                Err(e) => reply(server::error(
                    e.code(),
                    "could not look the thread up",
                    None,
                    e.is_retryable(),
                )),
            }
        }))
    }

    /// Cancels a run of this user: at once when it runs on this node, else through the
    /// store, where the node executing it reads the flag when it renews the run's lease
    /// (`runs::lease`).
    fn cancel(&mut self, run_id: String) -> Handled {
        if self.deps.runs.cancel(&self.identity.user_id, &run_id) {
            return Handled::Done;
        }
        if self.store.node().is_none() {
            // No other node shares this store: the run is not running anywhere.
            self.reply(server::error(
                ErrorCode::RunNotFound.as_str(),
                "no such run of yours is in progress",
                None,
                false,
            ));
            return Handled::Done;
        }
        let store = self.store.clone();
        let outbox = Arc::clone(&self.outbox);
        let user_id = self.identity.user_id.clone();
        Handled::Wait(Box::pin(async move {
            let error = match store.request_cancel(&user_id, &run_id).await {
                Ok(true) => return,
                Ok(false) => server::error(
                    ErrorCode::RunNotFound.as_str(),
                    "no such run of yours is in progress",
                    None,
                    false,
                ),
                Err(e) => server::error(
                    e.code(),
                    "could not reach the run to cancel it; send the cancel again",
                    None,
                    e.is_retryable(),
                ),
            };
            outbox.push(Outbound::Reply(Arc::from(error)));
        }))
    }

    fn refresh(&mut self, token: &str) -> Option<Close> {
        let Some(v) = &self.deps.verifier else {
            self.reply(server::error(
                ErrorCode::BadMessage.as_str(),
                "this server does not use tokens",
                None,
                false,
            ));
            return None;
        };
        match v
            .verify(token, Utc::now())
            .and_then(|fresh| self.identity.refresh(fresh))
        {
            Ok(fresh) => {
                self.identity = fresh;
                self.warned_expiry = false;
                self.reply(server::auth_refreshed(self.identity.expires_at.as_ref()));
                None
            }
            Err(f @ AuthFailure::Forbidden(_)) => {
                self.deps.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string());
                Some(Close {
                    code: CloseCode::Forbidden,
                    reason: "refresh for another user",
                    flush_first: true,
                    then: AfterClose::ClientClose,
                })
            }
            Err(f) => {
                self.deps.metrics.auth_failure(f.code());
                self.reply(f.error_message().to_string());
                None
            }
        }
    }
}

/// The `error` message for a frame that is not a client message.
fn unparsed(e: ParseError) -> String {
    match e {
        ParseError::BadJson(e) => server::error(
            ErrorCode::BadJson.as_str(),
            &format!("not valid JSON: {e}"),
            None,
            false,
        ),
        ParseError::UnknownType(t) => server::error(
            ErrorCode::UnknownType.as_str(),
            &format!("unknown message type `{t}`; see docs/PROTOCOL.md §2"),
            None,
            false,
        ),
        ParseError::BadMessage(e) => server::error(ErrorCode::BadMessage.as_str(), &e, None, false),
    }
}
