//! `portcullis probe URL`: the client doctor (`crate::probe`). Exit 0 when every stage
//! passed, 1 when one failed, 2 on bad usage (a bad URL, a token that cannot be minted).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::compile::compile;
use crate::config::load::LoadOptions;
use crate::config::{Config, EnvironmentKind, Handler, TokenSource};
use crate::probe::{self, Options, Sources, Target};
use crate::report::Format;

/// Where the probe puts the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")] // spelled as in `auth.token_sources`
pub enum SourceArg {
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: portcullis.v1, jwt.<token>`.
    Subprotocol,
    /// `{"type":"auth","token":…}` after the upgrade.
    FirstMessage,
    /// `?access_token=` (off by default on servers).
    Query,
    /// Each source the server enables, one connection each.
    All,
}

/// `probe`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `ws(s)://host/path`, or an `http(s)://` base whose `client_config` route names the
    /// WebSocket URL (`http(s)://host/path/of/client-config` names the route itself).
    pub url: String,
    /// The token (also `PORTCULLIS_PROBE_TOKEN`, which keeps it out of process lists).
    #[arg(
        long,
        env = "PORTCULLIS_PROBE_TOKEN",
        hide_env_values = true,
        conflicts_with = "env"
    )]
    pub token: Option<String>,
    /// Mint a token with this environment's key (development, test, staging with a shared secret).
    #[arg(long, requires = "sub")]
    pub env: Option<String>,
    /// The minted token's subject.
    #[arg(long, requires = "env")]
    pub sub: Option<String>,
    /// Send this `Origin`, as a browser page on it would.
    #[arg(long)]
    pub origin: Option<String>,
    /// Where the token goes [default: the first of the server's token_sources, else header].
    #[arg(long, value_enum)]
    pub token_source: Option<SourceArg>,
    /// Send this message and check the run's events.
    #[arg(long)]
    pub chat: Option<String>,
    /// Replay the chat's thread on a new connection and compare (needs --chat).
    #[arg(long, requires = "chat")]
    pub resume: bool,
    /// Limit of each stage and of each frame awaited, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust for wss:// and https://.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

/// Runs `probe`.
pub fn run(opts: &LoadOptions, args: &Args) -> ExitCode {
    let options = match options(opts, args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(probe::run(&options));
    match args.format {
        Format::Human => print!("{}", probe::human(&args.url, &report)),
        Format::Json => print!("{}", probe::json(&report)),
    }
    ExitCode::from(if report.ok { 0 } else { 1 })
}

fn options(opts: &LoadOptions, args: &Args) -> Result<Options, String> {
    let target = Target::parse(&args.url)?;
    let mut client_config_path = probe::DEFAULT_CLIENT_CONFIG_PATH.to_string();
    let mut token = args.token.clone();
    if let (Some(env), Some(sub)) = (&args.env, &args.sub) {
        let outcome = compile(opts, env);
        let Some(config) = outcome.config() else {
            return Err(format!(
                "environment `{env}` does not compile, so no token can be minted:\n{}",
                crate::report::human(&outcome.report)
            ));
        };
        token = Some(mint(config, env, sub)?);
        if let Some(route) = config
            .routes
            .iter()
            .find(|r| r.handler == Handler::ClientConfig)
        {
            client_config_path = route.path.clone();
        }
    }
    let sources = match args.token_source {
        None => Sources::Default,
        Some(SourceArg::All) => Sources::All,
        Some(SourceArg::Header) => Sources::One(TokenSource::Header),
        Some(SourceArg::Subprotocol) => Sources::One(TokenSource::Subprotocol),
        Some(SourceArg::FirstMessage) => Sources::One(TokenSource::FirstMessage),
        Some(SourceArg::Query) => Sources::One(TokenSource::Query),
    };
    Ok(Options {
        target,
        token,
        origin: args.origin.clone(),
        sources,
        chat: args.chat.clone(),
        resume: args.resume,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ca_file: args.ca_file.clone(),
        client_config_path,
    })
}

/// A 15-minute token with the environment's shared secret; production never mints.
fn mint(config: &Config, env: &str, sub: &str) -> Result<String, String> {
    if config.kind == EnvironmentKind::Production {
        return Err("refusing to mint a token for production (its tokens come from the identity provider): pass --token".into());
    }
    let jwt =
        config.auth.jwt.as_ref().ok_or_else(|| {
            format!("environment `{env}` has auth.mode = \"none\": drop --env/--sub")
        })?;
    crate::auth::mint_for_config(jwt, sub, Duration::from_secs(900), chrono::Utc::now())
        .map_err(|e| format!("cannot mint for `{env}`: {e}; pass --token"))
}
