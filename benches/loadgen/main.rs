//! `portcullis-loadgen`: drives a portcullis.v1 server on loopback with one of four
//! workloads (handshake, chat, idle, fanout) and prints a table plus one `SUMMARY {json}`
//! line. See benches/README.md for how `compare.sh` uses it.
//!
//! Every loop is bounded in count and in time: a per-operation timeout and an overall
//! deadline, after which no new operation starts.

mod chat;
mod cli;
mod client;
mod fanout;
mod handshake;
mod idle;
mod pairs;
mod procstat;
mod report;
mod summarize;
mod target;
#[cfg(test)]
mod tests;
mod token;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use tokio::time::Instant;

use cli::{Cli, Workload};
use procstat::Watch;

/// What every workload needs: where to connect, how to authenticate, and its time bounds.
pub struct Ctx {
    pub target: target::Target,
    pub minter: token::Minter,
    pub timeout: Duration,
    pub deadline: Instant,
    /// Distinguishes this run's message ids and users from earlier runs against the same server.
    pub nonce: String,
    /// The server process, when `--server-pid` was given.
    pub server: Option<Watch>,
    /// This process, to show when the load generator is the bottleneck.
    pub me: Watch,
}

impl Ctx {
    /// Restarts CPU accounting once setup (opening connections) is done, so per-operation
    /// figures cover the measured phase only.
    pub fn start_measuring(&self) {
        if let Some(s) = &self.server {
            s.restart();
        }
        self.me.restart();
    }
}

/// What a workload returns: its own JSON figures and the operation count that server CPU
/// time is divided by.
pub struct Outcome {
    pub figures: Value,
    pub ops: u64,
    pub op_name: &'static str,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Workload::Summarize { files } = &cli.workload {
        return summarize::run(files);
    }
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
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let c = cli.common;
    let target = match target::Target::resolve(&c.url, c.allow_remote).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (soft, hard) = procstat::raise_nofile();
    let ctx = Ctx {
        target,
        minter: token::Minter::new(&c.secret, c.issuer.clone(), c.audience.clone()),
        timeout: Duration::from_millis(c.timeout_ms),
        deadline: Instant::now() + Duration::from_secs(c.deadline_s),
        nonce: format!("{:08x}", rand::random::<u32>()),
        server: c.server_pid.map(|p| Watch::start(&p.to_string())),
        me: Watch::start("self"),
    };
    let started = Instant::now();
    // A hard stop a little after the deadline, in case an operation ignores its own bound.
    let hard_stop = ctx.deadline + ctx.timeout + Duration::from_secs(5);
    let work = async {
        match cli.workload {
            Workload::Handshake { n, c } => handshake::run(&ctx, n, c).await,
            Workload::Chat { c, m, connect_c } => chat::run(&ctx, c, m, connect_c).await,
            Workload::Idle {
                n,
                secs,
                connect_c,
                ping_interval_ms,
            } => idle::run(&ctx, n, secs, connect_c, ping_interval_ms).await,
            Workload::Fanout { k, m } => fanout::run(&ctx, k, m).await,
            Workload::Pairs { c, m, watch_url } => {
                let url = watch_url.as_deref().unwrap_or(&ctx.target.url);
                match target::Target::resolve(url, false).await {
                    Ok(watch) => pairs::run(&ctx, &watch, c, m).await,
                    Err(e) => Outcome {
                        figures: serde_json::json!({"workload": "pairs", "errors": {e: 1}}),
                        ops: 0,
                        op_name: "event",
                    },
                }
            }
            Workload::Summarize { .. } => unreachable!("handled before the runtime starts"),
        }
    };
    let Ok(outcome) = tokio::time::timeout_at(hard_stop, work).await else {
        let s = json!({"error": "hard deadline exceeded", "url": c.url});
        report::emit(&s);
        return ExitCode::FAILURE;
    };
    let mut summary = json!({
        "url": c.url,
        "op": outcome.op_name,
        "ops": outcome.ops,
        "wall_s": started.elapsed().as_secs_f64(),
        "fd_limit": {"soft": soft, "hard": hard},
    });
    if let (Value::Object(s), Value::Object(f)) = (&mut summary, outcome.figures) {
        // Workload figures first in spirit, but a flat object keeps the JSON easy to query.
        s.extend(f);
    }
    // Totals make "no errors, no violations" visible in medians, where empty maps vanish.
    for key in ["errors", "violations"] {
        let total: u64 = summary[key]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        summary[format!("{key}_total")] = json!(total);
    }
    if let Some(w) = &ctx.server {
        summary["server"] = w.finish(outcome.ops);
    }
    summary["loadgen"] = ctx.me.finish(outcome.ops);
    report::emit(&summary);
    // No completed operation at all means the target is down or refusing us; let scripts see it.
    if outcome.ops == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
