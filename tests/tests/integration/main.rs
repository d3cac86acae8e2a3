//! Integration tests: one binary, one module per area. Real namespaces, real daemon, real
//! clients. Root is required; under `CI=true` nothing skips.

mod budgets;
mod conformance;
mod core;
mod dns;
mod dns_abuse;
mod fate;
mod host;
mod identity;
mod ntp;
mod reflection;
mod rpcbind;
mod slots;
