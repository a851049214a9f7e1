//! The `portcullis` command line: `check`, `routes`, `explain`, `schema`, `token`, `init`,
//! `serve`, `probe`.
//!
//! Every command takes `--config-dir` (default `./environments`, also
//! `PORTCULLIS_CONFIG_DIR`) so CI can check any checkout or fixture directory; when it is
//! not given and `./environments` does not exist, the environments built into the binary
//! are used (the embedded default runs anywhere). `--data-dir` (default `./data`) is where
//! relative SQLite paths go.

pub mod check;
mod explain;
mod init;
mod probe;
mod routes;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::load::LoadOptions;
use crate::report::Format;

/// Exit status when `serve` refuses a configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// portcullis: a WebSocket chat gateway that refuses to boot a broken configuration.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding the environment files [default: ./environments, or the built-in
    /// environments when that directory does not exist].
    #[arg(long, global = true, env = "PORTCULLIS_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Base directory of relative data paths (SQLite files).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_DATA_DIR",
        default_value = crate::config::load::DEFAULT_DATA_DIR
    )]
    pub data_dir: PathBuf,
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
        /// Check everything except that `*_env` variables are set (CI without secrets).
        #[arg(long)]
        no_env: bool,
        /// Then connect to every declared service (database and migrations, Redis, model
        /// endpoints, HTTP services, the JWT key source) and report each.
        #[arg(long)]
        online: bool,
    },
    /// Print the resolved HTTP routes and WebSocket paths, with the auth guarding each.
    Routes {
        /// Environment.
        #[arg(long)]
        env: String,
        /// Do not require `*_env` variables to be set.
        #[arg(long)]
        no_env: bool,
    },
    /// Print the effective configuration and where every value comes from (secrets redacted).
    Explain {
        /// Environment.
        #[arg(long)]
        env: String,
        /// Do not require `*_env` variables to be set.
        #[arg(long)]
        no_env: bool,
    },
    /// Write the shipped environment files (and their schema) into DIR for editing.
    Init {
        /// Where to write them.
        #[arg(default_value = "environments")]
        dir: PathBuf,
        /// Overwrite files that exist.
        #[arg(long)]
        force: bool,
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
    /// Walk a deployed endpoint the way a chat client does and name the stage that breaks.
    Probe(probe::Args),
    /// Validate, then serve; on any error print the report and exit 78 without binding.
    Serve {
        /// Environment.
        #[arg(long, default_value = "development")]
        env: String,
    },
}

impl Cli {
    /// Where configuration comes from, as the global flags say.
    fn load_options(&self, no_env: bool) -> LoadOptions {
        let mut opts = LoadOptions::from_process(
            self.config_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR)),
        );
        opts.builtin_fallback = self.config_dir.is_none();
        opts.no_env = no_env;
        opts.data_dir = self.data_dir.clone();
        opts
    }
}

/// rustls needs one process-wide crypto provider; several crates in the tree enable
/// rustls, so the choice is made once, here (a second install is a harmless no-op).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Where environment files are looked for when `--config-dir` is not given.
pub const DEFAULT_CONFIG_DIR: &str = "environments";

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    match &cli.command {
        Command::Check {
            env,
            all,
            format,
            deny_warnings,
            no_env,
            online,
        } => check::run(
            &cli.load_options(*no_env),
            env.as_deref(),
            check::Flags {
                all: *all,
                format: *format,
                deny_warnings: *deny_warnings,
                online: *online,
            },
        ),
        Command::Routes { env, no_env } => routes::run(&cli.load_options(*no_env), env),
        Command::Explain { env, no_env } => explain::run(&cli.load_options(*no_env), env),
        Command::Schema => {
            print!("{}", crate::config::schema::schema_json());
            ExitCode::SUCCESS
        }
        Command::Init { dir, force } => init::run(dir, *force),
        Command::Token { env, sub, ttl } => token::run(&cli.load_options(false), env, sub, *ttl),
        Command::Serve { env } => serve::run(&cli.load_options(false), env),
        Command::Probe(args) => probe::run(&cli.load_options(false), args),
    }
}
