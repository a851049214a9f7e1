//! One connection: upgrade with authentication, `connection_established`, then a loop over
//! client frames, bursts fanned out from the user's other sockets, heartbeat and shutdown.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::State;
use crate::auth::AuthError;
use crate::events;
use crate::hub::{Burst, lock};

type Ws = WebSocketStream<TcpStream>;

/// Bound of each connection's fanout queue, in runs.
const QUEUE_RUNS: usize = 64;

/// The fields of a client message the baseline acts on; strings borrow from the frame
/// unless they hold escapes.
#[derive(Deserialize)]
struct ClientMessage<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thread_id: Option<Cow<'a, str>>,
}

pub async fn serve(stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut outcome = None;
    // The callback's signature, with its large `ErrorResponse`, is tungstenite's to choose.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        let (result, selected) = state.verifier.check(req);
        if let Some(v) = selected.and_then(|p| HeaderValue::from_str(&p).ok()) {
            resp.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, v);
        }
        outcome = Some(result);
        Ok(resp)
    };
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(state.ws_config))
            .await;
    let Ok(ws) = accepted else { return };
    let identity = match outcome {
        Some(Ok(id)) => id,
        Some(Err(e)) => return reject(ws, e).await,
        None => return,
    };
    let conn_id = events::new_id("c_");
    let conn = state.next_conn();
    let (tx, mut rx) = mpsc::channel::<Burst>(QUEUE_RUNS);
    let user = state.hub.register(&identity.user_id, conn, tx);
    let hello = events::connection_established(
        &conn_id,
        &identity.user_id,
        identity.expires_at,
        state.heartbeat_ms,
    );
    let mut s = Session {
        ws,
        state: &state,
        user: &user,
        conn,
    };
    let end = match s.send_burst([hello]).await {
        Ok(()) => s.run(&mut rx).await,
        Err(_) => None,
    };
    if let Some(code) = end {
        let _ =
            s.ws.close(Some(CloseFrame {
                code,
                reason: "".into(),
            }))
            .await;
    }
    state.hub.unregister(&identity.user_id, conn);
}

async fn reject(mut ws: Ws, e: AuthError) {
    let msg = events::error(e.code(), "authentication failed", None);
    let _ = ws.send(Message::Text(msg)).await;
    let frame = CloseFrame {
        code: CloseCode::Library(4401),
        reason: "".into(),
    };
    let _ = ws.close(Some(frame)).await;
    // Drain until the client answers the close, bounded.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

struct Session<'a> {
    ws: Ws,
    state: &'a State,
    user: &'a std::sync::Mutex<crate::hub::UserState>,
    conn: u64,
}

impl Session<'_> {
    /// Runs until the connection ends; returns the close code to send, if any.
    async fn run(&mut self, rx: &mut mpsc::Receiver<Burst>) -> Option<CloseCode> {
        let hb = Duration::from_millis(self.state.heartbeat_ms.max(1));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + hb, hb);
        // One waiter for the whole connection, not one registered per loop turn.
        let shutdown = self.state.shutdown.clone();
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if self.on_text(t).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let e = events::error("BAD_MESSAGE", "binary frames are not part of portcullis.v1", None);
                        if self.send_burst([e]).await.is_err() {
                            return None;
                        }
                    }
                    // tungstenite has queued the answering close frame: send it.
                    Some(Ok(Message::Close(_))) => {
                        let _ = self.ws.flush().await;
                        return None;
                    }
                    None => return None,
                    Some(Ok(_)) => {}
                    Some(Err(WsError::Capacity(_))) => return Some(CloseCode::Size),
                    Some(Err(_)) => return None,
                },
                burst = rx.recv() => match burst {
                    Some(b) => {
                        if self.send_burst(b.iter().cloned()).await.is_err() {
                            return None;
                        }
                    }
                    // The hub dropped our queue because it stayed full.
                    None => return Some(CloseCode::Library(4509)),
                },
                _ = heartbeat.tick(), if self.state.heartbeat_ms > 0 => {
                    if self.ws.send(Message::Ping(Default::default())).await.is_err() {
                        return None;
                    }
                }
                _ = &mut cancelled => return Some(CloseCode::Away),
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), WsError> {
        // The common case is read straight into its fields; anything that does not fit is
        // read again as a `Value` to say what is wrong with it.
        match serde_json::from_str::<ClientMessage>(text.as_str()) {
            Ok(m) if m.ty == "user_message" => match (m.id, m.content) {
                (Some(id), Some(_content)) => self.on_user_message(&id, m.thread_id).await,
                (id, _) => self.bad_user_message(id.as_deref()).await,
            },
            Ok(m) if m.ty == "ping" => self.send_burst([events::pong()]).await,
            _ => self.on_other(text).await,
        }
    }

    async fn on_other(&mut self, text: Utf8Bytes) -> Result<(), WsError> {
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            return self
                .send_burst([events::error("BAD_MESSAGE", "not a JSON object", None)])
                .await;
        };
        match v["type"].as_str() {
            Some("user_message") => self.bad_user_message(v["id"].as_str()).await,
            Some("ping") => self.send_burst([events::pong()]).await,
            Some("auth") | Some("cancel") | Some("resume") => {
                let e = events::error(
                    "UNSUPPORTED",
                    "the baseline server does not implement this message",
                    None,
                );
                self.send_burst([e]).await
            }
            _ => {
                self.send_burst([events::error("BAD_MESSAGE", "unknown message type", None)])
                    .await
            }
        }
    }

    async fn bad_user_message(&mut self, ref_id: Option<&str>) -> Result<(), WsError> {
        let e = events::error(
            "BAD_MESSAGE",
            "user_message needs string id and content",
            ref_id,
        );
        self.send_burst([e]).await
    }

    async fn on_user_message(
        &mut self,
        id: &str,
        thread: Option<Cow<'_, str>>,
    ) -> Result<(), WsError> {
        // Seqs are reserved and the burst queued for the user's other sockets under one
        // lock, so every socket sees each thread's events in seq order.
        let run = {
            let mut st = lock(self.user);
            let n = events::EVENTS_PER_RUN;
            let run = match thread {
                Some(t) => st
                    .continue_thread(&t, n)
                    .map(|first| events::run(id, &t, first)),
                None => {
                    let t = events::new_id("t_");
                    let run = events::run(id, &t, 1);
                    st.start_thread(t, n);
                    Some(run)
                }
            };
            if let Some(run) = &run {
                st.fan_out(self.conn, &run.events);
            }
            run
        };
        let Some(run) = run else {
            let e = events::error("THREAD_NOT_FOUND", "no such thread", Some(id));
            return self.send_burst([e]).await;
        };
        self.send_burst(std::iter::once(run.ack).chain(run.events))
            .await
    }

    /// Writes frames, flushing after each (`--flush-per-event`) or once at the end.
    async fn send_burst(
        &mut self,
        frames: impl IntoIterator<Item = Utf8Bytes>,
    ) -> Result<(), WsError> {
        for f in frames {
            let m = Message::Text(f);
            if self.state.flush_per_event {
                self.ws.send(m).await?;
            } else {
                self.ws.feed(m).await?;
            }
        }
        if !self.state.flush_per_event {
            self.ws.flush().await?;
        }
        Ok(())
    }
}
