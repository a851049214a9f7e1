//! What the validator reports: one `Diagnostic` per problem, with a stable code, where it
//! is (file, `line:col`, key path), what is wrong and how to fix it.

use serde::Serialize;

use crate::keypath::KeyPath;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Refuses to boot.
    Error,
    /// Reported; fails only with `--deny-warnings`.
    Warning,
}

/// A problem found by a rule, before it is placed in a file.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Stable code, e.g. `E_ROUTE_CONFLICT`.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The key the problem is about.
    pub path: KeyPath,
    /// One line saying what is wrong.
    pub message: String,
    /// One line saying how to fix it.
    pub hint: String,
}

impl Finding {
    /// An error finding.
    pub fn error(
        code: &'static str,
        path: KeyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, code, path, message.into(), hint.into())
    }

    /// A warning finding.
    pub fn warning(
        code: &'static str,
        path: KeyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, code, path, message.into(), hint.into())
    }

    fn new(
        severity: Severity,
        code: &'static str,
        path: KeyPath,
        message: String,
        hint: String,
    ) -> Self {
        Self {
            code,
            severity,
            path,
            message,
            hint,
        }
    }
}

/// A located problem, as printed and serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Stable code.
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// File the value comes from (or `env PORTCULLIS_…` for an override).
    pub file: String,
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub col: Option<usize>,
    /// Key path, e.g. `routes[2].path`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl Diagnostic {
    /// `file:line:col` (or as much of it as is known).
    pub fn location(&self) -> String {
        match (self.line, self.col) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file),
            (Some(l), None) => format!("{}:{l}", self.file),
            _ => self.file.clone(),
        }
    }
}

/// Everything `check` found for one environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Environment name (the file stem).
    pub env: String,
    /// Problems that refuse boot.
    pub errors: Vec<Diagnostic>,
    /// Problems that do not, unless `--deny-warnings`.
    pub warnings: Vec<Diagnostic>,
    /// `check --online`: every service asked, with its timing (findings are above).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub online: Vec<OnlineCheck>,
}

/// One dependency `check --online` connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnlineCheck {
    /// What was asked: `services.<name>` or the key source's key.
    pub name: String,
    /// Service kind (`postgres`, `redis`, `openai`, `jwks_url`, …).
    pub kind: String,
    /// Its failure refuses readiness (an error finding rather than a warning).
    pub required: bool,
    /// It answered as it should.
    pub ok: bool,
    /// How long it took.
    pub ms: u64,
    /// What was seen (never a URL's credentials).
    pub detail: String,
}

impl Report {
    /// Adds located diagnostics, splitting errors from warnings.
    pub fn extend(&mut self, diags: impl IntoIterator<Item = Diagnostic>) {
        for d in diags {
            match d.severity {
                Severity::Error => self.errors.push(d),
                Severity::Warning => self.warnings.push(d),
            }
        }
    }

    /// True when nothing refuses boot.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}
