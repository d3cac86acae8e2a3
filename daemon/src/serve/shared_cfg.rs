//! One shared copy of a service's settings for all the namespaces that run with them.
//!
//! Why: every namespace's service instance keeps its section of the configuration (to compare
//! on reload, to answer `status`, to list its listeners). With a copy each, a section with a
//! few lists and strings cost hundreds of bytes per namespace (issue 16: bytes per namespace);
//! namespaces almost always run with the same section, so they share one `Arc`. A reload or a
//! per-namespace override with other settings gets a new one; instances holding the old one
//! keep it until they take the new settings.

use std::sync::{Arc, Mutex};

/// The last settings value handed out, reused while the settings asked for are equal.
#[derive(Debug)]
pub(crate) struct SharedCfg<T> {
    /// The last value handed out.
    last: Mutex<Option<Arc<T>>>,
}

impl<T: PartialEq + Clone> SharedCfg<T> {
    /// Nothing handed out yet (a `static` per settings type).
    pub(crate) const fn new() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }

    /// The shared copy of `value`: the last one handed out if equal, else a new copy (kept
    /// for the next caller).
    pub(crate) fn get(&self, value: &T) -> Arc<T> {
        let mut last = crate::lock::lock(&self.last);
        match last.as_ref() {
            Some(a) if **a == *value => Arc::clone(a),
            _ => {
                let a = Arc::new(value.clone());
                *last = Some(Arc::clone(&a));
                a
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_settings_share_one_copy() {
        let s = SharedCfg::new();
        let a = s.get(&vec![1, 2]);
        let b = s.get(&vec![1, 2]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = s.get(&vec![3]);
        assert_eq!(*c, vec![3]);
        assert_eq!(*a, vec![1, 2], "holders of the old settings keep them");
        assert!(Arc::ptr_eq(&c, &s.get(&vec![3])));
    }
}
