//! The portmapper's control verbs (`nsauxctl rpc list|stats|unset`): the table and the GETSTAT
//! counters as JSON, and the operator's removal, journaled like a client's UNSET.

use serde_json::{Value, json};

use super::journal::Change;
use super::service::RpcbindNs;

impl RpcbindNs {
    /// Carries out one control verb.
    pub(super) fn control_verb(&self, action: &str, args: &Value) -> Result<Value, String> {
        match action {
            "list" => Ok(self.list()),
            "unset" => self.admin_unset(args),
            "stats" => Ok(self.stats()),
            other => Err(format!("unknown action {other:?} (list, unset, stats)")),
        }
    }

    /// Every registration, in table order.
    fn list(&self) -> Value {
        let st = self.state();
        Value::Array(
            st.pm
                .entries()
                .iter()
                .map(|e| {
                    json!({
                        "prog": e.prog,
                        "vers": e.vers,
                        "netid": e.netid.as_str(),
                        "address": e.uaddr.as_str(),
                        "owner": e.owner.as_str(),
                    })
                })
                .collect(),
        )
    }

    /// The GETSTAT counters per version.
    fn stats(&self) -> Value {
        let st = self.state();
        let s = st.pm.stats();
        let by_vers: Vec<Value> = s
            .by_vers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({
                    "version": i + 2,
                    "calls_by_proc": v.info.to_vec(),
                    "set": v.setinfo,
                    "unset": v.unsetinfo,
                    "lookups": v.addrinfo.iter().map(|a| json!({
                        "prog": a.prog, "vers": a.vers, "netid": a.netid,
                        "success": a.success, "failure": a.failure,
                    })).collect::<Vec<_>>(),
                    "remote_calls": v.rmtinfo.iter().map(|r| json!({
                        "prog": r.prog, "vers": r.vers, "proc": r.proc_, "netid": r.netid,
                        "success": r.success, "failure": r.failure, "indirect": r.indirect,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "registrations": st.pm.entries().len(), "by_version": by_vers })
    }

    /// Removes the registrations of (prog, vers[, netid]) whatever their owner.
    fn admin_unset(&self, args: &Value) -> Result<Value, String> {
        let num = |k: &str| {
            args.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("missing or bad {k}"))
        };
        let (prog, vers) = (num("prog")?, num("vers")?);
        let netid = args.get("netid").and_then(Value::as_str).unwrap_or("");
        let mut st = self.state();
        let removed = st.pm.unset_admin(prog, vers, netid);
        let n = removed.len();
        if n > 0 {
            let changes: Vec<Change> = removed
                .entries()
                .iter()
                .cloned()
                .map(Change::Unset)
                .collect();
            // Like a client's UNSET: not journaled, not done, so a restart cannot bring back
            // what the operator was told is gone. The operator sees the error and may retry.
            if let Err(e) = self.journal(&mut st, &changes) {
                st.pm.undo_unset(removed);
                // At the cap the compaction started holds this UNSET (`write_journal`): the
                // operator is told to retry, and the retry appends to the compacted file.
                st.cap_held = false;
                self.start_due_compaction(&mut st);
                tracing::error!(netns = %self.ns.name, prog, vers, netid, error = %e,
                    "cannot journal an operator unset; nothing removed");
                return Err(format!("cannot write the journal ({e}); nothing removed"));
            }
            self.table_changed(&st.pm);
            tracing::info!(netns = %self.ns.name, prog, vers, netid, removed = n, "operator unset");
        }
        Ok(json!({ "removed": n }))
    }
}
