//! The `portcullis` command line: `check`, `routes`, `explain`, `schema`, `token`, `serve`.
//!
//! Every command takes `--config-dir` (default `./environments`, also
//! `PORTCULLIS_CONFIG_DIR`) so CI can check any checkout or fixture directory.

pub mod check;
mod explain;
mod routes;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::report::Format;

/// Exit status when `serve` refuses a configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// portcullis: a WebSocket chat gateway that refuses to boot a broken configuration.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding the environment files.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_CONFIG_DIR",
        default_value = "environments"
    )]
    pub config_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate one environment (or all) and report every problem at once.
    Check {
        /// Environment to check (file stem in the config directory).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        env: Option<String>,
        /// Check every environment, and the drift between them.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Fail on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the resolved HTTP routes and WebSocket paths, with the auth guarding each.
    Routes {
        /// Environment.
        #[arg(long)]
        env: String,
    },
    /// Print the effective configuration and where every value comes from (secrets redacted).
    Explain {
        /// Environment.
        #[arg(long)]
        env: String,
    },
    /// Print the JSON Schema of environment files.
    Schema,
    /// Mint a token with an environment's key (refused for production).
    Token {
        /// Environment.
        #[arg(long)]
        env: String,
        /// The token's subject (user id).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `15m`, `1h`, `2h30m`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Validate, then serve; on any error print the report and exit 78 without binding.
    Serve {
        /// Environment.
        #[arg(long, default_value = "development")]
        env: String,
    },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            env,
            all,
            format,
            deny_warnings,
        } => check::run(&cli.config_dir, env.as_deref(), all, format, deny_warnings),
        Command::Routes { env } => routes::run(&cli.config_dir, &env),
        Command::Explain { env } => explain::run(&cli.config_dir, &env),
        Command::Schema => {
            print!("{}", crate::config::schema::schema_json());
            ExitCode::SUCCESS
        }
        Command::Token { env, sub, ttl } => token::run(&cli.config_dir, &env, &sub, ttl),
        Command::Serve { env } => serve::run(&cli.config_dir, &env),
    }
}
