//! The JSON Schema pass: every schema violation of the merged configuration as a finding
//! with its own code (`E_UNKNOWN_KEY`, `E_MISSING_KEY`, `E_TYPE`, `E_RANGE`, `E_PATTERN`,
//! `E_ENUM`), plus a copy of the value with unknown keys removed so the semantic rules can
//! still run and report everything in one pass.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use super::schema_walk::{allowed_keys, allowed_values, closest, subschema_at};
use crate::config::schema::schema_value;
use crate::diagnostic::Finding;
use crate::keypath::{KeyPath, Seg};

/// The generated schema and its compiled validator; immutable and process-wide.
static SCHEMA: LazyLock<(Value, jsonschema::Validator)> = LazyLock::new(|| {
    let schema = schema_value();
    let validator = jsonschema::validator_for(&schema).expect("the generated schema compiles");
    (schema, validator)
});

/// The generated schema (for navigating it by key path).
pub fn schema() -> &'static Value {
    &SCHEMA.0
}

/// Result of the schema pass.
pub struct SchemaOutcome {
    /// One finding per violation.
    pub findings: Vec<Finding>,
    /// The merged value with unknown keys removed.
    pub pruned: Value,
}

/// Checks the merged configuration against the schema.
pub fn check(merged: &Value) -> SchemaOutcome {
    let (schema, validator) = &*SCHEMA;
    let mut out = SchemaOutcome {
        findings: Vec::new(),
        pruned: merged.clone(),
    };
    collect(schema, validator, merged, &KeyPath::root(), &mut out);
    out
}

/// Validates `instance` (found at `prefix` in the whole configuration) and records one
/// finding per violation, with paths relative to the document root.
fn collect(
    schema: &Value,
    validator: &jsonschema::Validator,
    instance: &Value,
    prefix: &KeyPath,
    out: &mut SchemaOutcome,
) {
    for err in validator.iter_errors(instance) {
        let rel = KeyPath::from_pointer(err.instance_path().as_str());
        let at = KeyPath(prefix.0.iter().chain(&rel.0).cloned().collect());
        let shown = short(err.instance());
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                unknown_keys(schema, &at, unexpected, out)
            }
            ValidationErrorKind::Required { property } => {
                out.findings.push(missing_key(schema, &at, property))
            }
            ValidationErrorKind::Type { kind } => {
                out.findings.push(wrong_type(schema, &at, &shown, kind))
            }
            ValidationErrorKind::Minimum { .. }
            | ValidationErrorKind::Maximum { .. }
            | ValidationErrorKind::ExclusiveMinimum { .. }
            | ValidationErrorKind::ExclusiveMaximum { .. } => {
                out.findings.push(out_of_range(schema, &at, &shown))
            }
            ValidationErrorKind::MinLength { limit } | ValidationErrorKind::MinItems { limit } => {
                out.findings.push(too_short(schema, &at, &shown, *limit))
            }
            ValidationErrorKind::MaxLength { limit } | ValidationErrorKind::MaxItems { limit } => {
                out.findings.push(too_long(&at, &shown, *limit))
            }
            ValidationErrorKind::Pattern { pattern } => {
                out.findings.push(wrong_form(schema, &at, &shown, pattern))
            }
            ValidationErrorKind::AnyOf { .. }
                if !err.instance().is_null() && allowed_values(schema, &at).is_empty() =>
            {
                optional_table(schema, &at, &err, out)
            }
            ValidationErrorKind::Enum { .. }
            | ValidationErrorKind::OneOfNotValid { .. }
            | ValidationErrorKind::AnyOf { .. }
            | ValidationErrorKind::Constant { .. } => {
                out.findings
                    .push(not_accepted(schema, &at, &shown, err.instance()))
            }
            _ => out.findings.push(other(schema, &at, &err)),
        }
    }
}

/// `E_UNKNOWN_KEY`: refuses keys the schema does not define (usually typos, which would
/// otherwise be silently ignored) and prunes them so the semantic rules can still run.
fn unknown_keys(schema: &Value, at: &KeyPath, unexpected: &[String], out: &mut SchemaOutcome) {
    let valid = allowed_keys(schema, at);
    for key in unexpected {
        let hint = match closest(key, valid.iter().map(String::as_str)) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("valid keys here: {}", valid.join(", ")),
        };
        let place = if at.is_root() {
            "at the top level".to_string()
        } else {
            format!("in `{at}`")
        };
        out.findings.push(Finding::error(
            "E_UNKNOWN_KEY",
            at.key(key),
            format!("unknown key `{key}` {place}"),
            hint,
        ));
        remove(&mut out.pruned, at, key);
    }
}

/// `E_MISSING_KEY`: refuses a table without a key it requires, since nothing can default it.
fn missing_key(schema: &Value, at: &KeyPath, property: &Value) -> Finding {
    let prop = property.as_str().unwrap_or_default();
    let path = at.key(prop);
    let desc = description(schema, &path);
    let table = if at.is_root() {
        "the file".to_string()
    } else {
        format!("`[{at}]`")
    };
    Finding::error(
        "E_MISSING_KEY",
        path,
        format!("required key `{prop}` is missing from {table}"),
        format!("add `{prop} = …`{desc}"),
    )
}

/// `E_TYPE`: refuses a value of the wrong TOML type (a string where a number belongs).
fn wrong_type(schema: &Value, at: &KeyPath, shown: &str, kind: &TypeKind) -> Finding {
    let expected = format!("{kind:?}")
        .to_lowercase()
        .replace("single(", "")
        .replace(')', "");
    Finding::error(
        "E_TYPE",
        at.clone(),
        format!("`{at}` = {shown} has the wrong type (expected {expected})"),
        format!(
            "write {} {expected}{}",
            if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            },
            description(schema, at)
        ),
    )
}

/// `E_RANGE`: refuses a number outside the schema's bounds, naming both bounds.
fn out_of_range(schema: &Value, at: &KeyPath, shown: &str) -> Finding {
    let (min, max) = bounds(schema, at);
    Finding::error(
        "E_RANGE",
        at.clone(),
        format!("`{at}` = {shown} is out of range ({min} to {max})"),
        format!(
            "use a value between {min} and {max}{}",
            description(schema, at)
        ),
    )
}

/// `E_RANGE`: refuses a string or list shorter than the schema's minimum.
fn too_short(schema: &Value, at: &KeyPath, shown: &str, limit: u64) -> Finding {
    Finding::error(
        "E_RANGE",
        at.clone(),
        format!("`{at}` = {shown} is too short (at least {limit})"),
        format!("give at least {limit}{}", description(schema, at)),
    )
}

/// `E_RANGE`: refuses a string or list longer than the schema's maximum.
fn too_long(at: &KeyPath, shown: &str, limit: u64) -> Finding {
    Finding::error(
        "E_RANGE",
        at.clone(),
        format!("`{at}` = {shown} is too long (at most {limit})"),
        format!("shorten it to at most {limit}"),
    )
}

/// `E_PATTERN`: refuses a string not in the form the schema's pattern requires.
fn wrong_form(schema: &Value, at: &KeyPath, shown: &str, pattern: &str) -> Finding {
    Finding::error(
        "E_PATTERN",
        at.clone(),
        format!("`{at}` = {shown} is not in the expected form (pattern {pattern})"),
        format!("write it in that form{}", description(schema, at)),
    )
}

/// An optional table (`Option<JwtSection>` is `anyOf: [JwtSection, null]`) that does not
/// match: the anyOf error alone would hide which key inside it is wrong, so this validates
/// against the table's own schema and reports that, or `E_SCHEMA` if that finds nothing.
fn optional_table(
    schema: &Value,
    at: &KeyPath,
    err: &jsonschema::ValidationError<'_>,
    out: &mut SchemaOutcome,
) {
    let before = out.findings.len();
    if let Some(sub) = subschema_at(schema, at).and_then(|s| validator_for_sub(schema, s)) {
        let mut inner = SchemaOutcome {
            findings: Vec::new(),
            pruned: std::mem::take(&mut out.pruned),
        };
        collect(schema, &sub, err.instance(), at, &mut inner);
        out.pruned = inner.pruned;
        out.findings.extend(inner.findings);
    }
    if out.findings.len() == before {
        out.findings.push(other(schema, at, err));
    }
}

/// `E_ENUM`: refuses a value outside the accepted set, suggesting the closest one.
fn not_accepted(schema: &Value, at: &KeyPath, shown: &str, given: &Value) -> Finding {
    let options = allowed_values(schema, at);
    let given = given.as_str().unwrap_or_default();
    let hint = match closest(given, options.iter().map(String::as_str)) {
        Some(c) if !given.is_empty() => {
            format!("did you mean \"{c}\"? (one of: {})", options.join(", "))
        }
        _ => format!("use one of: {}", options.join(", ")),
    };
    Finding::error(
        "E_ENUM",
        at.clone(),
        format!("`{at}` = {shown} is not an accepted value"),
        hint,
    )
}

/// `E_SCHEMA`: any other violation, reported with the validator's own message.
fn other(schema: &Value, at: &KeyPath, err: &jsonschema::ValidationError<'_>) -> Finding {
    Finding::error(
        "E_SCHEMA",
        at.clone(),
        format!("`{at}`: {err}"),
        format!("see the schema{}", description(schema, at)),
    )
}

/// A validator for one subschema of the generated schema (its `$ref`s still resolve).
fn validator_for_sub(schema: &Value, sub: &Value) -> Option<jsonschema::Validator> {
    let mut doc = sub.clone();
    let obj = doc.as_object_mut()?;
    for key in ["$schema", "$defs"] {
        if let Some(v) = schema.get(key) {
            obj.insert(key.to_string(), v.clone());
        }
    }
    jsonschema::validator_for(&doc).ok()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn description(schema: &Value, path: &KeyPath) -> String {
    subschema_at(schema, path)
        .and_then(|s| s.get("description"))
        .and_then(Value::as_str)
        .map(|d| format!(" ({})", d.lines().next().unwrap_or(d).trim_end_matches('.')))
        .unwrap_or_default()
}

fn bounds(schema: &Value, path: &KeyPath) -> (String, String) {
    let s = subschema_at(schema, path);
    let get = |k: &str| {
        s.and_then(|s| s.get(k))
            .map(Value::to_string)
            .unwrap_or_else(|| "?".into())
    };
    (get("minimum"), get("maximum"))
}

fn remove(value: &mut Value, at: &KeyPath, key: &str) {
    let mut cur = value;
    for seg in &at.0 {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str()),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.remove(key);
    }
}
