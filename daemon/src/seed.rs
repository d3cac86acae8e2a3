//! Seeds for the randomness the protocol cores use (DNS query IDs, RPC xids, rate-limit hash
//! keys), written once.
//!
//! The cores take a seed and run their own RNG, so they stay deterministic in tests; the daemon
//! is the one place that asks the OS. An attacker who could predict a seed could forge DNS
//! answers or aim at one rate-limit slot, so the OS source is used; if it fails (no getrandom
//! and no /dev/urandom, which a working Linux does not do), the fallback mixes the std hasher's
//! per-process random keys with the clock and the pid, and the failure is logged.

use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// `N` random bytes from the OS random source (see the module doc for the fallback).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if let Err(e) = getrandom::fill(&mut out) {
        tracing::warn!(error = %e, "OS random source failed; seeding from process-random keys");
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u32(std::process::id());
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            let bytes = h.finish().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    out
}

/// A random `u64` (see [`random_bytes`]).
pub(crate) fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes())
}

/// A random `u32` (see [`random_bytes`]).
pub(crate) fn random_u32() -> u32 {
    u32::from_le_bytes(random_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_between_calls() {
        let a: Vec<u64> = (0..8).map(|_| random_u64()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), a.len(), "8 random u64 collided: {a:?}");
        assert_ne!(random_bytes::<32>(), [0u8; 32]);
    }
}
