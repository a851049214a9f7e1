//! Rendering validator reports for people (`--format human`) and machines (`--format json`).

use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, Report};

/// Output format of `check` and `serve`'s refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for terminals and CI logs.
    Human,
    /// One JSON document.
    Json,
}

fn render_diag(out: &mut String, d: &Diagnostic) {
    let sev = match d.severity {
        crate::diagnostic::Severity::Error => "error",
        crate::diagnostic::Severity::Warning => "warning",
    };
    let _ = writeln!(out, "{sev}[{}] {} {}", d.code, d.location(), d.key);
    let _ = writeln!(out, "  {}", d.message);
    let _ = writeln!(out, "  hint: {}", d.hint);
}

/// The human rendering of one report, ending in a one-line verdict.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.online {
        let about = |d: &Diagnostic| d.key == c.name || d.key.starts_with(&format!("{}.", c.name));
        let mark = match (c.ok, report.warnings.iter().any(about)) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok  ",
        };
        let _ = writeln!(
            out,
            "online {mark} {} ({}) {} ms: {}",
            c.name, c.kind, c.ms, c.detail
        );
    }
    for d in report.errors.iter().chain(&report.warnings) {
        render_diag(&mut out, d);
    }
    let (e, w) = (report.errors.len(), report.warnings.len());
    let plural = |n: usize, s: &str| format!("{n} {s}{}", if n == 1 { "" } else { "s" });
    if e == 0 {
        let _ = writeln!(out, "ok {}: valid ({})", report.env, plural(w, "warning"));
    } else {
        let _ = writeln!(
            out,
            "FAILED {}: {}, {}",
            report.env,
            plural(e, "error"),
            plural(w, "warning")
        );
    }
    out
}

/// The JSON rendering of several reports: `{"ok": bool, "environments": [...]}`.
pub fn json(reports: &[Report], ok: bool) -> String {
    let v = serde_json::json!({ "ok": ok, "environments": reports });
    let mut s = serde_json::to_string_pretty(&v).expect("reports serialize");
    s.push('\n');
    s
}
