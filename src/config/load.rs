//! Loading one environment: its file, the files it `extends`, and `PORTCULLIS_*` overrides,
//! merged with figment into one JSON value, with enough kept to say where each value
//! came from (file and `line:col`, environment variable, or default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};

use super::path::{KeyPath, Seg};
use super::source::SourceFile;
use crate::diagnostic::{Diagnostic, Severity};

/// Prefix of configuration override variables (`PORTCULLIS_SERVER__LISTEN`).
pub const OVERRIDE_PREFIX: &str = "PORTCULLIS_";

/// Where to read from and which environment variables are visible.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory holding `<env>.toml` files.
    pub config_dir: PathBuf,
    /// The process environment (a snapshot, so tests can pass their own).
    pub env: BTreeMap<String, String>,
}

impl LoadOptions {
    /// Options reading the real process environment.
    pub fn from_process(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            env: std::env::vars().collect(),
        }
    }
}

/// One loaded environment, merged but not yet checked.
#[derive(Debug)]
pub struct Loaded {
    /// The environment's file stem.
    pub env_name: String,
    /// The configuration directory.
    pub config_dir: PathBuf,
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
        let is_base = toml_edit::Document::parse(text)
            .map(|d| !d.as_table().contains_key("environment"))
            .unwrap_or(false);
        if !is_base && let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
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

fn read_file(
    dir: &Path,
    stem: &str,
    wanted_by: Option<&SourceFile>,
) -> Result<SourceFile, Box<Diagnostic>> {
    let path = dir.join(format!("{stem}.toml"));
    let display = display_path(&path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let available = environment_names(dir).unwrap_or_default().join(", ");
        Box::new(match wanted_by {
            Some(parent) => {
                let lc = parent.locate(&KeyPath::parse("extends"));
                fatal(
                    "E_EXTENDS_NOT_FOUND",
                    parent.display.clone(),
                    lc.map(|l| l.line),
                    lc.map(|l| l.col),
                    format!("`extends = \"{stem}\"` names {display}, which cannot be read: {e}"),
                    format!("create {display} or point `extends` at an existing file"),
                )
            }
            None => fatal(
                "E_ENV_NOT_FOUND",
                display.clone(),
                None,
                None,
                format!("environment `{stem}` has no file {display}: {e}"),
                format!("pick one of: {available} (from {})", display_path(dir)),
            ),
        })
    })?;
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

/// Loads one environment; a missing file, a syntax error or a bad `extends` chain stops
/// here (every other problem is left to the validator, which collects them all).
pub fn load(opts: &LoadOptions, env_name: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let dir = &opts.config_dir;
    let mut files = vec![read_file(dir, env_name, None).map_err(|d| vec![*d])?];
    let mut seen = vec![env_name.to_string()];
    loop {
        let last = files.last().expect("at least the environment file");
        let Some(base) = last
            .root()
            .get("extends")
            .and_then(|i| i.as_str())
            .map(str::to_string)
        else {
            break;
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
        let next = read_file(dir, &base, Some(last)).map_err(|d| vec![*d])?;
        files.push(next);
    }

    let mut figment = Figment::new();
    for f in files.iter().rev() {
        figment = figment.merge(Toml::file_exact(&f.path));
    }
    let mut overrides = BTreeMap::new();
    for (var, value) in &opts.env {
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
        config_dir: dir.clone(),
        files,
        overrides,
        merged,
        env: opts.env.clone(),
    })
}
