//! The only place in nsaux that talks to the kernel through raw system calls.
//!
//! Everything here is small and has one job: entering a namespace, reading a namespace's
//! identity, and the UDP ancillary-data tricks (pktinfo, receive timestamps) that socket2 and
//! tokio do not offer, and read-only clock state for NTP (`adjtimex` with modes 0,
//! `clock_getres`), and process identity through pidfds (`SO_PEERPIDFD`, liveness), and the
//! zero-timeout epoll that finds quiet sockets with datagrams waiting (`probe`), and the quiet
//! lane's nice value and time slice (`nice`). Every `unsafe` block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

pub(crate) mod asyncfd;
pub(crate) mod caps;
pub(crate) mod clock;
pub(crate) mod epoll;
pub(crate) mod fdtable;
mod mapped;
pub(crate) mod netns;
pub(crate) mod nice;
pub(crate) mod peer;
pub(crate) mod pidfd;
pub(crate) mod probe;
pub(crate) mod udp;

pub(crate) use mapped::{unmap, unmap_ip};
