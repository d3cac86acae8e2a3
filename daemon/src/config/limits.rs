//! Range checks for values the daemon could parse but not run with.
//!
//! Each limit comes from reading the value's use, not from taste: durations are added to
//! `Instant`s or multiplied (`prune_interval_secs * 3 / 4` overflows a `Duration` near the TOML
//! integer maximum), the DNS core refuses `max_outstanding` above 16384
//! and timeouts above an hour, and table sizes bound per-namespace memory. Values the code
//! already clamps to a safe range (`stale_max_age`, a zero interval read as one second) are left
//! alone so existing files keep loading. Connection budgets, idle and record deadlines are
//! bounded where they are parsed (`slots.rs`). Checked at load, so
//! `nsauxctl validate` and a reload refuse such a file instead of a namespace (or the whole
//! daemon) panicking on it later.

use super::ServicesConfig;

/// Longest duration accepted for any seconds key: a year, far from where `Instant + d` or
/// `d * 3` could overflow and longer than anyone waits for a probe or a sweep.
pub(crate) const MAX_SECS: u64 = 366 * 86_400;
/// Most entries in a per-namespace table (registrations, rate-limit clients, cache entries):
/// beyond this one namespace could hold gigabytes.
pub(crate) const MAX_TABLE_ENTRIES: usize = 1 << 24;
/// Largest DNS cache in bytes (4 GiB).
pub(crate) const MAX_CACHE_BYTES: usize = 1 << 32;
/// The DNS core's own limit on queries waiting for upstreams.
pub(crate) const MAX_OUTSTANDING: usize = 16_384;
/// The DNS core refuses timeouts above an hour (it adds them to `Instant`s); so do we.
pub(crate) const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Highest DNS rate-limit rate or burst: keeps the limiter's millisecond arithmetic
/// (`ms * per_second`, `burst * 1000`) far from overflow.
pub(crate) const MAX_DNS_RATE: u32 = 1_000_000;

fn at_most<T: PartialOrd + std::fmt::Display>(field: &str, v: T, max: T) -> Result<(), String> {
    if v > max {
        Err(format!("{field}: {v} is above the limit {max}"))
    } else {
        Ok(())
    }
}

/// Checks every numeric key of one namespace's effective service configuration; the message
/// names the field (`rpcbind.max_connections: ...`).
pub(crate) fn check(c: &ServicesConfig) -> Result<(), String> {
    for (field, port) in [
        ("ident.port", c.ident.port),
        ("rpcbind.port", c.rpcbind.port),
        ("ntp.port", c.ntp.port),
        ("dns.port", c.dns.port),
    ] {
        // 0 would bind a random port that no client can find.
        if port == 0 {
            return Err(format!("{field}: 0 out of range 1..=65535"));
        }
    }
    let r = &c.rpcbind;
    at_most(
        "rpcbind.max_registrations",
        r.max_registrations,
        MAX_TABLE_ENTRIES,
    )?;
    at_most(
        "rpcbind.prune_interval_secs",
        r.prune_interval_secs,
        MAX_SECS,
    )?;
    at_most(
        "rpcbind.journal_sweep_delay_secs",
        r.journal_sweep_delay_secs,
        MAX_SECS,
    )?;
    let n = &c.ntp;
    at_most("ntp.reference_max_age", n.reference_max_age, MAX_SECS)?;
    at_most(
        "ntp.rate_limit.max_clients",
        n.rate_limit.max_clients,
        MAX_TABLE_ENTRIES,
    )?;
    let d = &c.dns;
    at_most("dns.cache_size", d.cache_size, MAX_TABLE_ENTRIES)?;
    at_most("dns.cache_max_bytes", d.cache_max_bytes, MAX_CACHE_BYTES)?;
    at_most("dns.max_outstanding", d.max_outstanding, MAX_OUTSTANDING)?;
    at_most("dns.query_timeout_ms", d.query_timeout_ms, MAX_TIMEOUT_MS)?;
    at_most(
        "dns.attempt_timeout_ms",
        d.attempt_timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    at_most("dns.stale_max_age", d.stale_max_age, MAX_SECS)?;
    if let Some(rl) = &d.rate_limit {
        at_most("dns.rate_limit.per_second", rl.per_second, MAX_DNS_RATE)?;
        at_most("dns.rate_limit.burst", rl.burst, MAX_DNS_RATE)?;
        at_most(
            "dns.rate_limit.max_clients",
            rl.max_clients,
            MAX_TABLE_ENTRIES,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Every limited key: (TOML section, key, largest accepted value).
    const LIMITS: &[(&str, &str, u64)] = &[
        ("rpcbind", "max_registrations", 1 << 24),
        ("rpcbind", "max_connections", 65_536),
        ("rpcbind", "max_local_connections", 65_536),
        ("rpcbind", "max_connections_per_peer", 65_536),
        ("rpcbind", "idle_timeout_secs", 86_400),
        ("rpcbind", "record_timeout_secs", 3_600),
        ("rpcbind", "prune_interval_secs", super::MAX_SECS),
        ("rpcbind", "journal_sweep_delay_secs", super::MAX_SECS),
        ("ntp", "reference_max_age", super::MAX_SECS),
        ("ntp.rate_limit", "max_clients", 1 << 24),
        ("dns", "cache_size", 1 << 24),
        ("dns", "cache_max_bytes", 1 << 32),
        ("dns", "max_outstanding", 16_384),
        ("dns", "query_timeout_ms", 3_600_000),
        ("dns", "attempt_timeout_ms", 3_600_000),
        ("dns", "stale_max_age", super::MAX_SECS),
        ("dns", "tcp_idle_timeout", 86_400),
        ("dns", "tcp_max_connections", 65_536),
        ("dns", "tcp_max_local_connections", 65_536),
        ("dns", "tcp_max_connections_per_peer", 65_536),
        ("dns", "tcp_record_timeout", 3_600),
        ("dns.rate_limit", "per_second", 1_000_000),
        ("dns.rate_limit", "burst", 1_000_000),
        ("dns.rate_limit", "max_clients", 1 << 24),
    ];

    #[test]
    fn every_limit_accepts_its_maximum_and_rejects_above() {
        for &(section, key, max) in LIMITS {
            let ok = format!("[{section}]\n{key} = {max}\n");
            Config::from_toml(&ok, None).unwrap_or_else(|e| panic!("{ok}: {e}"));
            // Just above the limit the message names the field; at the TOML maximum a u32 key
            // already fails to deserialize, and the message names at least its section.
            for (bad, named) in [
                (max + 1, format!("{section}.{key}")),
                (i64::MAX as u64, section.to_owned()),
            ] {
                let text = format!("[{section}]\n{key} = {bad}\n");
                match Config::from_toml(&text, None) {
                    Ok(_) => panic!("{text}: accepted"),
                    Err(e) => assert!(e.to_string().contains(&named), "{text}: {e}"),
                }
            }
        }
    }

    #[test]
    fn limits_hold_in_overrides_too() {
        let e = Config::from_toml(
            "[[netns]]\nmatch = \"a*\"\nrpcbind = { max_connections = 9223372036854775807 }\n",
            None,
        )
        .expect_err("must fail");
        let e = e.to_string();
        assert!(e.contains("[[netns]] #1"), "{e}");
        assert!(e.contains("rpcbind.max_connections"), "{e}");
    }

    #[test]
    fn zero_stays_accepted_where_the_code_reads_it_as_one() {
        Config::from_toml(
            "[rpcbind]\nprune_interval_secs = 0\n[dns]\nquery_timeout_ms = 0\n",
            None,
        )
        .expect("valid");
    }
}
