//! TCP and AF_LOCAL connections (port 111, the abstract socket, the path socket): record
//! marking, the idle timeout from the last complete record and the per-record deadline
//! (CVE-2021-46828); the connection budgets are `serve/slots.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nsaux_rpcbind::{
    CallContext, Caller, DEFAULT_MAX_RECORD, RecordDecoder, Transport, frame_record,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::busy::{RETRIES, WAIT};
use super::service::{Answer, RpcbindNs};
use super::unix_secs;
use crate::serve::slots::{Slot, SlotBudget};
use crate::serve::{Connection, Peer, Stream};

/// Read buffer per connection (records larger than this arrive in several reads).
const READ_BUF: usize = 4096;

impl RpcbindNs {
    /// The connection budgets of the current configuration.
    pub(super) fn slot_budget(&self) -> SlotBudget {
        let st = self.state();
        SlotBudget {
            local: st.cfg.max_local_connections,
            remote: st.cfg.max_connections,
            per_peer: st.cfg.max_connections_per_peer,
        }
    }

    /// Serves a connection already admitted into [`RpcbindNs::slots`] (its slot is freed when
    /// this returns).
    pub(super) async fn serve_conn(self: Arc<Self>, conn: Connection) {
        self.wait_replayed().await;
        let caller = match conn.peer {
            Peer::Ip(a) => Caller::Ip(a),
            Peer::Local { uid, pid, .. } => Caller::Local {
                uid,
                pid: pid.and_then(|p| u32::try_from(p).ok()),
            },
        };
        let slot = &conn.slot;
        match conn.stream {
            Stream::Tcp(s) => {
                self.serve_stream(s, Transport::Tcp, caller, conn.local, slot)
                    .await;
            }
            Stream::Unix(s) => {
                self.serve_stream(s, Transport::Local, caller, None, slot)
                    .await;
            }
        }
    }

    /// Serves one TCP or AF_LOCAL connection: record marking, the idle timeout counted from
    /// the last complete record, and the deadline of a record counted from its first byte.
    async fn serve_stream<S>(
        &self,
        mut s: S,
        transport: Transport,
        caller: Caller,
        local: Option<SocketAddr>,
        slot: &Slot,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (idle, record) = {
            let st = self.state();
            (
                Duration::from_secs(st.cfg.idle_timeout_secs.max(1)),
                Duration::from_secs(st.cfg.record_timeout_secs.max(1)),
            )
        };
        let mut dec = RecordDecoder::new(DEFAULT_MAX_RECORD);
        let mut buf = vec![0u8; READ_BUF];
        let mut out = Vec::new();
        let mut wire = Vec::new();
        let mut last_complete = Instant::now();
        // First byte of the record being received, if one is partly in.
        let mut record_start: Option<Instant> = None;
        loop {
            // Without a complete record for `idle` the connection goes, partial record or not;
            // a record under way must also be complete `record` after its first byte.
            let idle_end = last_complete + idle;
            let deadline = record_start.map_or(idle_end, |t| (t + record).min(idle_end));
            let n = match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
                Err(_) => {
                    let why = if record_start.is_some_and(|t| t + record <= idle_end) {
                        "record not completed in time; closing"
                    } else {
                        "idle connection closed"
                    };
                    tracing::debug!(netns = %self.ns.name, ?caller, "{why}");
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            let was_idle = dec.is_idle();
            let records = match dec.feed(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(netns = %self.ns.name, ?caller, error = %e, "bad record marking; closing");
                    return;
                }
            };
            let now = Instant::now();
            if !records.is_empty() {
                last_complete = now;
                slot.record_done();
            }
            record_start = if dec.is_idle() {
                None
            } else if was_idle || !records.is_empty() {
                Some(now)
            } else {
                record_start
            };
            for rec in records {
                let ctx = CallContext {
                    transport,
                    caller,
                    local_addr: local,
                    now_unix: unix_secs(SystemTime::now()),
                };
                let mut answer = if self.stream_dump(&ctx, &rec, &mut out).await {
                    Answer::Reply
                } else {
                    self.handle_call(&ctx, &rec, &mut out, None)
                };
                // The journal is being rewritten off the loop: wait for it (this connection
                // reads nothing meanwhile), then handle the call again (`busy.rs`).
                for _ in 0..RETRIES {
                    let Answer::Wait { seen, held } = answer else {
                        break;
                    };
                    // Dropped once the call is handled again or given up (`busy.rs`).
                    let _held = held.then(|| self.held_change());
                    if !self.journal_turn_after(seen, record.min(WAIT)).await {
                        break;
                    }
                    answer = self.handle_call(&ctx, &rec, &mut out, None);
                }
                if let Answer::Wait { held: true, .. } = answer {
                    drop(self.held_change()); // the last retry met the cap again: given up
                }
                if answer != Answer::Reply {
                    continue;
                }
                wire.clear();
                frame_record(&out, &mut wire);
                match tokio::time::timeout(idle, s.write_all(&wire)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
        }
    }
}
