//! portcullis behind a real nginx configured from the shipped `deploy/nginx.conf` (only
//! its `# deploy:` lines replaced, plus temp paths inside the test's own prefix), run as
//! an unprivileged user on a free port: the golden path over `wss://` through it, and the
//! bypass rule's `from` judged on the client's address (clients bind distinct loopback
//! addresses), never on a forged `X-Forwarded-For`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::auth::idp::TestCa;
use crate::auth::serve::RemoteServer;
use crate::tls::connector;
use portcullis::wire::ClientMessage;

const SECRET: &str = "proxy-test-secret-0123456789abcdef-0123456789";
const BYPASS: &str = "proxy-test-bypass-secret-0123";
/// The address the bypass rule allows; the only other client binds `OTHER`.
const ALLOWED: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.5";

fn environment(dir: &Path) -> String {
    format!(
        r#"
[environment]
name = "test"
kind = "test"

[server]
listen = "127.0.0.1:0"
public_url = "https://localhost"
# nginx connects from 127.0.0.1; clients come from other loopback addresses.
trusted_proxies = ["127.0.0.1/32"]

[websocket]
path = "/websocket"
allowed_origins = ["https://localhost"]

[auth]
mode = "jwt"
# Refusals close at once (no wait for a first `auth` message).
token_sources = ["header", "subprotocol"]

[auth.jwt]
algorithms = ["HS256"]
secret = "{SECRET}"

[[auth.bypass]]
name = "ci"
header = "X-Portcullis-Bypass"
secret = "{BYPASS}"
user_id = "ci-runner"
from = ["{ALLOWED}/32"]

[services.database]
kind = "sqlite"
url = "sqlite://{db}"

[[routes]]
method = "GET"
path = "/health"
handler = "health"

[[agents]]
name = "assistant"
provider = "scripted"
tools = ["calculator"]

[client]
websocket_url = "wss://localhost/websocket"

# The components the runtime builds (base.toml's defaults).
[components.store]
kind = "sql"
scope = "process"
needs = ["database"]

[components.event_bus]
kind = "local"
scope = "process"

[components.jwt_keys]
kind = "jwt"
scope = "process"

[components.agent_registry]
kind = "agents"
scope = "process"

[components.metrics]
kind = "prometheus"
scope = "process"

[components.rate_limiter]
kind = "local"
scope = "process"

[components.session]
kind = "websocket"
scope = "connection"
needs = ["user_context", "event_bus", "store", "rate_limiter"]

[components.run_context]
kind = "agent_run"
scope = "run"
needs = ["user_context", "session", "store", "event_bus", "agent_registry"]
"#,
        db = dir.join("db.sqlite").display(),
    )
}

/// nginx, stopped (and reaped) on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deploy/nginx.conf` with the marked lines pointed at this test's port, certificate and
/// upstream, and nginx's temp files kept inside `prefix`.
fn configure(shipped: &str, port: u16, upstream: SocketAddr, prefix: &Path) -> String {
    let mut out = String::new();
    let mut replaced = 0;
    for line in shipped.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let replacement = match line.split("# deploy: ").nth(1) {
            Some("upstream") => Some(format!("server {upstream};")),
            Some("listen") => Some(format!("listen 127.0.0.1:{port} ssl;")),
            Some("server_name") => Some("server_name localhost;".to_owned()),
            Some("certificate") => Some(format!(
                "ssl_certificate {};",
                prefix.join("cert.pem").display()
            )),
            Some("key") => Some(format!(
                "ssl_certificate_key {};",
                prefix.join("key.pem").display()
            )),
            Some(other) => panic!("unknown deploy marker {other}"),
            None => None,
        };
        match replacement {
            Some(text) => {
                replaced += 1;
                out.push_str(&format!("{indent}{text}\n"));
            }
            None => out.push_str(&format!("{line}\n")),
        }
        if line.trim() == "http {" {
            for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                let path = prefix.join(format!("{kind}_temp"));
                out.push_str(&format!("    {kind}_temp_path {};\n", path.display()));
            }
        }
    }
    assert_eq!(replaced, 5, "deploy/nginx.conf lost a `# deploy:` marker");
    out
}

/// Gives the prefix to `nobody` when we are root, so nginx runs unprivileged.
fn hand_over(prefix: &Path) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root {
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(prefix)
            .status()
            .expect("chown");
        assert!(status.success());
    }
    root
}

async fn start_nginx(upstream: SocketAddr, ca: &TestCa) -> Nginx {
    let prefix = tempfile::tempdir().unwrap();
    let dir = prefix.path();
    std::fs::write(dir.join("cert.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &ca.key_pem).unwrap();
    let port = crate::support::free_port();
    let shipped = std::fs::read_to_string("deploy/nginx.conf").expect("deploy/nginx.conf");
    std::fs::write(
        dir.join("nginx.conf"),
        configure(&shipped, port, upstream, dir),
    )
    .unwrap();
    let root = hand_over(dir);
    let nginx = which("nginx")
        .expect("nginx is not installed: scripts/test installs the Debian package `nginx`");
    let mut command = match root {
        true => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&nginx);
            c
        }
        false => Command::new(&nginx),
    };
    let global = format!("daemon off; pid {};", dir.join("nginx.pid").display());
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", &global])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}:\n{log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Nginx {
        child,
        addr,
        _prefix: prefix,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens `/websocket` at `to` from source address `from`, over TLS when `ca` is given.
async fn open(from: &str, to: SocketAddr, ca: Option<&TestCa>, headers: &[(&str, &str)]) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(to).await.expect("connect");
    let (scheme, io): (&str, Box<dyn Io>) = match ca {
        Some(ca) => {
            let name = ServerName::try_from("localhost").unwrap();
            (
                "wss",
                Box::new(
                    connector(ca)
                        .connect(name, tcp)
                        .await
                        .expect("TLS to nginx"),
                ),
            )
        }
        None => ("ws", Box::new(tcp)),
    };
    let mut request = format!("{scheme}://localhost:{}/websocket", to.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://localhost".parse().unwrap());
    for (k, v) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::client_async(request, io)
        .await
        .expect("upgrade");
    ws
}

async fn recv(ws: &mut Ws) -> Result<Value, u16> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
            .expect("socket open")
            .expect("frame");
        match frame {
            Message::Text(text) => return Ok(serde_json::from_str(&text).unwrap()),
            Message::Close(close) => return Err(close.map(|c| u16::from(c.code)).unwrap_or(1005)),
            _ => {}
        }
    }
}

/// The `auth` of `connection_established`, or the close code after the `error`.
async fn admitted(ws: &mut Ws) -> Result<String, u16> {
    let first = recv(ws).await?;
    if first["type"] == "connection_established" {
        return Ok(first["auth"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(first["type"], "error", "{first}");
    Err(recv(ws).await.expect_err("close after the error"))
}

fn token(sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_golden_path_and_bypass_addresses_through_the_shipped_nginx_config() {
    let server = RemoteServer::start(environment).await;
    let ca = TestCa::new();
    let nginx = start_nginx(server.server.addr, &ca).await;
    let through = nginx.addr;

    // Golden path over wss:// through nginx: authenticated, a run streamed to the end.
    let bearer = format!("Bearer {}", token("nina"));
    let mut ws = open(OTHER, through, Some(&ca), &[("authorization", &bearer)]).await;
    assert_eq!(admitted(&mut ws).await, Ok("jwt".into()));
    let ask = ClientMessage::user_message("p1", "what is 6*7?", None, None).to_text();
    ws.send(Message::text(ask)).await.unwrap();
    let mut kinds = Vec::new();
    let answer = loop {
        let frame = recv(&mut ws).await.expect("open");
        kinds.push(frame["type"].as_str().unwrap_or("").to_owned());
        if frame["type"] == "agent_completed" {
            break frame["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
        }
    };
    assert!(answer.contains("42"), "{answer}");
    assert_eq!(kinds.first().map(String::as_str), Some("ack"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "tool_completed"), "{kinds:?}");

    // The bypass rule sees the client's address, not nginx's.
    let secret = [("x-portcullis-bypass", BYPASS)];
    let mut allowed = open(ALLOWED, through, Some(&ca), &secret).await;
    assert_eq!(admitted(&mut allowed).await, Ok("bypass:ci".into()));
    let mut other = open(OTHER, through, Some(&ca), &secret).await;
    assert_eq!(
        admitted(&mut other).await,
        Err(4401),
        "nginx's own address must not pass"
    );
    // A forged X-Forwarded-For is appended to, and read from the right: still refused.
    let forged = [
        ("x-portcullis-bypass", BYPASS),
        ("x-forwarded-for", ALLOWED),
    ];
    let mut spoof = open(OTHER, through, Some(&ca), &forged).await;
    assert_eq!(admitted(&mut spoof).await, Err(4401));
    // Straight to portcullis, the header comes from an untrusted peer: ignored.
    let mut direct = open(OTHER, server.server.addr, None, &forged).await;
    assert_eq!(admitted(&mut direct).await, Err(4401));
}
