//! Reading the raw configuration despite schema errors: a key with a wrong type (or out of
//! range, or not in its enum) is reported by the schema pass and then treated as absent,
//! so one type error no longer hides every semantic rule of the file. A required key that
//! is absent that way gets a neutral placeholder of its schema's type; findings about
//! those keys are dropped afterwards, since the schema pass already reported them.

use serde_json::{Map, Value};

use super::schema_walk::subschema_at;
use crate::config::raw::RawConfig;
use crate::keypath::{KeyPath, Seg};

/// More placeholders than a configuration has keys means something else is wrong.
const MAX_REPAIRS: usize = 256;

/// The raw configuration read from `value` after removing `bad` paths, with every path
/// that was removed or filled in (`poisoned`); `None` when it cannot be read at all.
pub fn read(
    schema: &Value,
    mut value: Value,
    bad: &[KeyPath],
) -> (Option<RawConfig>, Vec<KeyPath>) {
    // Every reported path is poisoned, also one that stays (an array element in the
    // middle, whose removal would shift the indices reports name).
    let mut poisoned: Vec<KeyPath> = bad.to_vec();
    for path in bad {
        remove(&mut value, path);
    }
    let mut repaired: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_REPAIRS {
        let err = match serde_path_to_error::deserialize::<_, RawConfig>(value.clone()) {
            Ok(raw) => return (Some(raw), poisoned),
            Err(e) => e,
        };
        let at = key_path(err.path());
        let message = err.inner().to_string();
        let target = match missing_field(&message) {
            Some(field) => at.key(field),
            None => at,
        };
        if target.is_root() || repaired.contains(&target) {
            return (None, poisoned);
        }
        repaired.push(target.clone());
        // A wrong value the schema let through is removed; a missing one is filled in.
        if !remove(&mut value, &target) {
            let Some(placeholder) = subschema_at(schema, &target).map(|s| placeholder(schema, s))
            else {
                return (None, poisoned);
            };
            if !insert(&mut value, &target, placeholder) {
                return (None, poisoned);
            }
        }
        if !poisoned.contains(&target) {
            poisoned.push(target);
        }
    }
    (None, poisoned)
}

/// True when `path` is `poisoned` or lies below one of them.
pub fn is_poisoned(path: &KeyPath, poisoned: &[KeyPath]) -> bool {
    poisoned.iter().any(|p| path.0.starts_with(&p.0))
}

fn key_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    KeyPath(
        path.iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    Some(Seg::Key(key.clone()))
                }
                Segment::Unknown => None,
            })
            .collect(),
    )
}

/// The field of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// A value of the schema's type that no rule reads as meaningful.
fn placeholder(root: &Value, schema: &Value) -> Value {
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(first) = schema.get("oneOf").and_then(|o| o.get(0)) {
        let first = match first.get("$ref").and_then(Value::as_str) {
            Some(r) => root
                .get("$defs")
                .and_then(|d| d.get(r.rsplit('/').next().unwrap_or_default()))
                .unwrap_or(first),
            None => first,
        };
        if let Some(c) = first.get("const") {
            return c.clone();
        }
        return placeholder(root, first);
    }
    let ty = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().find(|t| *t != "null").cloned(),
        other => other.cloned(),
    };
    match ty.as_ref().and_then(Value::as_str) {
        Some("string") => Value::from(""),
        Some("integer" | "number") => schema.get("minimum").cloned().unwrap_or(Value::from(0)),
        Some("boolean") => Value::from(false),
        Some("array") => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

fn parent_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = value;
    for seg in path {
        cur = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str())?,
            Seg::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// Removes the value at `path` (an array element is replaced by nothing only at the end,
/// so the indices of later elements, which reports name, stay true). True if it existed.
fn remove(value: &mut Value, path: &KeyPath) -> bool {
    let Some((last, parent)) = path.0.split_last() else {
        return false;
    };
    let Some(parent) = parent_mut(value, parent) else {
        return false;
    };
    match (last, parent) {
        (Seg::Key(k), Value::Object(map)) => map.remove(k).is_some(),
        (Seg::Index(i), Value::Array(items)) if *i + 1 == items.len() => {
            items.pop();
            true
        }
        _ => false,
    }
}

fn insert(value: &mut Value, path: &KeyPath, new: Value) -> bool {
    let Some((Seg::Key(last), parent)) = path.0.split_last() else {
        return false;
    };
    match parent_mut(value, parent) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), new);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::schema_value;
    use crate::keypath::kp;

    fn minimal() -> Value {
        serde_json::json!({
            "environment": {"name": "t", "kind": "test"},
            "server": {"listen": "127.0.0.1:0", "public_url": "http://x", "max_connections": "40"},
            "websocket": {"path": "/ws"},
            "auth": {"mode": "none"},
            "client": {"websocket_url": "ws://x/ws"},
        })
    }

    #[test]
    fn a_wrong_type_is_treated_as_absent() {
        let bad = [kp("server.max_connections")];
        let (raw, poisoned) = read(&schema_value(), minimal(), &bad);
        let raw = raw.expect("readable once the bad key is dropped");
        assert_eq!(raw.server.max_connections, 10_000, "the default applies");
        assert_eq!(poisoned, bad);
    }

    #[test]
    fn a_required_key_with_a_wrong_type_gets_a_placeholder() {
        let mut v = minimal();
        v["server"]["max_connections"] = Value::from(40);
        v["server"]["listen"] = Value::from(8080);
        v["auth"]["mode"] = Value::from("sometimes");
        let bad = [kp("server.listen"), kp("auth.mode")];
        let (raw, poisoned) = read(&schema_value(), v, &bad);
        assert!(raw.is_some(), "placeholders make it readable");
        assert!(is_poisoned(&kp("server.listen"), &poisoned));
        assert!(is_poisoned(&kp("auth.mode"), &poisoned));
        assert!(!is_poisoned(&kp("server.public_url"), &poisoned));
    }
}
