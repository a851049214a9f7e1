//! One connection: upgrade with authentication, `connection_established`, then a loop over
//! client frames, bursts fanned out from the user's other sockets, heartbeat and shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::SEC_WEBSOCKET_PROTOCOL;
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
    let end = match s.send_burst(std::slice::from_ref(&hello)).await {
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
        let shutdown = self.state.shutdown.clone();
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
                        if self.send_burst(&[e]).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Ok(_)) => {}
                    Some(Err(WsError::Capacity(_))) => return Some(CloseCode::Size),
                    Some(Err(_)) => return None,
                },
                burst = rx.recv() => match burst {
                    Some(b) => {
                        if self.send_burst(&b).await.is_err() {
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
                _ = shutdown.cancelled() => return Some(CloseCode::Away),
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), WsError> {
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            return self
                .send_burst(&[events::error("BAD_MESSAGE", "not a JSON object", None)])
                .await;
        };
        match v["type"].as_str() {
            Some("ping") => self.send_burst(&[events::pong()]).await,
            Some("user_message") => self.on_user_message(&v).await,
            Some("auth") | Some("cancel") | Some("resume") => {
                let e = events::error(
                    "UNSUPPORTED",
                    "the baseline server does not implement this message",
                    None,
                );
                self.send_burst(&[e]).await
            }
            _ => {
                self.send_burst(&[events::error("BAD_MESSAGE", "unknown message type", None)])
                    .await
            }
        }
    }

    async fn on_user_message(&mut self, v: &Value) -> Result<(), WsError> {
        let (Some(id), Some(_content)) = (v["id"].as_str(), v["content"].as_str()) else {
            let ref_id = v["id"].as_str();
            let e = events::error(
                "BAD_MESSAGE",
                "user_message needs string id and content",
                ref_id,
            );
            return self.send_burst(&[e]).await;
        };
        let thread = match v["thread_id"].as_str() {
            Some(t) => t.to_owned(),
            None => events::new_id("t_"),
        };
        // Seqs are reserved and the burst queued for the user's other sockets under one
        // lock, so every socket sees each thread's events in seq order.
        let run;
        {
            let mut st = lock(self.user);
            let first = st.reserve_seqs(&thread, events::EVENTS_PER_RUN);
            run = events::run(id, &thread, first);
            let burst: Burst = run.events.clone().into();
            st.fan_out(self.conn, &burst);
        }
        let mut frames = Vec::with_capacity(run.events.len() + 1);
        frames.push(run.ack);
        frames.extend(run.events);
        self.send_burst(&frames).await
    }

    /// Writes frames, flushing after each (`--flush-per-event`) or once at the end.
    async fn send_burst(&mut self, frames: &[Utf8Bytes]) -> Result<(), WsError> {
        for f in frames {
            let m = Message::Text(f.clone());
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
