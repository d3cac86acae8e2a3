//! `Flight`: the tables of resolutions in flight and what they owe the daemon, made at the
//! first cache miss.
//!
//! Why apart and boxed: four hash tables and two queues are about 220 bytes inline even when
//! empty, and most namespaces never forward a query (issue 16: bytes per namespace). Once
//! made they stay: a namespace that forwarded once is likely to again.

use std::collections::VecDeque;
use std::sync::LazyLock;

use hashbrown::HashMap;

use super::{Attempt, Pending};
use crate::cache::CacheKey;
use crate::event::{ClientAnswer, QueryToken, UpstreamTransmit};

/// Resolutions in flight.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// Resolutions in flight.
    pub(super) pending: HashMap<QueryToken, Pending>,
    /// Coalescing index.
    pub(super) by_key: HashMap<CacheKey, QueryToken>,
    /// Outstanding DNS IDs.
    pub(super) by_id: HashMap<u16, QueryToken>,
    /// Attempts whose resolution already ended (kept for upstream health).
    pub(super) orphans: HashMap<u16, Attempt>,
    /// Messages for the daemon to send upstream.
    pub(super) transmits: VecDeque<UpstreamTransmit>,
    /// Deferred answers for the daemon to deliver.
    pub(super) answers: VecDeque<ClientAnswer>,
}

/// What a resolver that never forwarded reads.
static EMPTY: LazyLock<Flight> = LazyLock::new(Flight::default);

impl Flight {
    /// The tables for reading (empty ones if none were made).
    pub(super) fn view(f: &Option<Box<Self>>) -> &Self {
        f.as_deref().unwrap_or(&EMPTY)
    }

    /// The tables for changing, made on first use.
    pub(super) fn open(f: &mut Option<Box<Self>>) -> &mut Self {
        f.get_or_insert_with(Box::default)
    }
}
