//! `portcullis probe`: the client doctor. It walks the chain a chat client walks —
//! resolve, tcp, tls, (client_config,) http, upgrade, subprotocol, established, ping,
//! chat, resume — stops at the first link that breaks, and names it with what was seen
//! and a hint pointing at the likely cause and configuration key. Warnings (a
//! certificate about to expire, a client URL naming another host) pass with a hint.
//!
//! One file per stage group: `net` (resolve, tcp, tls), `http_stages` (client_config,
//! http), `socket` (upgrade, subprotocol, established, ping), `chat` (chat, resume);
//! `explain` maps the server's codes to hints, `render` prints the report.

mod chat;
mod explain;
mod http1;
mod http_stages;
mod net;
mod render;
mod socket;
mod target;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use render::{human, json};
pub use target::{Scheme, Target};

use crate::config::TokenSource;
use socket::Handshake;

/// Where `client_config` is looked for on an `http(s)://` base whose URL has no path and
/// no `--env` names the route (the shipped environments' path).
pub const DEFAULT_CLIENT_CONFIG_PATH: &str = "/api/client-config";

/// Which token sources to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// The first of the server's `token_sources` (from `client_config`), else the header.
    Default,
    /// This one.
    One(TokenSource),
    /// Each the server enables (every one when unknown), one connection each.
    All,
}

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The URL.
    pub target: Target,
    /// The token (never printed).
    pub token: Option<String>,
    /// `Origin` to send, as a browser page on that origin would.
    pub origin: Option<String>,
    /// Token sources.
    pub sources: Sources,
    /// Send this as a user message and check the run.
    pub chat: Option<String>,
    /// Replay the chat's thread on a new connection and compare.
    pub resume: bool,
    /// Limit of each stage (and of each frame awaited).
    pub timeout: Duration,
    /// Extra trust anchors for TLS.
    pub ca_file: Option<PathBuf>,
    /// The `client_config` route's path on an `http(s)://` base.
    pub client_config_path: String,
}

/// One stage's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// It passed (possibly with a warning in `hint`).
    pub ok: bool,
    /// How long it took.
    pub ms: u64,
    /// What was seen.
    pub detail: String,
    /// On failure the likely cause and key to check; on a pass, a warning.
    pub hint: Option<String>,
}

/// The probe's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every stage passed.
    pub ok: bool,
    /// The stage that failed.
    pub failed_stage: Option<String>,
    /// The stages run, in order (the walk stops at the first failure).
    pub stages: Vec<Stage>,
}

/// A passed stage: what was seen, and a warning if any.
pub struct Pass {
    detail: String,
    warning: Option<String>,
}

impl Pass {
    fn new(detail: impl Into<String>) -> Pass {
        Pass {
            detail: detail.into(),
            warning: None,
        }
    }

    fn warn(detail: impl Into<String>, warning: impl Into<String>) -> Pass {
        Pass {
            detail: detail.into(),
            warning: Some(warning.into()),
        }
    }
}

/// A failed stage: what was seen, and the likely cause with the key to check.
pub struct Fail {
    detail: String,
    hint: String,
}

impl Fail {
    fn new(detail: impl Into<String>, hint: impl Into<String>) -> Fail {
        Fail {
            detail: detail.into(),
            hint: hint.into(),
        }
    }
}

fn unit(r: Result<Pass, Fail>) -> Result<((), Pass), Fail> {
    r.map(|p| ((), p))
}

#[derive(Default)]
struct Recorder {
    stages: Vec<Stage>,
}

impl Recorder {
    /// Runs one stage within `limit`; `None` when it failed (the walk stops).
    async fn stage<T>(
        &mut self,
        name: &str,
        limit: Duration,
        work: impl Future<Output = Result<(T, Pass), Fail>>,
    ) -> Option<T> {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(Fail::new(
                format!("no answer within {} ms", limit.as_millis()),
                timeout_hint(name),
            )),
        };
        let ms = started.elapsed().as_millis() as u64;
        let (value, ok, detail, hint) = match outcome {
            Ok((v, p)) => (Some(v), true, p.detail, p.warning),
            Err(f) => (None, false, f.detail, Some(f.hint)),
        };
        self.stages.push(Stage {
            name: name.to_string(),
            ok,
            ms,
            detail,
            hint,
        });
        value
    }

    fn finish(self) -> Report {
        let failed_stage = self.stages.iter().find(|s| !s.ok).map(|s| s.name.clone());
        Report {
            ok: failed_stage.is_none(),
            failed_stage,
            stages: self.stages,
        }
    }
}

fn timeout_hint(stage: &str) -> String {
    let base = stage.split(' ').next().unwrap_or(stage);
    match base {
        "resolve" => "DNS does not answer: check the resolver and the host name",
        "tcp" => "packets are dropped: a firewall or security group, or the host is down (server.listen)",
        "tls" => "the TLS handshake stalls: the port may not speak TLS (try ws:// / http://)",
        "client_config" | "http" | "upgrade" => "the server accepted the connection but did not answer: a proxy waiting on an unreachable upstream, or a stuck server",
        "established" => "no connection_established: the server waits for a first-message auth or a dependency",
        "chat" | "resume" => "the run or replay did not finish in time: raise --timeout-ms, or check the agent's provider (check --online)",
        _ => "no answer in time: raise --timeout-ms",
    }
    .to_string()
}

/// Runs the probe; every stage up to the first failure is in the report.
pub async fn run(opts: &Options) -> Report {
    let mut recorder = Recorder::default();
    let _ = walk(opts, &mut recorder).await;
    recorder.finish()
}

/// `resolve`, `tcp`, `tls` and, for a base URL, `client_config`: how to connect, where
/// the socket is, and what the server says about itself.
async fn reach(
    o: &Options,
    r: &mut Recorder,
) -> Option<(net::Dialer, Target, http_stages::ClientConfig)> {
    let t = o.timeout;
    let target = &o.target;
    let addrs = r.stage("resolve", t, net::resolve(target)).await?;
    let (tcp, addr) = r.stage("tcp", t, net::connect(&addrs)).await?;
    let dialer = if target.secure() {
        r.stage("tls", t, net::tls(target, tcp, addr, o.ca_file.as_deref()))
            .await?
    } else {
        drop(tcp);
        net::plain(addr)
    };
    let (ws_target, config) = if target.is_base() {
        let path = if target.path == "/" {
            o.client_config_path.as_str()
        } else {
            target.path.as_str()
        };
        let work = http_stages::client_config(&dialer, target, path);
        let config = r.stage("client_config", t, work).await?;
        (target.with_ws_path(&config.path), config)
    } else {
        // Not a stage: what the server's client_config says (if it has the usual route)
        // only sharpens later hints (its WebSocket paths, where it reads tokens).
        let ask = http_stages::client_config(&dialer, target, &o.client_config_path);
        let config = tokio::time::timeout(t, ask).await.ok().and_then(Result::ok);
        (target.clone(), config.map(|(c, _)| c).unwrap_or_default())
    };
    Some((dialer, ws_target, config))
}

async fn walk(o: &Options, r: &mut Recorder) -> Option<()> {
    let t = o.timeout;
    let (dialer, ws_target, config) = reach(o, r).await?;
    let work = async { unit(http_stages::plain_get(&dialer, &ws_target, &config.paths).await) };
    r.stage("http", t, work).await?;
    let sources = sources(&o.sources, &config.token_sources);
    let mut last = None;
    for source in &sources {
        let suffix = if sources.len() > 1 {
            format!(" [{}]", source.as_str())
        } else {
            String::new()
        };
        let h = Handshake {
            dialer: &dialer,
            target: &ws_target,
            token: o.token.as_deref(),
            origin: o.origin.as_deref(),
            source: *source,
            enabled: &config.token_sources,
        };
        let mut s = r
            .stage(&format!("upgrade{suffix}"), t, socket::upgrade(h))
            .await?;
        let work = async { unit(socket::subprotocol(&s, *source)) };
        r.stage(&format!("subprotocol{suffix}"), t, work).await?;
        let work = socket::established(&mut s, h, t);
        r.stage(&format!("established{suffix}"), t, work).await?;
        last = Some((s, h));
    }
    let (mut s, h) = last?;
    let work = async { unit(socket::ping(&mut s.ws, t).await) };
    r.stage("ping", t, work).await?;
    let Some(text) = &o.chat else {
        return Some(());
    };
    let run = r
        .stage("chat", t * 3, chat::chat(&mut s.ws, text, t))
        .await?;
    if o.resume {
        r.stage("resume", t * 3, resume(h, &run, t)).await?;
    }
    Some(())
}

/// A second connection, authenticated as the first, replays the chat's thread.
async fn resume(h: Handshake<'_>, run: &chat::ChatRun, t: Duration) -> Result<((), Pass), Fail> {
    let again = |f: Fail| Fail::new(format!("reconnecting: {}", f.detail), f.hint);
    let (mut s, _) = socket::upgrade(h).await.map_err(again)?;
    socket::established(&mut s, h, t).await.map_err(again)?;
    unit(chat::resume(&mut s.ws, run, t).await)
}

fn sources(choice: &Sources, server: &[String]) -> Vec<TokenSource> {
    let parse = |s: &String| serde_json::from_value(serde_json::Value::String(s.clone())).ok();
    let known: Vec<TokenSource> = server.iter().filter_map(parse).collect();
    match choice {
        Sources::One(s) => vec![*s],
        Sources::Default => vec![known.first().copied().unwrap_or(TokenSource::Header)],
        Sources::All if known.is_empty() => {
            vec![
                TokenSource::Header,
                TokenSource::Subprotocol,
                TokenSource::FirstMessage,
            ]
        }
        Sources::All => known,
    }
}
