//! The state every semantic rule shares: the raw configuration, the environment
//! variables, and the list findings are collected into (never stopping at the first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::raw::{EnvironmentKind, RawConfig};
use crate::diagnostic::Finding;
use crate::keypath::KeyPath;

/// Shared input and output of the rules.
pub struct Ctx<'a> {
    /// The configuration being checked.
    pub raw: &'a RawConfig,
    /// `environment.kind`.
    pub kind: EnvironmentKind,
    /// Environment variables visible to the process.
    pub env: &'a BTreeMap<String, String>,
    /// Where relative key files resolve.
    pub config_dir: &'a Path,
    /// `check --no-env`: a `*_env` variable that is not set is not an error.
    pub no_env: bool,
    /// Everything found so far.
    pub findings: Vec<Finding>,
    reported_missing: BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    /// A context for one environment.
    pub fn new(
        raw: &'a RawConfig,
        env: &'a BTreeMap<String, String>,
        config_dir: &'a Path,
        no_env: bool,
    ) -> Self {
        Self {
            raw,
            kind: raw.environment.kind,
            env,
            config_dir,
            no_env,
            findings: Vec::new(),
            reported_missing: BTreeSet::new(),
        }
    }

    /// Records an error.
    pub fn error(
        &mut self,
        code: &'static str,
        path: KeyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.findings
            .push(Finding::error(code, path, message, hint));
    }

    /// Records a warning.
    pub fn warn(
        &mut self,
        code: &'static str,
        path: KeyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.findings
            .push(Finding::warning(code, path, message, hint));
    }

    /// True for `development` and `test`.
    pub fn relaxed(&self) -> bool {
        self.kind.is_relaxed()
    }

    /// True for `production`.
    pub fn production(&self) -> bool {
        self.kind == EnvironmentKind::Production
    }

    /// Reads the variable named by a `*_env` key; a missing or empty one is an
    /// `E_ENV_MISSING` error (reported once per variable, so every missing one is named),
    /// except with `check --no-env`, where rules that need the value skip it.
    pub fn env_var(&mut self, path: KeyPath, var: &str, what: &str) -> Option<String> {
        match self.env.get(var).filter(|v| !v.is_empty()) {
            Some(v) => Some(v.clone()),
            None if self.no_env => None,
            None => {
                if self.reported_missing.insert(var.to_string()) {
                    self.error(
                        "E_ENV_MISSING",
                        path,
                        format!("environment variable `{var}` ({what}) is not set"),
                        format!("export {var}=… in the service's environment (secret store), or change `{var}`"),
                    );
                }
                None
            }
        }
    }
}
