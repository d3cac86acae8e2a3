//! Deterministic randomness for the rate limiter: the leak/kiss coin flips
//! and the keyed hash that spreads clients over the table.
//!
//! Sans-IO means no entropy source here: the daemon seeds the server (from
//! `getrandom`), tests use fixed seeds and get reproducible runs.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for coin
/// flips that only need to be unpredictable to an off-path attacker who does
/// not know the seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// True once in 2^`log2` calls on average (always true for 0).
    pub(crate) fn one_in_pow2(&mut self, log2: u8) -> bool {
        let mask = 1u64
            .checked_shl(u32::from(log2))
            .unwrap_or(0)
            .wrapping_sub(1);
        self.next_u64() & mask == 0
    }
}

/// The SplitMix64 finaliser, also used as a keyed hash of client keys so that
/// an attacker cannot aim spoofed sources at one victim's table slot without
/// knowing the key.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keyed hash of a 128-bit client key.
pub(crate) const fn hash128(key: u64, value: u128) -> u64 {
    let lo = value as u64;
    let hi = (value >> 64) as u64;
    mix(mix(key ^ lo).wrapping_add(hi) ^ key.rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coin_frequency() {
        let mut r = Rng::new(1);
        let hits = (0..40_000).filter(|_| r.one_in_pow2(2)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!((0..10).all(|_| r.one_in_pow2(0)));
    }

    #[test]
    fn hash_depends_on_key() {
        assert_ne!(hash128(1, 42), hash128(2, 42));
        assert_ne!(hash128(1, 42), hash128(1, 43));
    }
}
