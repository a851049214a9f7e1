//! `portcullis init [DIR]`: writes the shipped environment files (the ones built into the
//! binary) and their JSON Schema into DIR, so the embedded default can be edited. Files
//! that exist are kept unless `--force`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::builtin;

/// The schema's file name beside the environments; their `#:schema` lines point at it.
const SCHEMA_FILE: &str = "portcullis.schema.json";

pub fn run(dir: &Path, force: bool) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let schema = crate::config::schema::schema_json();
    let mut files: Vec<(String, String)> = builtin::FILES
        .iter()
        .map(|(stem, text)| (format!("{stem}.toml"), retarget_schema(text)))
        .collect();
    files.push((SCHEMA_FILE.to_string(), schema));
    let mut failed = false;
    for (name, text) in files {
        let path = dir.join(&name);
        if path.exists() && !force {
            println!("kept     {} (exists; --force overwrites)", path.display());
            continue;
        }
        match std::fs::write(&path, text) {
            Ok(()) => println!("wrote    {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::from(1);
    }
    println!(
        "next: portcullis check --config-dir {} --all, then portcullis serve --config-dir {}",
        dir.display(),
        dir.display()
    );
    ExitCode::SUCCESS
}

/// The shipped files point at `../schema/…`; written out, the schema sits beside them.
fn retarget_schema(text: &str) -> String {
    text.replacen(
        "#:schema ../schema/portcullis.schema.json",
        &format!("#:schema {SCHEMA_FILE}"),
        1,
    )
}
