//! Interleaved mode (draft-ietf-ntp-interleaved-modes, chrony's `xleave`): the table of
//! earlier exchanges a server needs to answer an interleaved request, and the rules it answers
//! by, copied from chrony's `NCR_ProcessRxUnknown` and `transmit_packet` (ntp_core.c) and its
//! NTP timestamp map (clientlog.c, 4.2 and later).
//!
//! Why: in basic mode a reply's transmit timestamp is read by the daemon *before* the reply
//! is sent; in interleaved mode the server sends, in the next reply, the kernel's timestamp of
//! when the previous reply really left, so a client measures offset and delay without the
//! daemon's send path in them.
//!
//! The rules:
//!
//! * **Which requests are interleaved**: NTPv4 client (or symmetric) requests, not answered
//!   with a kiss, whose origin timestamp has its lowest bit set (our receive timestamps always
//!   have it, our transmit timestamps never: so a basic client's echo never costs a table
//!   entry) and whose receive and transmit timestamps differ.
//! * **Lookup**: the origin timestamp is the receive timestamp of one of our earlier replies.
//!   Found and not yet used: the reply is interleaved (origin = the request's receive
//!   timestamp, transmit = when that earlier reply left) and the entry is disabled, so one
//!   earlier exchange yields one interleaved reply at most. Not found: a basic reply.
//! * **Saving**: every such request's reply is saved, keyed by its receive timestamp, with the
//!   daemon's transmit time; the kernel's transmit timestamp replaces it when it comes back
//!   ([`Interleave::kernel_transmit`]). A new client's third reply is the first interleaved.
//! * **Keyed by timestamp, not by address** (as chrony): clients behind NAT work, and a
//!   spoofer must guess a 64-bit receive timestamp taken in nanoseconds to get an earlier
//!   reply's transmit time, which is only the server's clock anyway (chrony leaks the same).
//!
//! Memory: a set-associative table of [`WAYS`]-entry buckets, 16 bytes per entry, allocated on
//! first use and doubled up to `max_entries` (chrony ties its size to `clientloglimit`, the
//! daemon to `rate_limit.max_clients`) and to the caller's memory limit; a full bucket drops
//! its oldest exchange. Buckets are picked by a keyed hash, so a flood only evicts at random.

use alloc::vec;
use alloc::vec::Vec;
use core::mem::size_of;

use crate::rng::mix;
use crate::timestamp::NtpTimestamp;

/// Entries per bucket.
pub const WAYS: usize = 4;

/// Entries of the first allocation.
const INITIAL_ENTRIES: usize = 64;

/// A saved transmit time more than this many 2^-32 s from its receive time is not kept
/// (chrony keeps about ±1 s): the reply then falls back to basic mode.
const MAX_TX_DELTA: i64 = 1 << 32;

/// The entry is used: a second lookup of it gives a basic reply.
const DISABLED: u8 = 1;
/// `tx_delta` holds a transmit time.
const VALID_TX: u8 = 2;

/// One earlier reply: its receive timestamp and when it left, as a delta in 2^-31 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    rx: u64,
    tx_delta: i32,
    flags: u8,
}

impl Entry {
    fn transmit(&self) -> Option<NtpTimestamp> {
        (self.flags & VALID_TX != 0).then(|| {
            NtpTimestamp::from_bits(self.rx.wrapping_add_signed(i64::from(self.tx_delta) * 2))
        })
    }

    fn set_transmit(&mut self, tx: NtpTimestamp) {
        let delta = tx.to_bits().wrapping_sub(self.rx) as i64;
        match i32::try_from(delta / 2) {
            Ok(d) if (-MAX_TX_DELTA..MAX_TX_DELTA).contains(&delta) => {
                self.tx_delta = d;
                self.flags |= VALID_TX;
            }
            _ => self.flags &= !VALID_TX,
        }
    }
}

/// What [`Interleave::lookup`] found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The request is not an interleaved one: answer in basic mode, save nothing.
    NotAsked,
    /// An interleaved request without a usable earlier exchange: answer in basic mode and save.
    Basic,
    /// Answer interleaved with this transmit timestamp, and save.
    Interleaved(NtpTimestamp),
}

/// One namespace's table of earlier exchanges (see the module documentation).
#[derive(Debug, Clone)]
pub struct Interleave {
    entries: Vec<Entry>,
    max_entries: usize,
    growth_limit: usize,
    used: usize,
    hash_key: u64,
    hits: u64,
    kernel_stamps: u64,
}

impl Interleave {
    /// An empty table holding at most `max_entries` (rounded up to a power of two, at least
    /// one bucket); `seed` keys the bucket hash.
    #[must_use]
    pub fn new(max_entries: usize, seed: u64) -> Self {
        Self {
            entries: Vec::new(),
            max_entries: max_entries.max(WAYS).next_power_of_two(),
            growth_limit: usize::MAX,
            used: 0,
            hash_key: mix(seed ^ 0x786C_6561_7665),
            hits: 0,
            kernel_stamps: 0,
        }
    }

    /// Bytes the table holds (for the daemon's memory accounting).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.entries.len() * size_of::<Entry>()
    }

    /// Holds the table to `bytes`: past it, new exchanges evict within their bucket instead
    /// of doubling the table (the daemon's memory ceiling).
    pub fn limit_growth(&mut self, bytes: usize) {
        self.growth_limit = bytes;
    }

    /// Interleaved replies given so far.
    #[must_use]
    pub const fn hits(&self) -> u64 {
        self.hits
    }

    /// Kernel transmit timestamps matched to a held exchange so far: how an operator (or a
    /// test) sees that the kernel's stamps, not the daemon's, are what interleaved replies carry.
    #[must_use]
    pub const fn kernel_stamps(&self) -> u64 {
        self.kernel_stamps
    }

    /// Earlier exchanges held now.
    #[must_use]
    pub const fn held(&self) -> usize {
        self.used
    }

    /// Whether a request with these fields asks for interleaved mode (chrony's test):
    /// version 4, no kiss, origin's lowest bit set, receive ≠ transmit.
    #[must_use]
    pub fn asks(
        version: u8,
        kiss: bool,
        origin: NtpTimestamp,
        receive: NtpTimestamp,
        transmit: NtpTimestamp,
    ) -> bool {
        version == 4 && !kiss && origin.to_bits() & 1 == 1 && receive != transmit
    }

    /// Looks up the earlier exchange an interleaved request refers to (its origin timestamp)
    /// and disables it, so it answers one interleaved reply at most.
    pub fn lookup(&mut self, origin: NtpTimestamp) -> Lookup {
        let Some(i) = self.find(origin.to_bits()) else {
            return Lookup::Basic;
        };
        let e = &mut self.entries[i];
        if e.flags & DISABLED != 0 {
            return Lookup::Basic;
        }
        e.flags |= DISABLED;
        match e.transmit() {
            Some(tx) => {
                self.hits += 1;
                Lookup::Interleaved(tx)
            }
            None => Lookup::Basic,
        }
    }

    /// Saves a reply sent with receive timestamp `rx` at daemon time `tx`. A receive
    /// timestamp already held is disabled instead (two replies with one key: neither can be
    /// told apart, as chrony does).
    pub fn save(&mut self, rx: NtpTimestamp, tx: NtpTimestamp) {
        let rx = rx.to_bits();
        if rx == 0 {
            return;
        }
        if let Some(i) = self.find(rx) {
            self.entries[i].flags |= DISABLED;
            return;
        }
        if self.entries.is_empty() || (self.used + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let Some(bucket) = self.bucket(rx) else {
            return;
        };
        // An empty way, else the oldest exchange (furthest behind `rx`, era-safe).
        let slot = bucket
            .clone()
            .find(|&i| self.entries[i].rx == 0)
            .or_else(|| bucket.max_by_key(|&i| rx.wrapping_sub(self.entries[i].rx)));
        let Some(i) = slot else {
            return;
        };
        if self.entries[i].rx == 0 {
            self.used += 1;
        }
        let mut e = Entry {
            rx,
            tx_delta: 0,
            flags: 0,
        };
        e.set_transmit(tx);
        self.entries[i] = e;
    }

    /// Replaces the saved transmit time of the reply whose receive timestamp was `rx` with the
    /// kernel's timestamp `tx` of when it left. Unknown `rx`: nothing happens.
    pub fn kernel_transmit(&mut self, rx: NtpTimestamp, tx: NtpTimestamp) {
        if let Some(i) = self.find(rx.to_bits()) {
            self.entries[i].set_transmit(tx);
            self.kernel_stamps += 1;
        }
    }

    fn bucket(&self, rx: u64) -> Option<core::ops::Range<usize>> {
        let buckets = self.entries.len() / WAYS;
        if buckets == 0 {
            return None;
        }
        let b = (mix(rx ^ self.hash_key) as usize) & (buckets - 1);
        Some(b * WAYS..b * WAYS + WAYS)
    }

    fn find(&self, rx: u64) -> Option<usize> {
        if rx == 0 {
            return None;
        }
        self.bucket(rx)?.find(|&i| self.entries[i].rx == rx)
    }

    /// Doubles the table (or allocates the first one) when the size and memory limits allow;
    /// otherwise new exchanges evict within their bucket.
    fn grow(&mut self) {
        let next = if self.entries.is_empty() {
            INITIAL_ENTRIES.min(self.max_entries)
        } else {
            self.entries.len() * 2
        };
        if next > self.max_entries
            || (!self.entries.is_empty() && next * size_of::<Entry>() > self.growth_limit)
        {
            return;
        }
        let old = core::mem::replace(&mut self.entries, vec![Entry::default(); next]);
        self.used = 0;
        for e in old.into_iter().filter(|e| e.rx != 0) {
            if let Some(bucket) = self.bucket(e.rx)
                && let Some(i) = bucket.clone().find(|&i| self.entries[i].rx == 0)
            {
                self.entries[i] = e;
                self.used += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(bits: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(bits)
    }

    const RX: u64 = (3_900_000_000 << 32) | 0x1235;

    #[test]
    fn asks_only_with_chronys_marks() {
        let (o, r, t) = (ts(RX), ts(5), ts(7));
        assert!(Interleave::asks(4, false, o, r, t));
        assert!(!Interleave::asks(3, false, o, r, t));
        assert!(!Interleave::asks(4, true, o, r, t));
        assert!(!Interleave::asks(4, false, ts(RX - 1), r, t));
        assert!(!Interleave::asks(4, false, o, t, t));
    }

    #[test]
    fn one_interleaved_reply_per_saved_exchange() {
        let mut t = Interleave::new(4096, 1);
        assert_eq!(t.lookup(ts(RX)), Lookup::Basic);
        t.save(ts(RX), ts(RX + 1000));
        t.kernel_transmit(ts(RX), ts(RX + 5000));
        // The delta is kept in 2^-31 s: the lowest bit may go.
        let Lookup::Interleaved(tx) = t.lookup(ts(RX)) else {
            panic!("not interleaved");
        };
        assert!(tx.to_bits().abs_diff(RX + 5000) <= 1);
        assert_eq!(t.lookup(ts(RX)), Lookup::Basic);
        assert_eq!(t.hits(), 1);
    }

    #[test]
    fn duplicate_receive_timestamp_disables() {
        let mut t = Interleave::new(4096, 1);
        t.save(ts(RX), ts(RX + 100));
        t.save(ts(RX), ts(RX + 300));
        assert_eq!(t.lookup(ts(RX)), Lookup::Basic);
    }

    #[test]
    fn far_transmit_time_is_not_kept() {
        let mut t = Interleave::new(4096, 1);
        t.save(ts(RX), ts(RX + (3 << 32)));
        assert_eq!(t.lookup(ts(RX)), Lookup::Basic);
        t.save(ts(RX + 2), ts(RX - (1 << 31)));
        assert!(matches!(t.lookup(ts(RX + 2)), Lookup::Interleaved(_)));
    }

    #[test]
    fn bounded_under_a_flood_and_recent_exchanges_survive_mostly() {
        let mut t = Interleave::new(1024, 7);
        for i in 0..100_000u64 {
            t.save(ts(RX + (i << 12) + 1), ts(RX + (i << 12) + 9));
        }
        assert_eq!(t.table_bytes(), 1024 * 16);
        assert!(t.held() <= 1024);
        let recent = (99_900..100_000u64)
            .filter(|i| matches!(t.lookup(ts(RX + (i << 12) + 1)), Lookup::Interleaved(_)))
            .count();
        assert!(recent > 90, "{recent}");
    }

    #[test]
    fn memory_limit_stops_growth() {
        let mut t = Interleave::new(1 << 20, 7);
        t.limit_growth(4096);
        for i in 0..10_000u64 {
            t.save(ts(RX + (i << 12) + 1), ts(RX + (i << 12) + 9));
        }
        assert!(t.table_bytes() <= 4096, "{}", t.table_bytes());
        assert!(t.held() > 0);
    }

    #[test]
    fn nothing_allocated_until_used() {
        let mut t = Interleave::new(4096, 1);
        assert_eq!(t.table_bytes(), 0);
        assert_eq!(t.lookup(ts(RX)), Lookup::Basic);
        t.kernel_transmit(ts(RX), ts(RX));
        assert_eq!(t.table_bytes(), 0);
        t.save(ts(0), ts(1));
        assert_eq!(t.table_bytes(), 0);
    }
}
