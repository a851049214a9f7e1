//! Loading one environment: its file, the files it `extends`, and `PORTCULLIS_*` overrides,
//! merged with figment into one JSON value, with enough kept to say where each value
//! came from (file and `line:col`, environment variable, or default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::source::SourceFile;
use crate::diagnostic::{Diagnostic, Severity};
use crate::keypath::{KeyPath, Seg};

/// Prefix of configuration override variables (`PORTCULLIS_SERVER__LISTEN`).
pub const OVERRIDE_PREFIX: &str = "PORTCULLIS_";

/// Where to read from and which environment variables are visible.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory holding `<env>.toml` files.
    pub config_dir: PathBuf,
    /// Read the built-in environments when `config_dir` does not exist (set when the
    /// directory was not named explicitly, so `serve` runs the embedded default anywhere).
    pub builtin_fallback: bool,
    /// The process environment (a snapshot, so tests can pass their own).
    pub env: BTreeMap<String, String>,
    /// Check everything except that `*_env` variables are set (`check --no-env`, for CI
    /// without production secrets); a configuration loaded so can be checked, not served.
    pub no_env: bool,
    /// Base of relative data paths (SQLite files), `--data-dir`.
    pub data_dir: PathBuf,
}

/// Default of `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "data";

impl LoadOptions {
    /// Options for `config_dir` with these variables (no built-in fallback, every `*_env`
    /// variable checked, data under `./data`).
    pub fn new(config_dir: impl Into<PathBuf>, env: BTreeMap<String, String>) -> Self {
        Self {
            config_dir: config_dir.into(),
            builtin_fallback: false,
            env,
            no_env: false,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }

    /// Options reading the real process environment.
    pub fn from_process(config_dir: impl Into<PathBuf>) -> Self {
        Self::new(config_dir, std::env::vars().collect())
    }

    /// True when files come from the binary (see [`LoadOptions::builtin_fallback`]).
    pub fn uses_builtin(&self) -> bool {
        self.builtin_fallback && !self.config_dir.exists()
    }

    /// The environments this source holds (file stems of files with `[environment]`).
    pub fn environment_names(&self) -> std::io::Result<Vec<String>> {
        if self.uses_builtin() {
            return Ok(super::builtin::environment_names());
        }
        environment_names(&self.config_dir)
    }

    /// Where files are read from, as reports name it.
    pub fn source_name(&self) -> String {
        if self.uses_builtin() {
            "the built-in environments".into()
        } else {
            display_path(&self.config_dir)
        }
    }
}

/// One loaded environment, merged but not yet checked.
#[derive(Debug)]
pub struct Loaded {
    /// The environment's file stem.
    pub env_name: String,
    /// The configuration directory (relative key files resolve here).
    pub config_dir: PathBuf,
    /// Base of relative data paths.
    pub data_dir: PathBuf,
    /// `*_env` variables are not required to be set (`check --no-env`).
    pub no_env: bool,
    /// The environment file first, then what it extends, in order.
    pub files: Vec<SourceFile>,
    /// Override variable for each overridden key path.
    pub overrides: BTreeMap<KeyPath, String>,
    /// The merged value (files, then overrides).
    pub merged: serde_json::Value,
    /// The environment variables seen (for `*_env` keys).
    pub env: BTreeMap<String, String>,
}

/// Where a value is, for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name or `env VAR`.
    pub file: String,
    /// Line, when known.
    pub line: Option<usize>,
    /// Column, when known.
    pub col: Option<usize>,
}

impl Loaded {
    /// Locates a key path: the override variable that set it, else the first file (in
    /// priority order) that writes it, else the nearest parent that is written.
    pub fn locate(&self, path: &KeyPath) -> Location {
        if let Some(var) = self.override_for(path) {
            return Location {
                file: format!("env {var}"),
                line: None,
                col: None,
            };
        }
        let mut probe = path.clone();
        loop {
            for f in &self.files {
                if let Some(lc) = f.locate(&probe) {
                    return Location {
                        file: f.display.clone(),
                        line: Some(lc.line),
                        col: Some(lc.col),
                    };
                }
            }
            if probe.is_root() {
                break;
            }
            probe = probe.parent();
        }
        Location {
            file: self.files[0].display.clone(),
            line: Some(1),
            col: Some(1),
        }
    }

    /// The override variable that set this path or one of its parents.
    pub fn override_for(&self, path: &KeyPath) -> Option<&str> {
        self.overrides
            .iter()
            .find(|(p, _)| path.0.starts_with(&p.0))
            .map(|(_, v)| v.as_str())
    }

    /// The file that provides a key path, if any file does.
    pub fn file_for(&self, path: &KeyPath) -> Option<&SourceFile> {
        self.files.iter().find(|f| f.contains(path))
    }
}

/// Turns a finding's path into a located diagnostic.
pub fn place(
    loaded: &Loaded,
    code: &'static str,
    severity: Severity,
    path: &KeyPath,
    message: String,
    hint: String,
) -> Diagnostic {
    let loc = loaded.locate(path);
    Diagnostic {
        code,
        severity,
        file: loc.file,
        line: loc.line,
        col: loc.col,
        key: path.to_string(),
        message,
        hint,
    }
}

/// Names of the environments in a directory: every `*.toml` that is not only a base that
/// others extend (a base has no `[environment]` table).
pub fn environment_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if super::builtin::is_environment(&text)
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    cwd.and_then(|c| path.strip_prefix(&c).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

fn fatal(
    code: &'static str,
    file: String,
    line: Option<usize>,
    col: Option<usize>,
    message: String,
    hint: String,
) -> Diagnostic {
    Diagnostic {
        code,
        severity: Severity::Error,
        file,
        line,
        col,
        key: "(file)".into(),
        message,
        hint,
    }
}

/// Reads `<stem>.toml` from the configuration source; `wanted_by` is the file whose
/// `extends` names it.
fn read_file(
    opts: &LoadOptions,
    stem: &str,
    wanted_by: Option<&SourceFile>,
) -> Result<SourceFile, Box<Diagnostic>> {
    let (path, display, text) = if opts.uses_builtin() {
        let display = super::builtin::display(stem);
        let text = super::builtin::text(stem)
            .map(str::to_string)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
        (PathBuf::from(&display), display, text)
    } else {
        let path = opts.config_dir.join(format!("{stem}.toml"));
        let display = display_path(&path);
        let text = std::fs::read_to_string(&path);
        (path, display, text)
    };
    let text = text.map_err(|e| Box::new(not_found(opts, stem, &display, wanted_by, &e)))?;
    SourceFile::parse(path, display.clone(), text).map_err(|(msg, lc)| {
        Box::new(fatal(
            "E_TOML_SYNTAX",
            display,
            Some(lc.line),
            Some(lc.col),
            format!("not valid TOML: {msg}"),
            "fix the syntax at this position (quotes, brackets, `key = value`)".into(),
        ))
    })
}

/// A file that cannot be read: the environment asked for, or one an `extends` names.
fn not_found(
    opts: &LoadOptions,
    stem: &str,
    display: &str,
    wanted_by: Option<&SourceFile>,
    error: &std::io::Error,
) -> Diagnostic {
    if let Some(parent) = wanted_by {
        let lc = parent.locate(&KeyPath::parse("extends"));
        return fatal(
            "E_EXTENDS_NOT_FOUND",
            parent.display.clone(),
            lc.map(|l| l.line),
            lc.map(|l| l.col),
            format!("`extends = \"{stem}\"` names {display}, which cannot be read: {error}"),
            format!("create {display} or point `extends` at an existing file"),
        );
    }
    let searched = opts.source_name();
    let hint = match opts.environment_names() {
        Ok(names) if !names.is_empty() => format!(
            "environments in {searched}: {}; pick one with --env, or create {display}",
            names.join(", ")
        ),
        Ok(_) => format!(
            "{searched} holds no environment file (a file with an [environment] table); `portcullis init {searched}` writes the shipped ones"
        ),
        Err(e) => format!(
            "{searched} cannot be listed ({e}); point --config-dir (or PORTCULLIS_CONFIG_DIR) at the directory holding your environment files, or run `portcullis init` to write them"
        ),
    };
    fatal(
        "E_ENV_NOT_FOUND",
        display.to_string(),
        None,
        None,
        format!("environment `{stem}` has no file {display} in {searched}: {error}"),
        hint,
    )
}

/// Loads one environment; a missing file, a syntax error or a bad `extends` chain stops
/// here (every other problem is left to the validator, which collects them all).
pub fn load(opts: &LoadOptions, env_name: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let files = extends_chain(opts, env_name)?;
    let mut figment = Figment::new();
    for f in files.iter().rev() {
        figment = figment.merge(Toml::string(&f.text));
    }
    let (figment, overrides) = env_overrides(figment, &opts.env);
    let merged: serde_json::Value = figment.extract().map_err(|e| {
        vec![fatal(
            "E_LOAD",
            files[0].display.clone(),
            None,
            None,
            format!("could not merge the configuration: {e}"),
            "check the files and PORTCULLIS_* variables named above".into(),
        )]
    })?;
    Ok(Loaded {
        env_name: env_name.to_string(),
        config_dir: opts.config_dir.clone(),
        data_dir: opts.data_dir.clone(),
        no_env: opts.no_env,
        files,
        overrides,
        merged,
        env: opts.env.clone(),
    })
}

/// Reads the environment's file and every file it `extends`, most specific first;
/// `E_EXTENDS_CYCLE` refuses a chain that comes back to a file it already read, which
/// would never end.
fn extends_chain(opts: &LoadOptions, env_name: &str) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    let mut files = vec![read_file(opts, env_name, None).map_err(|d| vec![*d])?];
    let mut seen = vec![env_name.to_string()];
    loop {
        let last = files.last().expect("at least the environment file");
        let Some(base) = last
            .root()
            .get("extends")
            .and_then(|i| i.as_str())
            .map(str::to_string)
        else {
            return Ok(files);
        };
        if seen.contains(&base) {
            let lc = last.locate(&KeyPath::parse("extends"));
            return Err(vec![fatal(
                "E_EXTENDS_CYCLE",
                last.display.clone(),
                lc.map(|l| l.line),
                lc.map(|l| l.col),
                format!(
                    "`extends` goes round in a circle: {} -> {base}",
                    seen.join(" -> ")
                ),
                "let the base file extend nothing".into(),
            )]);
        }
        seen.push(base.clone());
        let next = read_file(opts, &base, Some(last)).map_err(|d| vec![*d])?;
        files.push(next);
    }
}

/// Merges every `PORTCULLIS_SECTION__KEY` variable over the files (variables without `__`
/// are not overrides) and remembers which variable set which key, so findings can name it.
fn env_overrides(
    mut figment: Figment,
    env: &BTreeMap<String, String>,
) -> (Figment, BTreeMap<KeyPath, String>) {
    let mut overrides = BTreeMap::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(OVERRIDE_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let dotted = rest.to_ascii_lowercase().replace("__", ".");
        let parsed: figment::value::Value = value.parse().expect("figment parses any string");
        figment = figment.merge(Serialized::global(&dotted, parsed));
        overrides.insert(
            KeyPath(dotted.split('.').map(|s| Seg::Key(s.to_string())).collect()),
            var.clone(),
        );
    }
    (figment, overrides)
}
