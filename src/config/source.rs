//! One environment file as read from disk, and the `line:col` of any key path in it.
//!
//! figment reports the file and key of a bad value but not its line, so every file is also
//! parsed with `toml_edit`, which keeps spans, and key paths are resolved against it.

use std::path::PathBuf;

use toml_edit::{Document, Item, Table, TableLike, Value};

use crate::keypath::{KeyPath, Seg};

/// A parsed environment file.
#[derive(Debug)]
pub struct SourceFile {
    /// Absolute or config-dir-relative path, as opened.
    pub path: PathBuf,
    /// Path shown in reports (relative to the current directory where possible).
    pub display: String,
    /// Its text.
    pub text: String,
    doc: Document<String>,
}

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

impl SourceFile {
    /// Parses `text`; a syntax error comes back with its position.
    pub fn parse(path: PathBuf, display: String, text: String) -> Result<Self, (String, LineCol)> {
        match Document::parse(text.clone()) {
            Ok(doc) => Ok(Self {
                path,
                display,
                text,
                doc,
            }),
            Err(e) => {
                let pos = e
                    .span()
                    .map(|s| offset_to_linecol(&text, s.start))
                    .unwrap_or(LineCol { line: 1, col: 1 });
                let msg = e.message().trim().to_string();
                Err((msg, pos))
            }
        }
    }

    /// The parsed document's root table.
    pub fn root(&self) -> &Table {
        self.doc.as_table()
    }

    /// Where `path` is written in this file: the key itself for table entries, the element
    /// for array items. `None` when the file does not contain the path.
    pub fn locate(&self, path: &KeyPath) -> Option<LineCol> {
        let offset = find(self.doc.as_item(), &path.0)?;
        Some(offset_to_linecol(&self.text, offset))
    }

    /// True when this file writes the path (or a parent of it as a scalar).
    pub fn contains(&self, path: &KeyPath) -> bool {
        find(self.doc.as_item(), &path.0).is_some()
    }
}

fn find(item: &Item, segs: &[Seg]) -> Option<usize> {
    let Some((first, rest)) = segs.split_first() else {
        return item.span().map(|s| s.start);
    };
    match first {
        Seg::Key(k) => {
            let table: &dyn TableLike = item.as_table_like()?;
            let (key, child) = table.get_key_value(k)?;
            if rest.is_empty() {
                return key
                    .span()
                    .map(|s| s.start)
                    .or_else(|| child.span().map(|s| s.start));
            }
            find(child, rest)
        }
        Seg::Index(i) => match item {
            Item::ArrayOfTables(aot) => {
                let t = aot.get(*i)?;
                find_in_table(t, rest)
            }
            Item::Value(Value::Array(arr)) => {
                let v = arr.get(*i)?;
                find_in_value(v, rest)
            }
            _ => None,
        },
    }
}

fn find_in_table(t: &Table, rest: &[Seg]) -> Option<usize> {
    if rest.is_empty() {
        return t.span().map(|s| s.start);
    }
    let Seg::Key(k) = &rest[0] else { return None };
    let (key, child) = t.get_key_value(k)?;
    if rest.len() == 1 {
        return key.span().map(|s| s.start);
    }
    find(child, &rest[1..])
}

fn find_in_value(v: &Value, rest: &[Seg]) -> Option<usize> {
    if rest.is_empty() {
        return v.span().map(|s| s.start);
    }
    match (v, &rest[0]) {
        (Value::InlineTable(t), Seg::Key(k)) => {
            let (key, child) = t.get_key_value(k)?;
            if rest.len() == 1 {
                return key.span().map(|s| s.start);
            }
            find(child, &rest[1..])
        }
        (Value::Array(a), Seg::Index(i)) => find_in_value(a.get(*i)?, &rest[1..]),
        _ => None,
    }
}

/// Converts a byte offset into a 1-based line and character column.
pub fn offset_to_linecol(text: &str, offset: usize) -> LineCol {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    LineCol { line, col }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypath::kp;

    fn file(text: &str) -> SourceFile {
        SourceFile::parse("x.toml".into(), "x.toml".into(), text.into()).unwrap()
    }

    #[test]
    fn locates_keys_tables_arrays_and_inline_tables() {
        let f = file(
            "[server]\nlisten = \"x\"\n\n[[routes]]\nmethod = \"GET\"\n\n[[routes]]\npath = \"/a\"\n\n[components]\nws = { kind = \"session\", needs = [\"a\", \"b\"] }\n",
        );
        assert_eq!(
            f.locate(&kp("server.listen")),
            Some(LineCol { line: 2, col: 1 })
        );
        assert_eq!(
            f.locate(&kp("routes[1].path")),
            Some(LineCol { line: 8, col: 1 })
        );
        assert_eq!(f.locate(&kp("components.ws.kind")).unwrap().line, 11);
        assert_eq!(
            f.locate(&kp("components.ws.needs[1]")).unwrap(),
            LineCol { line: 11, col: 40 }
        );
        assert_eq!(f.locate(&kp("server.nope")), None);
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = SourceFile::parse("x".into(), "x".into(), "a = 1\nb = \n".into()).unwrap_err();
        assert_eq!(err.1.line, 2);
    }
}
