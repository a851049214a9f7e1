//! Ending a connection whose client broke the framing: after the close frame, the server
//! half-closes (TCP FIN) and discards whatever the client still sends until it closes.
//! Dropping a socket with unread input resets it, and the reset can destroy the close
//! frame (and its code) before the client reads it: a client still streaming frames past
//! the size limit saw 1006 instead of 1009.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

/// A socket that can be half-closed and drained below the WebSocket framing.
pub trait Linger {
    /// Half-closes the write side, then reads and discards until the peer closes.
    /// Callers bound it with a timeout.
    fn linger(&mut self) -> impl Future<Output = ()> + Send;
}

impl<T> Linger for WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn linger(&mut self) {
        let io = self.get_mut();
        if io.shutdown().await.is_err() {
            return;
        }
        // Small: this runs once per broken connection, and the data is thrown away.
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    }
}
