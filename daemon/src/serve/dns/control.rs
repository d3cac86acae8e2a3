//! Operator views and verbs: the status line, and `nsauxctl dns stats | flush | add |
//! remove` (run-time records are saved by `persist.rs`).
//!
//! Why apart from the query path: these only read or poke the resolver under the lock and
//! shape JSON; nothing here runs per query.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::DnsNs;

impl DnsNs {
    /// The service's line in `nsauxctl status`.
    pub(super) fn status_json(&self) -> Value {
        let g = self.lock();
        json!({
            "upstreams": g.upstreams.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "upstream_source": g.upstream_source(),
            "cache_entries": g.resolver.cache_len(),
            "outstanding": g.resolver.outstanding(),
            "upstream_sockets": g.pool.busy(),
            "spare_sockets": g.pool.free(),
        })
    }

    /// Runs one `nsauxctl dns` verb: stats, flush, add, remove.
    pub(super) fn control_verb(&self, action: &str, args: &Value) -> Result<Value, String> {
        match action {
            "stats" => Ok(self.stats_json()),
            "flush" => {
                let mut g = self.lock();
                let n = g.resolver.cache_len();
                g.resolver.flush();
                Ok(json!({ "flushed": n }))
            }
            "add" | "remove" => {
                let name = args["name"].as_str().ok_or("missing name")?.to_owned();
                let addr: IpAddr = args["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or("missing or bad addr")?;
                let mut g = self.lock();
                if action == "add" {
                    g.resolver
                        .add_record(&name, addr)
                        .map_err(|e| e.to_string())?;
                    if !g.runtime_records.contains(&(name.clone(), addr)) {
                        g.runtime_records.push((name.clone(), addr));
                        self.save_records(&g.runtime_records);
                    }
                    tracing::info!(netns = %self.ns.name, %name, %addr, "dns: record added");
                    Ok(json!({ "added": name, "addr": addr.to_string() }))
                } else {
                    let existed = g
                        .resolver
                        .remove_record(&name, addr)
                        .map_err(|e| e.to_string())?;
                    let before = g.runtime_records.len();
                    g.runtime_records
                        .retain(|(n, a)| !(n == &name && *a == addr));
                    if g.runtime_records.len() != before {
                        self.save_records(&g.runtime_records);
                    }
                    if !existed {
                        return Err(format!("no run-time record {name} {addr}"));
                    }
                    tracing::info!(netns = %self.ns.name, %name, %addr, "dns: record removed");
                    Ok(json!({ "removed": name, "addr": addr.to_string() }))
                }
            }
            other => Err(format!(
                "unknown dns action {other:?} (stats, flush, add, remove)"
            )),
        }
    }

    /// `nsauxctl dns stats`: the core's counters and upstream health.
    fn stats_json(&self) -> Value {
        let g = self.lock();
        let s = g.resolver.stats();
        let avg_us = s.latency_sum_us.checked_div(s.latency_count).unwrap_or(0);
        let upstreams: Vec<Value> = g
            .resolver
            .upstream_status()
            .iter()
            .map(|u| {
                json!({
                    "addr": u.addr.to_string(),
                    "srtt_us": u.srtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    "failures": u.failures,
                    "down": u.down,
                })
            })
            .collect();
        json!({
            "queries": s.queries,
            "cache_hits": s.cache_hits,
            "cache_misses": s.cache_misses,
            "local_answers": s.local_answers,
            "any_minimal": s.any_minimal,
            "retransmits": s.retransmits,
            "stale_answers": s.stale_answers,
            "upstream_answers": s.upstream_answers,
            "coalesced": s.coalesced,
            "upstream_queries": s.upstream_queries,
            "upstream_responses": s.upstream_responses,
            "upstream_failures": s.upstream_failures,
            "upstream_ignored": s.upstream_ignored,
            "tcp_retries": s.tcp_retries,
            "upstream_latency_avg_us": avg_us,
            "refused": s.refused,
            "formerr": s.formerr,
            "notimp": s.notimp,
            "servfail": s.servfail,
            "dropped": s.dropped,
            "rate_limited": s.rate_limited,
            "cache_entries": g.resolver.cache_len(),
            "outstanding": g.resolver.outstanding(),
            "upstream_source": g.upstream_source(),
            "upstreams": upstreams,
        })
    }
}
