//! The effective configuration, one `key = value` line each with where the value came
//! from: `file:line:col`, `env VAR`, or `default`. Secrets are redacted; `*_env` keys show
//! whether their variable is set, never its value.

use std::fmt::Write as _;

use serde_json::Value;

use super::load::Loaded;
use super::raw::RawConfig;
use crate::keypath::KeyPath;

/// Keys whose values are secrets wherever they appear.
const SECRET_KEYS: [&str; 2] = ["secret", "api_key"];

/// Renders the effective configuration with provenance.
pub fn render(loaded: &Loaded, raw: &RawConfig) -> String {
    let effective = serde_json::to_value(raw).expect("raw config serializes");
    let mut lines = Vec::new();
    walk(&effective, &KeyPath::root(), &mut lines);
    let mut out = String::new();
    let chain: Vec<&str> = loaded.files.iter().map(|f| f.display.as_str()).collect();
    let _ = writeln!(
        out,
        "# environment `{}` from {}",
        loaded.env_name,
        chain.join(" <- ")
    );
    let width = lines
        .iter()
        .map(|(k, v)| k.len() + v.len() + 3)
        .max()
        .unwrap_or(0)
        .min(72);
    for (path, value) in lines {
        let key = KeyPath::parse(&path);
        let source = source_of(loaded, &key);
        let mut shown = if SECRET_KEYS.iter().any(|s| path.ends_with(&format!(".{s}"))) {
            "\"[redacted]\"".to_string()
        } else {
            redact_url(&value)
        };
        if path.ends_with("_env")
            && let Some(var) = serde_json::from_str::<String>(&value).ok()
        {
            let state = match loaded.env.get(&var) {
                Some(v) if !v.is_empty() => format!("set, {} bytes", v.len()),
                _ => "NOT SET".to_string(),
            };
            shown = format!("{shown} ({state})");
        }
        let entry = format!("{path} = {shown}");
        let _ = writeln!(out, "{entry:width$}  # {source}");
    }
    out
}

fn source_of(loaded: &Loaded, key: &KeyPath) -> String {
    if let Some(var) = loaded.override_for(key) {
        return format!("env {var}");
    }
    for f in &loaded.files {
        if let Some(lc) = f.locate(key) {
            return format!("{}:{}:{}", f.display, lc.line, lc.col);
        }
    }
    "default".to_string()
}

fn walk(v: &Value, at: &KeyPath, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                walk(child, &at.key(k), out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &at.index(i), out);
            }
        }
        other => out.push((at.to_string(), other.to_string())),
    }
}

/// Hides the password of `scheme://user:password@host` URLs.
fn redact_url(json: &str) -> String {
    let Some((scheme, rest)) = json.split_once("://") else {
        return json.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{scheme}://{user}:[redacted]@{host}{}",
                &rest[authority_end..]
            )
        }
        _ => json.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_url_passwords_only() {
        assert_eq!(
            super::redact_url("\"postgres://u:pw@h:5432/db\""),
            "\"postgres://u:[redacted]@h:5432/db\""
        );
        assert_eq!(
            super::redact_url("\"sqlite://data/x.db\""),
            "\"sqlite://data/x.db\""
        );
    }
}
