//! DUMP over a stream (TCP, AF_LOCAL: `rpcinfo -p`, `rpcinfo`): the table is copied under the
//! namespace's state lock (reference counts, no text: `nsaux_rpcbind::DumpJob`) and, when it is
//! large, encoded on a blocking thread, so a table of `max_registrations` entries costs the
//! loop the copy, not the encoding. The reply bytes are exactly what `Portmapper::handle`
//! writes. One such encoding per namespace at a time (the others wait their turn), so a flood
//! of DUMPs holds at most one extra copy of the table per namespace. A UDP DUMP stays on the
//! loop: its encoding stops at `udp_max_reply` (the core), so it is bounded by that.

use nsaux_rpcbind::CallContext;

use super::service::RpcbindNs;

/// A table of at most this many entries is encoded in place: the hand-off to a blocking
/// thread and back would cost more than the encoding (about 25 ns an entry, release build).
pub(super) const ENCODE_IN_PLACE: usize = 512;

impl RpcbindNs {
    /// Answers `request` into `out` if it is a DUMP (true); otherwise leaves both alone
    /// (false: hand it to `handle_call`).
    pub(super) async fn stream_dump(
        &self,
        ctx: &CallContext,
        request: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        // Cheap test first: only a DUMP call waits for the gate.
        if !is_dump(request) {
            return false;
        }
        let Ok(_turn) = self.dump_gate.acquire().await else {
            return false;
        };
        let job = {
            let mut st = self.state();
            if st.replaying {
                return false;
            }
            match st.pm.take_dump(ctx, request) {
                Some(job) => job,
                None => return false,
            }
        };
        self.ns.metrics.rpc_call(request, true);
        if job.len() <= ENCODE_IN_PLACE {
            job.encode(out);
            return true;
        }
        let mut buf = std::mem::take(out);
        match tokio::task::spawn_blocking(move || {
            job.encode(&mut buf);
            buf
        })
        .await
        {
            Ok(b) => {
                *out = b;
                true
            }
            Err(e) => {
                tracing::warn!(netns = %self.ns.name, error = %e, "DUMP encoding failed");
                out.clear();
                true
            }
        }
    }
}

/// Whether `request` looks like a portmapper DUMP call (program 100000, procedure 4): the
/// call header's fixed words, read without decoding the credentials. The core decides for
/// good (`take_dump`).
fn is_dump(request: &[u8]) -> bool {
    let word = |i: usize| {
        request
            .get(i * 4..i * 4 + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    // xid, CALL (0), rpcvers, prog, vers, proc
    word(1) == Some(0) && word(3) == Some(nsaux_rpcbind::PMAP_PROG) && word(5) == Some(4)
}
