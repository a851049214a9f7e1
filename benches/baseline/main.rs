//! `portcullis-baseline`: the minimal correct portcullis.v1 server the gateway is measured
//! against. tokio-tungstenite plus jsonwebtoken: HS256 token from the subprotocol,
//! `connection_established`, `ping`/`pong`, and for each `user_message` an `ack` and six
//! scripted events with per-thread `seq`, fanned out to all of the user's sockets.
//!
//! Deliberately absent (so the comparison shows their cost in portcullis): storage and
//! idempotent acks, rate limits, token refresh, `cancel`/`resume`, origin checks, metrics.

mod auth;
mod events;
mod hub;
mod session;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// The same allocator as the portcullis binary, so the comparison does not measure
// glibc malloc against mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Advertised in `connection_established.limits` and enforced (close 1009).
pub const MAX_MESSAGE_BYTES: usize = 65_536;

const DEFAULT_SECRET: &str = "portcullis-bench-secret-not-for-production-0123456789";

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-baseline",
    about = "Minimal correct portcullis.v1 server, for benchmarks."
)]
struct Cli {
    /// Address to listen on (any path is served).
    #[arg(long, default_value = "127.0.0.1:9480")]
    listen: SocketAddr,
    /// HS256 secret tokens are verified with.
    #[arg(long, env = "PORTCULLIS_BENCH_SECRET", default_value = DEFAULT_SECRET, hide_default_value = true, hide_env_values = true)]
    secret: String,
    /// Required `iss` claim.
    #[arg(long)]
    issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long)]
    audience: Option<String>,
    /// tungstenite read buffer per connection, in bytes. portcullis's size (1 KiB), not
    /// tungstenite's 128 KiB default: tungstenite 0.29 zero-fills the whole free buffer
    /// before every read, which was 70% of the baseline's instructions per chat run.
    #[arg(long, default_value_t = 1024)]
    read_buffer: usize,
    /// tungstenite write buffer target per connection, in bytes (0: write each message
    /// eagerly); portcullis's size, so a run's frames leave in one send at the flush.
    #[arg(long, default_value_t = 16 * 1024)]
    write_buffer: usize,
    /// Flush after every event instead of once per burst (ack + six events).
    #[arg(long)]
    flush_per_event: bool,
    /// Server ping interval in milliseconds, also advertised as `heartbeat_ms` (0: none).
    #[arg(long, default_value_t = 25_000)]
    heartbeat_ms: u64,
    /// Connections served at once; further accepts wait.
    #[arg(long, default_value_t = 65_536)]
    max_connections: usize,
}

/// Process-scope state shared by all sessions.
pub struct State {
    verifier: auth::Verifier,
    hub: hub::Hub,
    ws_config: WebSocketConfig,
    flush_per_event: bool,
    heartbeat_ms: u64,
    shutdown: CancellationToken,
    conns: AtomicU64,
}

impl State {
    fn next_conn(&self) -> u64 {
        self.conns.fetch_add(1, Ordering::Relaxed)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The accept loop runs on a worker, as portcullis's does: from `block_on` (the main
    // thread) every accepted connection was a futex hand-off to the worker, which cost
    // the baseline ~40% more kernel time per handshake than portcullis.
    rt.block_on(async { tokio::spawn(serve(cli)).await.unwrap_or(ExitCode::FAILURE) })
}

async fn serve(cli: Cli) -> ExitCode {
    // Bind ourselves so a taken port is a message, not a panic.
    let listener = match TcpListener::bind(cli.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(cli.read_buffer)
        .write_buffer_size(cli.write_buffer)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let state = Arc::new(State {
        verifier: auth::Verifier::new(&cli.secret, cli.issuer.as_deref(), cli.audience.as_deref()),
        hub: hub::Hub::default(),
        ws_config,
        flush_per_event: cli.flush_per_event,
        heartbeat_ms: cli.heartbeat_ms,
        shutdown: CancellationToken::new(),
        conns: AtomicU64::new(1),
    });
    let limit = Arc::new(Semaphore::new(cli.max_connections));
    let tracker = TaskTracker::new();
    eprintln!(
        "portcullis-baseline listening on ws://{} (read_buffer={} write_buffer={} flush_per_event={} heartbeat_ms={})",
        cli.listen, cli.read_buffer, cli.write_buffer, cli.flush_per_event, cli.heartbeat_ms
    );
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut interrupted => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut interrupted => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let state = state.clone();
                tracker.spawn(async move {
                    session::serve(stream, state).await;
                    drop(permit);
                });
            }
            // Out of fds and the like: back off briefly instead of spinning.
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("shutting down");
    state.shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    ExitCode::SUCCESS
}
