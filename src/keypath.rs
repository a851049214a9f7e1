//! Key paths (`routes[2].path`, `auth.jwt.secret_env`) used to point at a value in a file.

use std::fmt;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path from the document root to a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses `a.b[2].c` (keys are simple identifiers, as in our schema).
    pub fn parse(s: &str) -> Self {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                segs.push(Seg::Key(rest[..i].to_string()));
                rest = &rest[i..];
                while let Some(end) = rest.find(']') {
                    if let Ok(n) = rest[1..end].parse() {
                        segs.push(Seg::Index(n));
                    }
                    rest = &rest[end + 1..];
                }
            } else {
                segs.push(Seg::Key(rest.to_string()));
            }
        }
        Self(segs)
    }

    /// Builds a path from a JSON pointer such as `/routes/2/path`.
    pub fn from_pointer(pointer: &str) -> Self {
        let segs = pointer
            .split('/')
            .skip(1)
            .map(|raw| {
                let s = raw.replace("~1", "/").replace("~0", "~");
                match s.parse::<usize>() {
                    Ok(n) => Seg::Index(n),
                    Err(_) => Seg::Key(s),
                }
            })
            .collect();
        Self(segs)
    }

    /// This path extended by a key.
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.into()));
        Self(v)
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }

    /// The path without its last step.
    pub fn parent(&self) -> Self {
        let mut v = self.0.clone();
        v.pop();
        Self(v)
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        if first {
            f.write_str("(root)")?;
        }
        Ok(())
    }
}

/// Shorthand used by the rules: `kp("auth.jwt.secret")`.
pub fn kp(s: &str) -> KeyPath {
    KeyPath::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_dotted_and_indexed_paths() {
        for s in ["a.b", "routes[2].path", "auth.bypass[0].from[1]", "server"] {
            assert_eq!(KeyPath::parse(s).to_string(), s);
        }
        assert_eq!(
            KeyPath::from_pointer("/routes/2/path").to_string(),
            "routes[2].path"
        );
        assert_eq!(KeyPath::root().to_string(), "(root)");
    }
}
