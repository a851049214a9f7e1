//! The probe's report for people (aligned lines, hints under the stage) and machines
//! (`{"ok", "failed_stage", "stages": [{"name", "ok", "ms", "detail", "hint"}]}`).

use std::fmt::Write as _;

use super::Report;

/// The human rendering, ending in a one-line verdict.
pub fn human(url: &str, report: &Report) -> String {
    let mut out = format!("portcullis probe {url}\n");
    let width = report
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &report.stages {
        let mark = match (s.ok, s.hint.is_some()) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok  ",
        };
        let _ = writeln!(
            out,
            "  {mark} {:<width$} {:>6} ms  {}",
            s.name, s.ms, s.detail
        );
        if let Some(hint) = &s.hint {
            let _ = writeln!(out, "       {:<width$}            hint: {hint}", "");
        }
    }
    let warnings = report
        .stages
        .iter()
        .filter(|s| s.ok && s.hint.is_some())
        .count();
    match &report.failed_stage {
        Some(stage) => {
            let _ = writeln!(out, "FAILED at stage `{stage}`");
        }
        None => {
            let _ = writeln!(
                out,
                "ok: all {} stages passed ({warnings} warning{})",
                report.stages.len(),
                if warnings == 1 { "" } else { "s" }
            );
        }
    }
    out
}

/// The JSON rendering.
pub fn json(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).unwrap_or_default();
    text.push('\n');
    text
}
