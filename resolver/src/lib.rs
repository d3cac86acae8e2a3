//! `nsaux-resolver`: the sans-IO core of nsaux's per-namespace DNS service, a caching
//! forwarder in the style of dnsmasq/unbound's forward mode.
//!
//! # Layout
//!
//! | module | job |
//! | --- | --- |
//! | `resolver` | the instance and its public entry points; one file per client-path stage (`admit`, `parse`, `local_answer`, `cached`, `coalesce`) and per upstream job (`attempt`, `finish`, `reply`, `timer`) |
//! | `event` | the types the daemon exchanges with the core |
//! | `config` | protocol settings and their defaults |
//! | `query` | client query vetting (drop / FORMERR / NOTIMP / BADVERS) |
//! | `response` | hand-built error, local and truncated answers |
//! | `answer` | upstream answers stored as wire bytes and replayed with patched ID/TTLs |
//! | `cache` | LRU cache with TTL countdown, negative entries and serve-stale |
//! | `local` | hosts/config/run-time records, forward and derived PTR |
//! | `hosts` | `/etc/hosts` parser |
//! | `resolv_conf` | resolv.conf parser (the namespace's upstream servers) |
//! | `upstream` | upstream health, RTT and failover order |
//! | `acl` | CIDR allow list |
//! | `ratelimit` | per-client token buckets with TC "slip" |
//! | `stats` | counters |
//! | `wire` | header/name/record walking helpers; [`message_id`] |
//! | `error` | errors for configuration, local-record and resolv.conf input |
//!
//! # Contract
//!
//! No I/O, no clock, no threads: every entry point takes `now`, and query IDs come from an
//! RNG seeded by the caller. The daemon drives an instance like this:
//!
//! 1. For each client message call [`Resolver::handle_query`]. On
//!    [`QueryOutcome::Answered`] send `out` back at once; on `Pending` the answer comes later.
//! 2. Drain [`Resolver::poll_transmit`] and send each [`UpstreamTransmit`] from a socket
//!    inside the namespace (UDP: a fresh random source port is best; TCP: 2-byte length
//!    prefix, one message per connection is enough), and arm its
//!    [`deadline`](UpstreamTransmit::deadline) for the socket or connection carrying it.
//! 3. Feed every upstream reply to [`Resolver::handle_upstream`] with its real source
//!    address; report send/connect failures with [`Resolver::handle_upstream_error`].
//! 4. Arm a timer for [`Resolver::poll_timeout`] and call [`Resolver::handle_timeout`].
//! 5. After each of the calls above, drain [`Resolver::poll_answer`] and
//!    [`Resolver::poll_transmit`].
//!
//! Policy decisions worth knowing (each is documented where it is implemented):
//! no upstreams → SERVFAIL ([`ServFailReason::NoUpstreams`]); rate-limited UDP clients are
//! dropped with every `slip`-th answered TC=1; upstream SERVFAIL/REFUSED/NOTIMP/FORMERR
//! make the query try the next upstream and are relayed only if all fail; the cache key
//! includes the CD bit as well as DO; answers from cache or upstream never carry AA.
// Forbidden outright in the library; its unit tests may opt in (a counting allocator).
#![cfg_attr(not(test), forbid(unsafe_code))]
#![warn(missing_docs)]

mod acl;
mod answer;
mod cache;
mod config;
mod error;
mod event;
mod hosts;
mod hosts_table;
mod local;
mod query;
mod ratelimit;
mod resolv_conf;
mod resolver;
mod response;
mod stats;
mod upstream;
mod wire;

pub use acl::Cidr;
pub use config::{Config, Overload, ServeStale};
pub use error::Error;
pub use event::{
    AnswerKind, ClientAnswer, ClientInfo, DropReason, IgnoreReason, QueryOutcome, QueryToken,
    ServFailReason, Transport, UpstreamOutcome, UpstreamTransmit,
};
pub use hosts::{HostsEntry, parse_hosts};
pub use hosts_table::{HostsBuilder, HostsTable};
pub use local::SharedLocal;
pub use ratelimit::RateLimitConfig;
pub use resolv_conf::{ResolvConf, ResolvOption, parse_resolv_conf};
pub use resolver::{Resolver, UpstreamStatus};
pub use stats::Stats;
pub use wire::message_id;

#[cfg(test)]
mod tests;
