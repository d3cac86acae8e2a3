//! Integration tests: one binary, one module per area. Real namespaces, real daemon, real
//! clients. Root is required; under `CI=true` nothing skips.

mod core;
mod dns;
mod dns_abuse;
mod host;
mod ntp;
mod rpcbind;
