//! The crate's modules are layered: no import cycles, neither between the top-level modules
//! (`ws` -> `http` -> `ws`) nor between the files of one folder (`group.rs` ->
//! `batch.rs` -> `group.rs`). A cycle means two parts can only be understood, tested and
//! changed together. Read from the source text: every `crate::…` and `super::…` path of a
//! non-test file, resolved to the deepest module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;
type Graph = BTreeMap<Module, BTreeSet<Module>>;

/// Every module file under `src/`, by module path (`src/store/sqlite/group.rs` is
/// `store::sqlite::group`; `lib.rs` is the root).
fn modules() -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix("src").unwrap().with_extension("");
            let segs: Module = rel.iter().map(|s| s.to_string_lossy().into()).collect();
            let segs = if segs == ["lib"] || segs == ["main"] {
                Vec::new()
            } else {
                segs
            };
            (segs, f)
        })
        .collect()
}

/// Test code imports freely (a test of `store` may build an agent event).
fn is_test(m: &Module) -> bool {
    m.iter().any(|s| s == "tests" || s == "testkit")
}

/// The text before the file's `#[cfg(test)]` module, without line comments.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The paths after each `crate::` / `super::` in `code`: `(starts at crate, segments)`,
/// one per item of a `{…}` group.
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    for (at, head) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if at > 0 && code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `super::` inside `super::super::`, or an identifier ending so
        }
        let mut rest = &code[at + head.len()..];
        let mut segs = vec![if head == "crate::" { "crate" } else { "super" }.to_string()];
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let body = &group[..group.find('}').unwrap_or(group.len())];
                for item in body.split(',') {
                    let (first, _) = ident_at(item.trim());
                    if !first.is_empty() {
                        let mut s = segs.clone();
                        s.push(first.to_string());
                        out.push((head == "crate::", s));
                    }
                }
                break;
            }
            let (id, after) = ident_at(rest);
            if id.is_empty() {
                break;
            }
            segs.push(id.to_string());
            match after.strip_prefix("::") {
                Some(more) => rest = more,
                None => break,
            }
        }
        out.push((head == "crate::", segs));
    }
    out
}

/// The module `segs` (as written in module `from`) names, as deep as a module exists.
fn resolve(from: &Module, segs: &[String], all: &BTreeMap<Module, PathBuf>) -> Module {
    let mut base: Module = if segs[0] == "crate" {
        Vec::new()
    } else {
        from[..from.len().saturating_sub(1)].to_vec()
    };
    let mut rest = &segs[1..];
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if all.keys().any(|k| k.starts_with(&next)) {
            base = next;
        } else {
            break;
        }
    }
    base
}

/// File-level imports: module -> the modules it names.
fn imports() -> Graph {
    let all = modules();
    let mut graph = Graph::new();
    for (m, path) in all.iter().filter(|(m, _)| !is_test(m)) {
        for (_, segs) in paths(&code_of(path)) {
            let to = resolve(m, &segs, &all);
            if !to.is_empty() && &to != m && !is_test(&to) {
                graph.entry(m.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// The strongly connected groups of more than one node (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<Module>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Module) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        for w in t.g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(lw));
            } else if t.stack.contains(&w) {
                let iw = t.index[w];
                t.low.entry(v).and_modify(|l| *l = (*l).min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let at = t.stack.iter().position(|x| *x == v).unwrap();
            let group: Vec<Module> = t.stack.drain(at..).cloned().collect();
            if group.len() > 1 {
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// `graph` seen one level below `parent`: an edge a::x -> a::y::z is x -> y when both sit
/// under `parent` = a (edges from a file to its own parent or children are not between
/// siblings).
fn between_children(graph: &Graph, depth: usize) -> Graph {
    let mut out = Graph::new();
    for (from, tos) in graph {
        for to in tos {
            if from.len() > depth
                && to.len() > depth
                && from[..depth] == to[..depth]
                && from[depth] != to[depth]
            {
                out.entry(from[..=depth].to_vec())
                    .or_default()
                    .insert(to[..=depth].to_vec());
            }
        }
    }
    out
}

fn describe(found: &[Vec<Module>], graph: &Graph, depth: usize) -> String {
    let mut lines = Vec::new();
    for group in found {
        let names: Vec<String> = group.iter().map(|m| m.join("::")).collect();
        lines.push(format!("cycle: {}", names.join(", ")));
        for (from, tos) in graph {
            for to in tos {
                let (f, t) = (
                    &from[..from.len().min(depth + 1)],
                    &to[..to.len().min(depth + 1)],
                );
                if f != t && group.iter().any(|g| g == f) && group.iter().any(|g| g == t) {
                    lines.push(format!("  {} -> {}", from.join("::"), to.join("::")));
                }
            }
        }
    }
    lines.join("\n")
}

#[test]
fn the_import_reader_sees_grouped_and_relative_paths() {
    let found = paths("use super::{batch, write::x};\nuse crate::store::model::Accepted;");
    let segs: Vec<String> = found.iter().map(|(_, s)| s.join("::")).collect();
    assert!(segs.contains(&"super::batch".to_string()), "{segs:?}");
    assert!(segs.contains(&"super::write".to_string()), "{segs:?}");
    assert!(
        segs.contains(&"crate::store::model::Accepted".to_string()),
        "{segs:?}"
    );
    let all = modules();
    let from: Module = vec!["store".into(), "sqlite".into(), "group".into()];
    let to = resolve(&from, &["super".into(), "batch".into()], &all);
    assert_eq!(to.join("::"), "store::sqlite::batch");
    // The reader finds real imports: the crate is not one flat file.
    assert!(imports().len() > 50);
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let graph = imports();
    let top = between_children(&graph, 0);
    let found = cycles(&top);
    assert!(found.is_empty(), "{}", describe(&found, &graph, 0));
}

#[test]
fn no_files_of_one_folder_import_each_other_in_a_circle() {
    let graph = imports();
    let deepest = graph.keys().map(Vec::len).max().unwrap_or(0);
    let mut report = Vec::new();
    for depth in 1..deepest {
        let found = cycles(&between_children(&graph, depth));
        if !found.is_empty() {
            report.push(describe(&found, &graph, depth));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}
