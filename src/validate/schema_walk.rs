//! Navigating the generated JSON Schema by key path, to name the keys and values that
//! would have been valid where a schema error points (the "did you mean" hints).

use serde_json::Value;

use crate::keypath::{KeyPath, Seg};

/// Follows `$ref`s and `Option` wrappers (`anyOf: [X, null]`) to the schema that applies.
fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            match root.get("$defs").and_then(|d| d.get(name)) {
                Some(next) => s = next,
                None => return s,
            }
            continue;
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array)
            && let Some(non_null) = any
                .iter()
                .find(|v| v.get("type") != Some(&Value::from("null")))
        {
            s = non_null;
            continue;
        }
        return s;
    }
    s
}

/// The schema that describes the value at `path`.
pub fn subschema_at<'a>(root: &'a Value, path: &KeyPath) -> Option<&'a Value> {
    let mut s = resolve(root, root);
    for seg in &path.0 {
        s = match seg {
            Seg::Key(k) => s
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| s.get("additionalProperties").filter(|v| v.is_object()))?,
            Seg::Index(_) => s.get("items")?,
        };
        s = resolve(root, s);
    }
    Some(s)
}

/// The property names allowed in the table at `path`.
pub fn allowed_keys(root: &Value, path: &KeyPath) -> Vec<String> {
    subschema_at(root, path)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The literal values allowed at `path` (for enums written as `enum` or `oneOf` of `const`).
pub fn allowed_values(root: &Value, path: &KeyPath) -> Vec<String> {
    let Some(s) = subschema_at(root, path) else {
        return Vec::new();
    };
    let as_strings = |vals: &[Value]| -> Vec<String> {
        vals.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return as_strings(e);
    }
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<Value> = alts
            .iter()
            .filter_map(|a| resolve(root, a).get("const").cloned())
            .collect();
        let enums: Vec<Value> = alts
            .iter()
            .filter_map(|a| {
                resolve(root, a)
                    .get("enum")
                    .and_then(Value::as_array)
                    .cloned()
            })
            .flatten()
            .collect();
        return as_strings(&[consts, enums].concat());
    }
    Vec::new()
}

/// The closest candidate to `given`, if one is close enough to be a likely typo.
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_l = given.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::normalized_damerau_levenshtein(&given_l, &c.to_ascii_lowercase()),
            )
        })
        .filter(|(c, score)| {
            let c = c.to_ascii_lowercase();
            *score >= 0.5
                || c.contains(&given_l)
                || given_l.contains(&c)
                || is_subsequence(&given_l, &c)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// True when every character of `short` appears in `long` in order (`/ws` in
/// `/websocket`): abbreviations are likely meant as the longer name.
fn is_subsequence(short: &str, long: &str) -> bool {
    let mut rest = long.chars();
    short.len() >= 2 && short.len() < long.len() && short.chars().all(|c| rest.any(|l| l == c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::schema_value;
    use crate::keypath::kp;

    #[test]
    fn finds_keys_and_enum_values_through_refs_and_arrays() {
        let s = schema_value();
        assert!(allowed_keys(&s, &kp("websocket")).contains(&"heartbeat_ms".to_string()));
        assert!(allowed_keys(&s, &kp("routes[3]")).contains(&"handler".to_string()));
        assert!(allowed_keys(&s, &kp("auth.jwt")).contains(&"leeway_s".to_string()));
        assert!(allowed_keys(&s, &kp("services.db")).contains(&"url_env".to_string()));
        let kinds = allowed_values(&s, &kp("environment.kind"));
        assert_eq!(kinds, ["development", "test", "staging", "production"]);
    }

    #[test]
    fn closest_suggests_likely_typos_only() {
        let keys = ["heartbeat_ms", "path", "aliases"];
        assert_eq!(closest("hearbeat_ms", keys), Some("heartbeat_ms"));
        assert_eq!(closest("zzzzzzzz", keys), None);
        assert_eq!(
            closest("/ws", ["/websocket", "/api/v1/chat"]),
            Some("/websocket")
        );
    }
}
