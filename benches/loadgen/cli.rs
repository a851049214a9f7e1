//! Command-line interface of the load generator: global options and one subcommand per
//! workload.

use clap::{Args, Parser, Subcommand};

/// Default HS256 secret shared with `portcullis-baseline`, so a local run needs no setup.
/// It is a benchmark-only value (32+ bytes, as the validator demands) and is never printed.
pub const DEFAULT_SECRET: &str = "portcullis-bench-secret-not-for-production-0123456789";

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-loadgen",
    about = "Load generator speaking the portcullis.v1 wire protocol (loopback targets only)."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(Debug, Args)]
pub struct Common {
    /// WebSocket URL of the server under test (ws:// only).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:9480/ws")]
    pub url: String,
    /// HS256 secret used to mint one token per connection.
    #[arg(long, global = true, env = "PORTCULLIS_BENCH_SECRET", default_value = DEFAULT_SECRET, hide_default_value = true, hide_env_values = true)]
    pub secret: String,
    /// `iss` claim of minted tokens.
    #[arg(long, global = true)]
    pub issuer: Option<String>,
    /// `aud` claim of minted tokens.
    #[arg(long, global = true)]
    pub audience: Option<String>,
    /// Per-operation timeout in milliseconds (one handshake, one run, one ping).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Overall deadline in seconds; no new operation starts after it.
    #[arg(long, global = true, default_value_t = 300)]
    pub deadline_s: u64,
    /// PID of the server process: report its CPU time per operation and its RSS.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Allow a non-loopback target. Off by default: this tool must never load another host.
    #[arg(long, global = true)]
    pub allow_remote: bool,
}

#[derive(Debug, Subcommand)]
pub enum Workload {
    /// N connections, C at a time, each timed from TCP connect to `connection_established`.
    Handshake {
        #[arg(long, default_value_t = 2000)]
        n: usize,
        #[arg(long, default_value_t = 50)]
        c: usize,
    },
    /// C connections (distinct users), each sending M user messages one run at a time.
    Chat {
        #[arg(long, default_value_t = 100)]
        c: usize,
        #[arg(long, default_value_t = 5)]
        m: usize,
        /// Connections opened concurrently during setup.
        #[arg(long, default_value_t = 50)]
        connect_c: usize,
    },
    /// Open N authenticated connections and hold them S seconds.
    Idle {
        #[arg(long, default_value_t = 2000)]
        n: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Connections opened concurrently during setup.
        #[arg(long, default_value_t = 100)]
        connect_c: usize,
        /// Each held connection sends an application `ping` this often (0: never).
        #[arg(long, default_value_t = 0)]
        ping_interval_ms: u64,
    },
    /// One user with K sockets; M messages sent on the first; every event must reach all K.
    Fanout {
        #[arg(long, default_value_t = 4)]
        k: usize,
        #[arg(long, default_value_t = 20)]
        m: usize,
    },
    /// C users, each with a sender socket on `--url` and a watcher on `--watch-url` (another
    /// node, or the same one); each sends M messages. Every event must reach the watcher
    /// once; its lag behind the sender is the cross-node delivery latency.
    Pairs {
        #[arg(long, default_value_t = 100)]
        c: usize,
        #[arg(long, default_value_t = 5)]
        m: usize,
        /// Where the watchers connect (default: `--url`).
        #[arg(long)]
        watch_url: Option<String>,
    },
    /// Read `SUMMARY {json}` lines from files (or stdin) and print the median of every
    /// numeric field per workload.
    Summarize {
        /// Files holding loadgen output; stdin when empty.
        files: Vec<std::path::PathBuf>,
    },
}
