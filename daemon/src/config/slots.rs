//! Bounds for the connection-slot keys of `[rpcbind]` and `[dns]` (budgets, per-peer caps, idle
//! and record deadlines): checked at parse time so that `validate` and reload refuse what the
//! daemon could not run with (a budget of 0 admits nobody; deadlines must stay far from the
//! clock's overflow).

use serde::{Deserialize, Deserializer, de};

/// Largest connection budget accepted: more than any listener can hold open (file limits).
pub(crate) const MAX_BUDGET: usize = 65_536;
/// Longest idle timeout accepted, seconds (a day).
pub(crate) const MAX_IDLE_SECS: u64 = 86_400;
/// Longest record deadline accepted, seconds (an hour).
pub(crate) const MAX_RECORD_SECS: u64 = 3_600;

fn in_range<E: de::Error, T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T) -> Result<T, E> {
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(E::custom(format!("{v} out of range {lo}..={hi}")))
    }
}

/// A connection budget or per-peer cap: 1..=[`MAX_BUDGET`].
pub(crate) fn de_budget<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    in_range(usize::deserialize(d)?, 1, MAX_BUDGET)
}

/// An idle timeout in seconds: 1..=[`MAX_IDLE_SECS`].
pub(crate) fn de_idle_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(u64::deserialize(d)?, 1, MAX_IDLE_SECS)
}

/// A record deadline in seconds: 1..=[`MAX_RECORD_SECS`].
pub(crate) fn de_record_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    in_range(u64::deserialize(d)?, 1, MAX_RECORD_SECS)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn zero_and_absurd_budgets_and_deadlines_are_rejected() {
        for bad in [
            "[rpcbind]\nmax_connections = 0\n",
            "[rpcbind]\nmax_local_connections = 0\n",
            "[rpcbind]\nmax_connections_per_peer = 9223372036854775807\n",
            "[rpcbind]\nidle_timeout_secs = 0\n",
            "[rpcbind]\nrecord_timeout_secs = 9223372036854775807\n",
            "[dns]\ntcp_max_connections = 0\n",
            "[dns]\ntcp_max_local_connections = 1000000\n",
            "[dns]\ntcp_max_connections_per_peer = 0\n",
            "[dns]\ntcp_idle_timeout = 9223372036854775807\n",
            "[dns]\ntcp_record_timeout = 0\n",
            "[[netns]]\nmatch = \"x\"\nrpcbind = { max_local_connections = 0 }\n",
        ] {
            let e = Config::from_toml(bad, None).expect_err(bad);
            assert!(e.to_string().contains("out of range"), "{bad}: {e}");
        }
        let ok = Config::from_toml(
            "[rpcbind]\nmax_connections = 300\nmax_local_connections = 8\n\
             max_connections_per_peer = 4\nrecord_timeout_secs = 5\n\
             [dns]\ntcp_max_local_connections = 8\ntcp_max_connections_per_peer = 2\n\
             tcp_record_timeout = 3\n",
            None,
        )
        .expect("valid");
        let c = ok.for_namespace("a");
        assert_eq!(c.rpcbind.max_local_connections, 8);
        assert_eq!(c.rpcbind.max_connections_per_peer, 4);
        assert_eq!(c.dns.tcp_record_timeout, 3);
    }
}
