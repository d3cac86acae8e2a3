//! Differential conformance (issue 13): the same queries, calls and packets go to nsauxd and
//! to the stock daemon (BIND behind unbound and dnsmasq, rpcbind, chronyd), each in a
//! namespace of its own, and the replies are compared field by field. A field where nsauxd
//! differs from the stock answer is a divergence; every divergence must be judged in
//! `tests/conformance/divergences.toml` (with the reason nsauxd is right), else the test fails.
//!
//! | file | job |
//! | --- | --- |
//! | `judged` | the checked-in list and the check against it |
//! | `wire` | a small DNS message reader (names decompressed, records normalized) |
//! | `dns_setup`, `dns` | BIND upstream, the three forwarders, the query set, the comparison |
//! | `rpcbind` | nsauxd against stock rpcbind, every procedure of v2/v3/v4 |
//! | `ntp` | nsauxd against chronyd, every version and mode |

mod dns;
mod dns_setup;
mod judged;
mod ntp;
mod rpcbind;
mod wire;
