//! One connection (connection scope), in one task: finishes authentication, registers
//! with the event bus, sends `connection_established`, then serves the socket until the client,
//! the token, the queue or the server ends it. The same task reads client messages,
//! writes the outbound queue, pings and watches the token's expiry; a message that has to
//! wait for the store (a `user_message` being committed, a `resume` being checked) is
//! awaited beside all of that, so events keep flowing meanwhile, and no further message
//! is read until it is done (messages keep their order). Every handler error becomes an
//! `error` reply or a specific close code; nothing here becomes 1011.
//!
//! One task per connection, one timer and a queue that costs nothing while empty: an
//! idle connection's memory is what [`Session`] and its loop keep between two messages.
//! Generic over the socket's `Sink`/`Stream`, so it runs over any socket speaking
//! tungstenite's `Message`.
//!
//! `establish.rs` is what happens before the connection is open (authentication,
//! refusals, `connection_established`), `serve.rs` the open connection's loop and its
//! close, `handlers.rs` the client's messages, `deps.rs` what sessions take from the
//! process.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::handshake::PreAuth;
use super::linger::Linger;
use super::writer::{Close, Pump};
use crate::auth::Identity;
use crate::hub::{Outbound, Outbox};
use crate::store::Store;
use crate::wire::close::ReadFailure;

mod deps;
mod establish;
mod handlers;
mod serve;

pub use deps::SessionDeps;
use establish::{auth_label, establish, established, refuse_user_limit};

/// A message handler still waiting for the store.
type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long a closing connection waits for its last writes and the client's answer to
/// the close frame before the socket is dropped regardless.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards until the client's close frame (or the end of the stream).
async fn discard_until_close<St, E>(stream: &mut St)
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_close() {
            break;
        }
    }
}

/// Runs a connection: authentication first, then the connection proper in a task of
/// its own. The handshake and authentication states (the upgrade, first-message auth,
/// refusals) stay in this short-lived task; the long-lived one holds only what an open
/// connection needs, since that is memory every idle connection pays for.
pub async fn run<S, E>(deps: Arc<SessionDeps>, mut socket: S, pre: PreAuth)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Linger + Unpin + Send + 'static,
    E: ReadFailure + Send + 'static,
{
    let PreAuth {
        state,
        permit,
        remote,
        ..
    } = pre;
    let Some((identity, store)) = Box::pin(establish(&deps, &mut socket, state, remote)).await
    else {
        return;
    };
    let conn_id = format!("c_{:016x}", rand::random::<u64>());
    if !Box::pin(deps.limiter.connection_opened(&identity.user_id, &conn_id)).await {
        return refuse_user_limit(&deps, &mut socket).await;
    }
    let outbox = Arc::new(Outbox::new(
        deps.websocket.send_queue_bytes,
        deps.websocket.send_timeout,
    ));
    let auth_label = auth_label(&deps, &identity);
    let established = established(&deps, &conn_id, &identity, &auth_label);
    outbox.push(Outbound::Reply(Arc::from(established)));
    deps.bus
        .subscribe(&identity.user_id, &conn_id, Arc::clone(&outbox));
    deps.metrics.connections_open.inc();
    deps.metrics.connections_total.inc();
    tracing::debug!(user_id = %identity.user_id, conn_id = %conn_id, auth = %auth_label, "connection established");
    let sessions = deps.sessions.clone();
    let session = Session {
        deps,
        identity,
        store,
        outbox,
        warned_expiry: false,
        pump: Pump::default(),
        conn_id,
        _permit: permit,
    };
    // Tracked like this task, so shutdown waits for it too.
    sessions.spawn(live(session, socket));
}

/// The open connection, to its end. A plain function returning an `async move` block,
/// not an `async fn`: an `async fn` keeps its arguments twice (as captured and as
/// locals), and this future lives as long as the connection.
#[allow(clippy::manual_async_fn)]
fn live<S, E>(mut session: Session, mut socket: S) -> impl Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Linger + Unpin + Send,
    E: ReadFailure + Send,
{
    async move {
        let close = session.serve(&mut socket).await;
        // Boxed: the closing states would otherwise be part of every open connection's task.
        Box::pin(session.finish(&mut socket, close)).await;
        let deps = &session.deps;
        deps.bus
            .unsubscribe(&session.identity.user_id, &session.conn_id);
        let closed = deps
            .limiter
            .connection_closed(&session.identity.user_id, &session.conn_id);
        Box::pin(closed).await;
        session.outbox.close();
        deps.metrics.connections_open.dec();
    }
}

/// An open connection: what it keeps between two messages (the process's part is one
/// shared pointer).
struct Session {
    deps: Arc<SessionDeps>,
    identity: Identity,
    store: Store,
    outbox: Arc<Outbox>,
    warned_expiry: bool,
    pump: Pump,
    conn_id: String,
    /// The connection slot, released when the session ends.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Whether a message handler answered at once, needs the store, or ends the connection.
enum Handled {
    Done,
    Wait(Pending),
    Close(Close),
}

impl Session {
    /// Queues a reply; a full queue marks the connection slow (it is then closed).
    fn reply(&self, text: String) {
        self.outbox.push(Outbound::Reply(Arc::from(text)));
    }
}

#[cfg(test)]
mod tests {
    /// Every open connection keeps its `Session` for its whole life. The process's part
    /// is one pointer: a copy of `App` made it 352 bytes (debug build) before
    /// `SessionDeps`, 208 after.
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<super::Session>();
        assert!(size <= 224, "a Session is {size} bytes");
    }
}
