//! The per-namespace answer cache: TTL countdown, negative entries, serve-stale retention and
//! an LRU bound on both entries and bytes.
//!
//! Why its own module: the cache only knows keys, stored answers and instants. It never sees
//! clients or upstreams, so its rules (expiry, stale window, eviction order) test in isolation.
//!
//! A hit is the hot path of the whole resolver, so it allocates nothing: lookups take a
//! borrowed [`CacheKeyRef`], and the LRU order is kept lazily (a hit only stamps its entry;
//! eviction re-files entries whose stamp moved on since they were filed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::{Equivalent, HashMap};

use crate::answer::StoredAnswer;

/// What a cached answer is filed under: RFC 1035 question plus the DO and CD bits, since
/// both change what upstream returns (DNSSEC records, unvalidated data).
///
/// Its `Hash` must equal that of [`CacheKeyRef`] for the same fields: both derive it over the
/// same fields in the same order, and `Vec<u8>` hashes as its slice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// Lower-cased uncompressed wire name.
    pub(crate) qname: Vec<u8>,
    /// Query type.
    pub(crate) qtype: u16,
    /// Query class.
    pub(crate) qclass: u16,
    /// DO bit of the query.
    pub(crate) dnssec_ok: bool,
    /// CD bit of the query (kept apart so unvalidated data never reaches CD=0 clients).
    pub(crate) checking_disabled: bool,
}

/// A [`CacheKey`] over a borrowed name, for lookups that allocate nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKeyRef<'a> {
    /// Lower-cased uncompressed wire name.
    pub(crate) qname: &'a [u8],
    /// Query type.
    pub(crate) qtype: u16,
    /// Query class.
    pub(crate) qclass: u16,
    /// DO bit of the query.
    pub(crate) dnssec_ok: bool,
    /// CD bit of the query.
    pub(crate) checking_disabled: bool,
}

impl CacheKeyRef<'_> {
    /// The owned key, for storing.
    pub(crate) fn to_owned_key(self) -> CacheKey {
        CacheKey {
            qname: self.qname.to_vec(),
            qtype: self.qtype,
            qclass: self.qclass,
            dnssec_ok: self.dnssec_ok,
            checking_disabled: self.checking_disabled,
        }
    }
}

impl Equivalent<CacheKey> for CacheKeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.qname == key.qname.as_slice()
            && self.qtype == key.qtype
            && self.qclass == key.qclass
            && self.dnssec_ok == key.dnssec_ok
            && self.checking_disabled == key.checking_disabled
    }
}

impl CacheKey {
    /// The borrowed form of this key.
    pub(crate) fn as_ref(&self) -> CacheKeyRef<'_> {
        CacheKeyRef {
            qname: &self.qname,
            qtype: self.qtype,
            qclass: self.qclass,
            dnssec_ok: self.dnssec_ok,
            checking_disabled: self.checking_disabled,
        }
    }
}

/// One cached answer.
#[derive(Debug)]
struct Entry {
    /// The answer (shared with in-flight renders).
    answer: Arc<StoredAnswer>,
    /// When it was stored.
    stored_at: Instant,
    /// When it stops being fresh.
    expires_at: Instant,
    /// Stamp of its last use.
    used: u64,
    /// Stamp it is filed under in `lru` (at most `used`; older when used since filing).
    filed: u64,
}

/// A cache lookup result.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// Fresh: serve with TTLs reduced by `elapsed` seconds.
    Fresh {
        /// The answer.
        answer: Arc<StoredAnswer>,
        /// Whole seconds since it was stored.
        elapsed: u32,
    },
    /// Expired but inside the serve-stale window.
    Stale(Arc<StoredAnswer>),
    /// Nothing usable.
    Miss,
}

/// Bounded LRU cache.
#[derive(Debug)]
pub(crate) struct Cache {
    /// Entries by key.
    map: HashMap<CacheKey, Entry>,
    /// LRU order, oldest filing first. An entry is filed once, under the stamp of its
    /// insertion or of its last re-filing; hits only move its `used` stamp.
    lru: BTreeMap<u64, CacheKey>,
    /// Next LRU stamp.
    next_stamp: u64,
    /// Bytes currently held (approximate, from `StoredAnswer::size`).
    bytes: usize,
    /// Entry bound.
    max_entries: usize,
    /// Byte bound.
    max_bytes: usize,
    /// Bytes past which nothing new is stored (no eviction to make room either): the daemon's
    /// memory ceiling, lowered while the daemon is at it. `usize::MAX` when no ceiling holds.
    growth_limit: usize,
    /// Answers not stored because of `growth_limit` (the daemon logs new ones).
    refused: u64,
    /// How long past expiry an entry is kept for serve-stale (zero: not kept).
    stale_window: Duration,
}

impl Cache {
    /// Creates an empty cache with the given bounds.
    pub(crate) fn new(max_entries: usize, max_bytes: usize, stale_window: Duration) -> Self {
        Self {
            map: HashMap::new(),
            lru: BTreeMap::new(),
            next_stamp: 0,
            bytes: 0,
            max_entries,
            max_bytes,
            growth_limit: usize::MAX,
            refused: 0,
            stale_window,
        }
    }

    /// Bytes held (approximate, what the daemon accounts against its memory ceiling).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sets the byte count past which no new answer is stored (see `growth_limit`).
    pub(crate) fn set_growth_limit(&mut self, bytes: usize) {
        self.growth_limit = bytes;
    }

    /// Answers not stored so far because of the growth limit.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops everything.
    pub(crate) fn flush(&mut self) {
        self.map.clear();
        self.lru.clear();
        self.bytes = 0;
    }

    /// Looks `key` up at `now`, refreshing its LRU position when usable.
    pub(crate) fn get(&mut self, now: Instant, key: CacheKeyRef<'_>) -> Lookup {
        let stamp = self.next_stamp;
        let Some(entry) = self.map.get_mut(&key) else {
            return Lookup::Miss;
        };
        let result = if now < entry.expires_at {
            let elapsed = now.saturating_duration_since(entry.stored_at).as_secs();
            Lookup::Fresh {
                answer: entry.answer.clone(),
                elapsed: u32::try_from(elapsed).unwrap_or(u32::MAX),
            }
        } else if now < entry.expires_at + self.stale_window {
            Lookup::Stale(entry.answer.clone())
        } else {
            self.remove(key);
            return Lookup::Miss;
        };
        entry.used = stamp;
        self.next_stamp += 1;
        result
    }

    /// Removes one entry.
    fn remove(&mut self, key: CacheKeyRef<'_>) {
        if let Some(entry) = self.map.remove(&key) {
            self.lru.remove(&entry.filed);
            self.bytes = self
                .bytes
                .saturating_sub(entry.answer.size() + key.qname.len());
        }
    }

    /// Evicts the least recently used entry; false when the cache is empty.
    fn evict_one(&mut self) -> bool {
        while let Some((filed, key)) = self.lru.pop_first() {
            let Some(entry) = self.map.get_mut(&key.as_ref()) else {
                continue;
            };
            if entry.used != filed {
                // Used since it was filed: file it again under its last use, look further.
                entry.filed = entry.used;
                self.lru.insert(entry.used, key);
                continue;
            }
            if let Some(entry) = self.map.remove(&key.as_ref()) {
                self.bytes = self
                    .bytes
                    .saturating_sub(entry.answer.size() + key.qname.len());
            }
            return true;
        }
        false
    }

    /// Stores `answer` (if its lifetime allows), evicting least-recently-used entries to stay
    /// inside both bounds.
    pub(crate) fn insert(&mut self, now: Instant, key: CacheKey, answer: Arc<StoredAnswer>) {
        let lifetime = answer.lifetime();
        if lifetime == 0 || self.max_entries == 0 {
            return;
        }
        let size = answer.size() + key.qname.len();
        if size > self.max_bytes {
            return;
        }
        if self.bytes.saturating_add(size) > self.growth_limit {
            // The daemon is at its memory ceiling: keep what is cached, store nothing new.
            self.refused += 1;
            return;
        }
        self.remove(key.as_ref());
        while self.map.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.lru.insert(stamp, key.clone());
        self.bytes += size;
        self.map.insert(
            key,
            Entry {
                answer,
                stored_at: now,
                expires_at: now + Duration::from_secs(u64::from(lifetime)),
                used: stamp,
                filed: stamp,
            },
        );
    }
}
