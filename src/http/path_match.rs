//! Matching request paths against configured route paths with `{param}` segments.

use std::collections::BTreeMap;

/// A compiled route path.
#[derive(Debug, Clone)]
pub struct PathPattern {
    segs: Vec<Seg>,
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Param(String),
}

impl PathPattern {
    /// Compiles `/api/threads/{thread_id}/messages`.
    pub fn new(path: &str) -> Self {
        let segs = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(p) => Seg::Param(p.to_string()),
                    None => Seg::Lit(s.to_string()),
                },
            )
            .collect();
        Self { segs }
    }

    /// True when the pattern has no parameters (such routes are tried first).
    pub fn is_literal(&self) -> bool {
        self.segs.iter().all(|s| matches!(s, Seg::Lit(_)))
    }

    /// The parameters of a matching path, or `None`.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() != self.segs.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (seg, part) in self.segs.iter().zip(parts) {
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Lit(_) => return None,
                Seg::Param(name) => {
                    params.insert(name.clone(), part.to_string());
                }
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_params() {
        let p = PathPattern::new("/api/threads/{thread_id}/messages");
        let m = p.matches("/api/threads/t_1/messages").unwrap();
        assert_eq!(m["thread_id"], "t_1");
        assert!(p.matches("/api/threads/t_1").is_none());
        assert!(PathPattern::new("/").matches("/").is_some());
        assert!(PathPattern::new("/").is_literal());
    }
}
