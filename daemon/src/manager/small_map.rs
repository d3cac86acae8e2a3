//! A map kept as a sorted `Vec` of pairs, for the manager's per-namespace tables (services by
//! name, listeners by spec), which hold a handful of entries each.
//!
//! Why not `BTreeMap`: its first node is a leaf of 11 keys and 11 values, allocated whole
//! however few entries there are, so three services' listener maps and the services map cost
//! about 4 KiB per namespace of which under 1 KiB was used (issue 16, bytes per namespace).
//! Iteration order is the keys' order, as with `BTreeMap`, so `ns list` is unchanged.
//!
//! The vector grows one slot at a time rather than doubling: a `Vec`'s first allocation holds
//! four entries, so a service with one listener (NTP) or two (the portmapper) carried two or
//! three empty 80-byte slots in every namespace (issue 16, bytes per namespace). The tables
//! are filled once per namespace with a handful of entries, so the extra reallocations cost
//! nothing that matters.

/// A small ordered map: lookups by binary search, inserts and removals shift the tail.
#[derive(Debug)]
pub(super) struct SmallMap<K, V> {
    /// Pairs sorted by key, no key twice.
    pairs: Vec<(K, V)>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        Self { pairs: Vec::new() }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map (allocates nothing).
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Room for exactly one more entry (see the module's note on growth).
    fn grow_by_one(&mut self) {
        if self.pairs.len() == self.pairs.capacity() {
            self.pairs.reserve_exact(1);
        }
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.pairs.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value under `key`.
    pub(super) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.pairs[i].1)
    }

    /// The value under `key`, to change it.
    pub(super) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.pairs[i].1)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.pairs[i].1, value)),
            Err(i) => {
                self.grow_by_one();
                self.pairs.insert(i, (key, value));
                None
            }
        }
    }

    /// Takes the value under `key` out.
    pub(super) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.pairs.remove(i).1)
    }

    /// The value under `key`, inserted from `make` first if absent.
    pub(super) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.grow_by_one();
                self.pairs.insert(i, (key, make()));
                i
            }
        };
        &mut self.pairs[i].1
    }

    /// Entries in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.pairs.iter().map(|(k, v)| (k, v))
    }

    /// Keys in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &K> {
        self.pairs.iter().map(|(k, _)| k)
    }

    /// Values in key order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.pairs.iter().map(|(_, v)| v)
    }

    /// The values, owned, in key order.
    pub(super) fn into_values(self) -> impl Iterator<Item = V> {
        self.pairs.into_iter().map(|(_, v)| v)
    }

    /// How many entries.
    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }
}

impl<K, V> IntoIterator for SmallMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.pairs.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::SmallMap;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut m = SmallMap::new();
        assert_eq!(m.insert("ntp", 1), None);
        assert_eq!(m.insert("dns", 2), None);
        assert_eq!(m.insert("rpcbind", 3), None);
        assert_eq!(m.insert("dns", 4), Some(2));
        assert_eq!(
            m.keys().copied().collect::<Vec<_>>(),
            ["dns", "ntp", "rpcbind"]
        );
        assert_eq!(m.get("dns"), Some(&4));
        *m.get_or_insert_with("ident", || 5) += 1;
        assert_eq!(m.get("ident"), Some(&6));
        assert_eq!(*m.get_or_insert_with("ident", || 0), 6);
        assert_eq!(m.remove("ntp"), Some(1));
        assert_eq!(m.remove("ntp"), None);
        assert_eq!(m.len(), 3);
        assert_eq!(m.into_values().collect::<Vec<_>>(), [4, 6, 3]);
    }

    #[test]
    fn holds_no_empty_slots() {
        let mut m = SmallMap::new();
        m.insert(2, "b");
        assert_eq!(m.pairs.capacity(), 1);
        m.insert(1, "a");
        *m.get_or_insert_with(3, || "c") = "C";
        assert_eq!((m.len(), m.pairs.capacity()), (3, 3));
    }
}
