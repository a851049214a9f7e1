//! Tool descriptions with a `'static` lifetime: the provider interface takes `&'static str`,
//! and both the HTTP and MCP tools build theirs from configuration or a server's listing.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

/// Strings a tool is described to the model with live as long as the process (the
/// provider interface takes `&'static str`); each distinct text is kept once, so a server
/// relisting its tools does not grow memory. It holds configuration text only, never
/// anything of a user.
static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

/// `text` with a `'static` lifetime (see [`INTERNED`]).
pub fn intern(text: &str) -> &'static str {
    let mut set = INTERNED.lock().expect("intern lock");
    if let Some(found) = set.get(text) {
        return found;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::intern;

    #[test]
    fn interning_keeps_one_copy_of_each_text() {
        let a = intern("Searches the docs");
        let b = intern(&String::from("Searches the docs"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(intern("other"), "other");
    }
}
