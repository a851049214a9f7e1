//! The JSON Schema of an environment file, generated from [`super::raw::RawConfig`].
//!
//! `schema/portcullis.schema.json` is this output, committed so editors can complete keys
//! (each environment file starts with a `#:schema` line pointing at it); a test fails when
//! the committed copy is stale.

use super::raw::RawConfig;

/// The schema as a JSON value.
pub fn schema_value() -> serde_json::Value {
    let schema = schemars::schema_for!(RawConfig);
    serde_json::to_value(&schema).expect("a generated schema serializes")
}

/// The schema as pretty-printed JSON with a trailing newline, exactly as committed.
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&schema_value()).expect("a JSON value serializes");
    s.push('\n');
    s
}
