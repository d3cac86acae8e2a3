//! Integration tests: one binary, one module per area. Real namespaces, real daemon, real
//! clients. Root is required; under `CI=true` nothing skips.

mod attacks;
mod bigdump;
mod budgets;
mod coalesce;
mod conformance;
mod containers;
mod core;
mod cost;
mod dns;
mod dns_abuse;
mod dns_pipelining;
mod dns_sources;
mod fairness;
mod fate;
mod host;
mod identity;
mod lane;
mod metrics;
mod multiflood;
mod ntp;
mod offloop;
mod operations;
mod packaging;
mod reflection;
mod rewrites;
mod rpcbind;
mod rpcbind_series;
mod slots;
mod start_many;
mod workers;
mod xleave;
