//! What the manager reports about itself: the daemon summary (`status`) and every namespace
//! with its services and listeners (`ns list`).
//!
//! Both walk every namespace on the manager task, which shares the loop with the datagrams: a
//! walk gives up its turn every [`WALK_BATCH`] namespaces ([`pace`]), so at thousands of
//! namespaces no datagram waits for a whole walk (issue 11, "nothing blocks the loop"). The
//! manager handles one event at a time, so the namespaces do not change under a paused walk.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Manager;
use super::listeners::{ListenerState, ServiceSlot};

/// Namespaces a walk over all of them handles per turn of the loop: a namespace's `ns list`
/// entry (three services' status, a few locks and small JSON objects) costs some microseconds,
/// so a turn stays well under a millisecond.
pub(super) const WALK_BATCH: usize = 32;

/// Called before the `i`th namespace of a walk: every [`WALK_BATCH`] namespaces, gives the loop
/// to the sockets that are ready (tokio's `yield_now` wakes the task again only after the next
/// poll of the I/O driver).
pub(super) async fn pace(i: usize) {
    if i > 0 && i.is_multiple_of(WALK_BATCH) {
        tokio::task::yield_now().await;
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Manager {
    /// The daemon summary for `nsauxctl status`.
    pub(super) async fn status(&self) -> Value {
        let (mut up, mut failed, mut dropped) = (0usize, 0usize, 0u64);
        for (i, e) in self.namespaces.values().enumerate() {
            pace(i).await;
            dropped = dropped.saturating_add(e.info.share.dropped());
            for s in e.services.values() {
                for l in s.listeners.values() {
                    match l {
                        ListenerState::Up { .. } => up += 1,
                        ListenerState::Failed { .. } => failed += 1,
                    }
                }
            }
        }
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "config": self.config.path.as_ref().map(|p| p.display().to_string()),
            "runtime_dir": self.runtime_dir.display().to_string(),
            "netns_dirs": self.config.netns_dirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "host_netns": self.config.host_netns,
            "namespaces": self.namespaces.len(),
            "listeners_up": up,
            "listeners_failed": failed,
            "memory_accounted_bytes": crate::budget::total(),
            "memory_max_bytes": crate::budget::ceiling(),
            "udp_dropped": dropped,
        })
    }

    /// Every namespace with its sources and services, for `nsauxctl ns list`.
    pub(super) async fn ns_list(&self) -> Value {
        let mut list = Vec::with_capacity(self.namespaces.len());
        for (i, e) in self.namespaces.values().enumerate() {
            pace(i).await;
            list.push({
                let services: serde_json::Map<String, Value> = e
                    .services
                    .iter()
                    .map(|(name, slot)| ((*name).to_owned(), service_json(slot)))
                    .collect();
                json!({
                    "name": e.info.name,
                    "id": e.info.id,
                    "source": e.sources.first().map(|(s, _)| s.to_string()),
                    "aliases": e.sources.iter().skip(1).map(|(s, _)| format!("{} ({s})", s.name())).collect::<Vec<_>>(),
                    "since": unix_secs(e.since),
                    "services": services,
                    "udp": e.info.share.report(),
                    "attached": self.attach_info(e),
                })
            });
        }
        Value::Array(list)
    }
}

/// Namespaces counted (and their core counters copied) per turn of a scrape: no JSON per
/// namespace, so far more than a report walk's batch.
const COUNT_BATCH: usize = 256;

impl Manager {
    /// `[[kind, state, count], ...]` for the metrics' namespace gauges: the source kind
    /// (`host`, `dir`, `pid`, `path`) and `serving` (every service up) or `partial`.
    pub(super) async fn ns_counts(&self) -> Value {
        let mut counts: std::collections::BTreeMap<(String, &'static str), u64> =
            std::collections::BTreeMap::new();
        for (i, e) in self.namespaces.values().enumerate() {
            if i > 0 && i.is_multiple_of(COUNT_BATCH) {
                tokio::task::yield_now().await;
            }
            let kind = e.sources.first().map_or_else(String::new, |(s, _)| {
                let s = s.to_string();
                s.split(':').next().unwrap_or("").to_owned()
            });
            for slot in e.services.values() {
                if let Ok(inst) = &slot.instance {
                    inst.sync_metrics();
                }
            }
            let state = if e.services.values().all(slot_is_up) {
                "serving"
            } else {
                "partial"
            };
            *counts.entry((kind, state)).or_default() += 1;
        }
        Value::Array(
            counts
                .into_iter()
                .map(|((kind, state), n)| json!([kind, state, n]))
                .collect(),
        )
    }
}

/// The service's state is `up` in [`service_json`]'s words: built, every listener up.
fn slot_is_up(slot: &ServiceSlot) -> bool {
    slot.instance.is_ok()
        && slot
            .listeners
            .values()
            .all(|l| matches!(l, ListenerState::Up { .. }))
}

fn service_json(slot: &ServiceSlot) -> Value {
    let listeners: Vec<Value> = slot
        .listeners
        .iter()
        .map(|(spec, st)| match st {
            ListenerState::Up { restarts, .. } => {
                let mut v = json!({ "listener": spec.to_string(), "state": "up" });
                if *restarts > 0 {
                    v["restarts"] = json!(restarts);
                }
                v
            }
            ListenerState::Failed {
                error,
                attempts,
                ended,
            } => {
                let state = if *ended { "restarting" } else { "failed" };
                json!({ "listener": spec.to_string(), "state": state, "error": error, "attempts": attempts + 1 })
            }
        })
        .collect();
    let n_up = slot
        .listeners
        .values()
        .filter(|l| matches!(l, ListenerState::Up { .. }))
        .count();
    let (state, error) = match &slot.instance {
        // Dropped after a panic, rebuild pending (see supervise.rs).
        Err(e) if slot.rebuild_pending => ("restarting", Some(e.clone())),
        Err(e) => ("failed", Some(e.clone())),
        Ok(_) if n_up == slot.listeners.len() => ("up", None),
        Ok(_) if n_up == 0 => ("failed", None),
        Ok(_) => ("partial", None),
    };
    let mut v = json!({ "state": state, "listeners": listeners });
    if let Some(e) = error {
        v["error"] = json!(e);
    }
    if slot.panics > 0 {
        v["panics"] = json!(slot.panics);
    }
    if let Ok(inst) = &slot.instance {
        let st = inst.status();
        if !st.is_null() {
            v["status"] = st;
        }
    }
    v
}
