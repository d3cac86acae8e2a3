//! What the manager reports about itself: the daemon summary (`status`) and every namespace
//! with its services and listeners (`ns list`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Manager;
use super::listeners::{ListenerState, ServiceSlot};

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Manager {
    /// The daemon summary for `nsauxctl status`.
    pub(super) fn status(&self) -> Value {
        let (mut up, mut failed) = (0usize, 0usize);
        for e in self.namespaces.values() {
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
            "udp_dropped": self.namespaces.values().map(|e| e.info.share.dropped()).fold(0, u64::saturating_add),
        })
    }

    /// Every namespace with its sources and services, for `nsauxctl ns list`.
    pub(super) fn ns_list(&self) -> Value {
        let list: Vec<Value> = self
            .namespaces
            .values()
            .map(|e| {
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
            })
            .collect();
        Value::Array(list)
    }
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
