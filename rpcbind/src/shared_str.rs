//! `SharedStr`: an immutable string that clones by reference count.
//!
//! Why: every namespace's table starts with the portmapper's own registrations (up to 14,
//! three strings each: netid, address, "superuser"). As `String`s they were 42 small
//! allocations per namespace, the same text in every one (issue 16: bytes per namespace).
//! As `SharedStr`s, the daemon builds them once per configuration and every table points at
//! them; a registration a client makes owns its own copy, as before.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

/// An immutable, cheaply cloned string (see the module docs). Compares, hashes, orders and
/// prints as the text it holds.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The owner every self registration has, made once for the process.
pub(crate) fn superuser() -> SharedStr {
    static SUPERUSER: LazyLock<SharedStr> =
        LazyLock::new(|| SharedStr::from(crate::context::SUPERUSER));
    SUPERUSER.clone()
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl From<&String> for SharedStr {
    fn from(s: &String) -> Self {
        Self(Arc::from(s.as_str()))
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<SharedStr> for str {
    fn eq(&self, other: &SharedStr) -> bool {
        *self == *other.0
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

impl PartialEq<SharedStr> for String {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_prints_as_its_text() {
        let s = SharedStr::from("udp6");
        assert_eq!(s, "udp6");
        assert_eq!("udp6", s);
        assert_eq!(s, String::from("udp6"));
        assert_eq!(format!("{s} {s:?}"), "udp6 \"udp6\"");
        assert!(s.eq_ignore_ascii_case("UDP6"));
        assert!(Arc::ptr_eq(&superuser().0, &superuser().0));
    }
}
