//! RFC 6455 close codes for clients that break the framing, with frames written by hand
//! over a raw TCP socket (a WebSocket library would refuse to send most of them): invalid
//! UTF-8 gets 1007; unmasked frames, reserved bits, unknown opcodes and oversized control
//! frames get 1002; a message over the size limit, even one still streaming continuation
//! frames, gets 1009. Each time the close frame actually arrives (no reset).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::harness::*;

/// A raw client speaking frames by hand.
struct Raw {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

/// One frame from the server.
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// A client frame: `fin`, the RSV bits, `opcode`, and masked unless `mask` is false.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl Raw {
    /// Upgrades as `alice` and reads `connection_established`.
    async fn open(s: &TestServer) -> Raw {
        let mut tcp = TcpStream::connect(s.addr).await.expect("connect");
        let req = format!(
            "GET /websocket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {}\r\n\r\n",
            s.addr,
            token("alice", 600)
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (rd, wr) = tcp.into_split();
        let mut raw = Raw {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
        };
        let head = raw.read_until_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let est = raw.next_frame().await.expect("a frame");
        assert_eq!(est.opcode, 1);
        assert!(String::from_utf8_lossy(&est.payload).contains("connection_established"));
        raw
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(FRAME_TIMEOUT, self.rd.read(&mut chunk))
            .await
            .expect("the server went silent")
            .unwrap_or_else(|e| panic!("read failed (a reset loses the close frame): {e}"));
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn read_until_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 4);
                return head;
            }
            assert!(self.fill().await, "closed during the handshake");
        }
    }

    /// The next server frame; `None` when the server closed the TCP stream.
    async fn next_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if self.buf.len() >= 2 {
                let (opcode, len7) = (self.buf[0] & 0x0F, (self.buf[1] & 0x7F) as usize);
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (head, len) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => {
                        let b: [u8; 8] = self.buf[2..10].try_into().unwrap();
                        (10, u64::from_be_bytes(b) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if head != usize::MAX && self.buf.len() >= head + len {
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return Some(ServerFrame { opcode, payload });
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads frames until the close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        while let Some(f) = self.next_frame().await {
            if f.opcode == 8 {
                assert!(f.payload.len() >= 2, "a close frame without a code");
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
        panic!("the connection ended without a close frame");
    }

    async fn send(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("the writer");
        wr.write_all(bytes).await.expect("send");
    }
}

async fn closes_with(s: &TestServer, bytes: &[u8], want: u16, what: &str) {
    let mut c = Raw::open(s).await;
    c.send(bytes).await;
    assert_eq!(c.close_code().await, want, "{what}");
}

#[tokio::test]
async fn invalid_utf8_closes_1007() {
    let s = TestServer::start(&[]).await;
    closes_with(
        &s,
        &frame(true, 0, 1, b"{\"type\":\"\xff\xfe\"}", true),
        1007,
        "bad UTF-8",
    )
    .await;
    // Split across fragments: only the whole message is invalid.
    let mut split = frame(false, 0, 1, b"{\"type\":\"\xc3", true);
    split.extend(frame(true, 0, 0, b"(\"}", true));
    closes_with(&s, &split, 1007, "bad UTF-8 across fragments").await;
}

#[tokio::test]
async fn frames_that_break_rfc_6455_close_1002() {
    let s = TestServer::start(&[]).await;
    let ping = br#"{"type":"ping"}"#;
    let cases: [(Vec<u8>, &str); 5] = [
        (frame(true, 0, 1, ping, false), "unmasked client frame"),
        (
            frame(true, 0b100, 1, ping, true),
            "RSV1 without an extension",
        ),
        (frame(true, 0, 3, ping, true), "reserved data opcode"),
        (frame(true, 0, 0xB, b"", true), "reserved control opcode"),
        (
            frame(true, 0, 9, &[b'p'; 126], true),
            "control frame over 125 bytes",
        ),
    ];
    for (bytes, what) in cases {
        closes_with(&s, &bytes, 1002, what).await;
    }
    // The server is fine afterwards.
    let mut c = s.user("bob").await;
    c.ping_pong().await;
}

/// A client that keeps streaming continuation frames past the size limit still reads the
/// server's 1009: the server drains what the client sends instead of resetting.
#[tokio::test]
async fn a_message_streaming_past_the_limit_closes_1009_and_the_close_arrives() {
    let s = TestServer::start(&[("WEBSOCKET__MAX_MESSAGE_BYTES", "1024")]).await;
    let mut c = Raw::open(&s).await;
    let chunk = vec![b'x'; 1000];
    c.send(&frame(false, 0, 1, &chunk, true)).await;
    // Keep streaming continuation frames (each over the frame limit) for a second before
    // reading anything, as a client busy uploading would: the server has decided by then,
    // and must not reset the connection under the close frame it sent.
    let more = frame(false, 0, 0, &[b'y'; 60_000], true);
    let wr = c.wr.as_mut().unwrap();
    let writer = async {
        loop {
            if wr.write_all(&more).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    let mut saw_error = false;
    let code = loop {
        let f = c
            .next_frame()
            .await
            .expect("the connection ended without a close frame");
        match f.opcode {
            1 => saw_error |= String::from_utf8_lossy(&f.payload).contains("MESSAGE_TOO_LARGE"),
            8 => break u16::from_be_bytes([f.payload[0], f.payload[1]]),
            _ => {}
        }
    };
    assert_eq!(code, 1009);
    assert!(saw_error, "the error message precedes the close");
}
