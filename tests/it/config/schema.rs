//! The committed JSON Schema is exactly what the code generates.

#[test]
fn committed_schema_is_up_to_date() {
    let committed = std::fs::read_to_string("schema/portcullis.schema.json")
        .expect("schema/portcullis.schema.json exists");
    let generated = portcullis::config::schema::schema_json();
    assert!(
        committed == generated,
        "schema/portcullis.schema.json is stale: run `cargo run -- schema > schema/portcullis.schema.json`"
    );
}
