//! The protocol's codes are data in `src/wire` and documented in `docs/PROTOCOL.md`:
//! every `ErrorCode` and `CloseCode` is listed in the document, no code or event type is
//! spelled as a literal elsewhere in `src/` (outside tests), every "see …" in the code
//! points to the document, and `src/wire` imports nothing else from the crate.

use std::path::Path;

use portcullis::wire::{CloseCode, ErrorCode, EventKind};

fn protocol_doc() -> String {
    std::fs::read_to_string("docs/PROTOCOL.md").expect("docs/PROTOCOL.md exists")
}

#[test]
fn every_error_and_close_code_is_documented() {
    let doc = protocol_doc();
    let missing: Vec<&str> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !doc.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "error codes missing from docs/PROTOCOL.md: {missing:?}"
    );
    let missing: Vec<u16> = CloseCode::ALL
        .iter()
        .map(|c| c.code())
        .filter(|c| !doc.contains(&format!("| {c} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "close codes missing from docs/PROTOCOL.md's table: {missing:?}"
    );
}

/// Non-test Rust source of `src/` outside `src/wire`: (path, line number, line), with
/// comments, `#[cfg(test)]` modules and test files left out.
fn source_lines() -> Vec<(String, usize, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("wire") && !path.ends_with("tests") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("tests.rs")
                && !path.ends_with("testkit.rs")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if !line.trim_start().starts_with("//") {
                lines.push((f.display().to_string(), i + 1, line.to_string()));
            }
        }
    }
    lines
}

#[test]
fn no_code_is_a_literal_outside_src_wire() {
    let words = regex::Regex::new(r#""([A-Z][A-Z0-9_]+)""#).unwrap();
    let numbers = regex::Regex::new(r"(^|[^0-9_.])(\d{4})([^0-9_]|$)").unwrap();
    let mut found = Vec::new();
    for (file, n, line) in source_lines() {
        for m in words.captures_iter(&line) {
            if ErrorCode::ALL.iter().any(|c| c.as_str() == &m[1]) {
                found.push(format!("{file}:{n}: {}", line.trim()));
            }
        }
        for m in numbers.captures_iter(&line) {
            let code: u16 = m[2].parse().unwrap();
            if CloseCode::from_code(code).is_some() && !line.contains('"') {
                found.push(format!("{file}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "use portcullis::wire's ErrorCode / CloseCode instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_event_type_is_a_literal_outside_src_wire() {
    let found: Vec<String> = source_lines()
        .into_iter()
        .filter(|(_, _, line)| {
            EventKind::ALL
                .iter()
                .any(|k| line.contains(&format!("\"{}\"", k.as_str())))
        })
        .map(|(file, n, line)| format!("{file}:{n}: {}", line.trim()))
        .collect();
    assert!(
        found.is_empty(),
        "use portcullis::wire::EventKind instead:\n{}",
        found.join("\n")
    );
}

/// `src/wire` is the bottom layer: everything else may import it, it imports nothing
/// else from the crate, so clients can take the protocol without the server.
#[test]
fn src_wire_imports_nothing_else_from_the_crate() {
    let outside = regex::Regex::new(r"\bcrate::(\w+)").unwrap();
    let mut files = vec![std::path::PathBuf::from("src/wire.rs")];
    for entry in std::fs::read_dir("src/wire").unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if outside.captures_iter(code).any(|m| &m[1] != "wire") {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/wire imports from the rest of the crate:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_see_in_the_code_points_to_the_protocol_doc() {
    let see = regex::Regex::new(r"see (docs/)?PROTOCOL(-NOTES)?\.md").unwrap();
    let mut wrong = Vec::new();
    for (file, n, line) in source_lines() {
        for m in see.find_iter(&line) {
            if m.as_str() != "see docs/PROTOCOL.md" {
                wrong.push(format!("{file}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "point to docs/PROTOCOL.md:\n{}",
        wrong.join("\n")
    );
}
