//! The shipped environments, compiled into the binary: `portcullis serve` runs the
//! embedded default (`development`) from any directory, and `portcullis init` writes these
//! files out for editing. They are the files in `environments/`, byte for byte.

/// `(stem, text)` of every shipped file, `base` first.
pub const FILES: [(&str, &str); 5] = [
    ("base", include_str!("../../environments/base.toml")),
    (
        "development",
        include_str!("../../environments/development.toml"),
    ),
    ("test", include_str!("../../environments/test.toml")),
    ("staging", include_str!("../../environments/staging.toml")),
    (
        "production",
        include_str!("../../environments/production.toml"),
    ),
];

/// How reports name a built-in file: `built-in:development.toml`.
pub fn display(stem: &str) -> String {
    format!("built-in:{stem}.toml")
}

/// The text of a built-in file.
pub fn text(stem: &str) -> Option<&'static str> {
    FILES.iter().find(|(s, _)| *s == stem).map(|(_, t)| *t)
}

/// Stems of the built-in files that are environments (a base has no `[environment]`).
pub fn environment_names() -> Vec<String> {
    FILES
        .iter()
        .filter(|(_, text)| is_environment(text))
        .map(|(stem, _)| stem.to_string())
        .collect()
}

/// True when a file declares an `[environment]` table (a base others extend does not).
pub fn is_environment(text: &str) -> bool {
    toml_edit::Document::parse(text.to_string())
        .map(|d| d.as_table().contains_key("environment"))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_files_are_the_shipped_files() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/environments");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(String::from))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = FILES.iter().map(|(s, _)| s.to_string()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in, "every shipped file is compiled in");
        assert_eq!(
            environment_names(),
            ["development", "test", "staging", "production"]
        );
    }
}
