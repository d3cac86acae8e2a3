//! The DNS cache under the daemon's memory ceiling (`[limits] memory_max_bytes`).
//!
//! Why here and not in the query path: answers enter the cache only when an upstream replies,
//! so the limit is set just before replies are fed to the resolver and the cache's size is
//! published just after. At the ceiling the cache stores nothing new; every query is still
//! answered (from the cache or the upstream).

use super::Inner;
use crate::budget::{Account, LogLimit};
use crate::serve::NsInfo;

/// One namespace's cache (and rate-limit table) in the memory ceiling.
#[derive(Debug, Default)]
pub(super) struct CacheBudget {
    /// The cache's share of the daemon's accounted bytes.
    account: Account,
    /// Rate limit of the "not cached" log line.
    log: LogLimit,
    /// Refusals already seen (new ones are logged).
    refused_seen: u64,
}

impl Inner {
    /// Before upstream replies are handled: the cache may grow by what the ceiling leaves.
    ///
    /// The rate-limit table gets the same room less what the cache holds; it is set here too
    /// (not per query), so it follows the ceiling as often as upstream replies come.
    pub(super) fn limit_cache(&mut self) {
        let allowed = self.cache_budget.account.allowed();
        self.resolver
            .limit_cache_growth(allowed.saturating_sub(self.resolver.rate_limit_bytes()));
        self.resolver
            .limit_rate_table(allowed.saturating_sub(self.resolver.cache_bytes()));
    }

    /// After: publishes the cache's size, and logs (rate-limited) answers the ceiling kept out.
    pub(super) fn account_cache(&mut self, ns: &NsInfo) {
        let b = &mut self.cache_budget;
        b.account
            .set(self.resolver.cache_bytes() + self.resolver.rate_limit_bytes());
        let refused = self.resolver.cache_refused();
        if refused > b.refused_seen {
            b.refused_seen = refused;
            if b.log.allow() {
                tracing::warn!(netns = %ns.name, cache_bytes = b.account.get(),
                    "dns: answer not cached: the daemon's memory ceiling (limits.memory_max_bytes) is reached");
            }
        }
    }
}
