//! Just enough HTTP/1.1 to see exactly what the server answered: the status line,
//! headers and body of a plain GET, and the head of an upgrade whose unread bytes go to
//! the WebSocket. Written here rather than with an HTTP client because the probe must
//! see a redirect without following it, a 101 with its raw headers, and a refusal's
//! body, on the very connection the stages opened.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::net::BoxIo;

/// The most a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most of a body the probe reads.
const MAX_BODY: usize = 1024 * 1024;

/// A response head, with the bytes read past it.
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Bytes after the head (body, or the first WebSocket frames after a 101).
    pub rest: Vec<u8>,
}

impl Head {
    /// A header's value (the first, by lowercase name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole response.
pub struct Reply {
    /// The head.
    pub head: Head,
    /// The body (de-chunked, at most 1 MiB).
    pub body: Vec<u8>,
}

impl Reply {
    /// Status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The start of the body as text, for details.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match one_line.char_indices().nth(120) {
            Some((i, _)) => format!("{}…", &one_line[..i]),
            None => one_line,
        }
    }

    /// The body looks like an HTML page.
    pub fn is_html(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.contains("text/html"))
            || String::from_utf8_lossy(&self.body[..self.body.len().min(512)])
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("<!doctype html")
    }
}

/// Writes a request: `lines` are the request line and headers, without the blank line.
pub async fn write_request(io: &mut BoxIo, lines: &[String]) -> Result<(), String> {
    let mut req = lines.join("\r\n");
    req.push_str("\r\n\r\n");
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    io.flush()
        .await
        .map_err(|e| format!("sending the request: {e}"))
}

/// Reads a response head.
pub async fn read_head(io: &mut BoxIo) -> Result<Head, String> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut chunk = [0u8; 4096];
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "the server closed the connection without answering".into()
            } else {
                "the server closed the connection in the middle of its answer".into()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = response
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).trim().to_string();
                        (h.name.to_ascii_lowercase(), value)
                    })
                    .collect();
                return Ok(Head {
                    status: response.code.unwrap_or(0),
                    headers,
                    rest: buf.split_off(len),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err("the response head is over 64 KiB".into()),
            Err(e) => {
                return Err(format!(
                    "the answer is not HTTP/1.1 ({e}): {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(60)])
                ));
            }
        }
    }
}

/// Reads the body after `head`: by `Content-Length`, chunked, or to the end.
pub async fn read_body(io: &mut BoxIo, mut head: Head) -> Result<Reply, String> {
    let mut body = std::mem::take(&mut head.rest);
    let length: Option<usize> = head.header("content-length").and_then(|v| v.parse().ok());
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let done = |b: &Vec<u8>| match (length, chunked) {
        (Some(n), _) => b.len() >= n,
        (None, true) => b.ends_with(b"0\r\n\r\n"),
        (None, false) => false,
    };
    while !done(&body) && body.len() < MAX_BODY {
        let mut chunk = [0u8; 8192];
        match io.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if body.is_empty() => return Err(format!("reading the body: {e}")),
            Err(_) => break,
        }
    }
    if let Some(n) = length {
        body.truncate(n);
    } else if chunked {
        body = dechunk(&body);
    }
    Ok(Reply { head, body })
}

/// A `GET` on a new connection, read whole (`Connection: close`).
pub async fn get(
    mut io: BoxIo,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut lines = vec![
        format!("GET {path} HTTP/1.1"),
        format!("Host: {authority}"),
        "User-Agent: portcullis-probe".into(),
        "Accept: */*".into(),
        "Connection: close".into(),
    ];
    lines.extend(extra.iter().map(|(k, v)| format!("{k}: {v}")));
    write_request(&mut io, &lines).await?;
    let head = read_head(&mut io).await?;
    read_body(&mut io, head).await
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        let start = line_end + 2;
        if size == 0 || start + size > raw.len() {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_a_chunked_body() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n"),
            b"Wikipedia "
        );
        assert_eq!(dechunk(b"0\r\n\r\n"), b"");
    }
}
