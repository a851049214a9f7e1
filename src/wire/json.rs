//! Writing JSON text on the hot path (every event body, every `ack`) with exactly the bytes
//! `serde_json` would write, only faster for the common case.
//!
//! `serde_json` escapes a string byte by byte through a lookup table. Most strings here
//! (ids, types, agent text) need no escaping at all, so [`put_str`] first checks that
//! with a loop the compiler vectorizes and then copies the string whole; anything that
//! does need escaping goes to `serde_json`. Under callgrind, escaping was 14 k of the
//! ~320 k instructions of a chat run (docs/PERFORMANCE.md, item 7).

use serde_json::Value;

/// Whether `s` has a byte `serde_json` escapes: `"`, `\` or a control character below
/// 0x20 (it writes DEL and non-ASCII as they are).
fn needs_escape(s: &str) -> bool {
    // No early exit, so the loop vectorizes; the strings are short.
    s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `s` as a JSON string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Appends `value` as compact JSON, object keys in the map's (sorted) order, as
/// `serde_json::to_writer` does.
pub(crate) fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => put_str(out, s),
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                put_str(out, key);
                out.push(b':');
                put_value(out, value);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                put_value(out, item);
            }
            out.push(b']');
        }
        // Numbers, booleans and null: serde_json's own formatting.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// An object of string fields, written in the order given (callers list the keys sorted,
/// as a `serde_json` map would write them).
pub(crate) fn string_object(fields: &[(&str, &str)]) -> String {
    let mut out = Vec::with_capacity(
        2 + fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>(),
    );
    out.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_str(&mut out, key);
        out.push(b':');
        put_str(&mut out, value);
    }
    out.push(b'}');
    into_string(out)
}

/// The text written; every writer here only appends whole UTF-8 strings and ASCII.
pub(crate) fn into_string(out: Vec<u8>) -> String {
    String::from_utf8(out).expect("JSON writers append only UTF-8")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn written(value: &Value) -> String {
        let mut out = Vec::new();
        put_value(&mut out, value);
        into_string(out)
    }

    #[test]
    fn writes_exactly_what_serde_json_writes() {
        let cases = [
            json!("plain text, ünïcödé ✓ and DEL \u{7f}"),
            json!("quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} us \u{1f}"),
            json!({"b": 1, "a": [true, null, -0.5, 1e300, 18446744073709551615u64, "x\"y"],
                   "nested": {"z": {}, "y": [], "\u{1}key": "v"}}),
            json!([]),
            json!({}),
            json!(12.25),
            json!(""),
        ];
        for case in cases {
            assert_eq!(written(&case), case.to_string(), "{case:?}");
        }
    }

    #[test]
    fn string_objects_match_sorted_maps() {
        let fields = [("id", "c\"1"), ("run_id", "r_1"), ("type", "ack")];
        assert_eq!(
            string_object(&fields),
            json!({"type": "ack", "run_id": "r_1", "id": "c\"1"}).to_string()
        );
    }
}
