//! TCP and AF_LOCAL connections (port 111, the abstract socket, the path socket): the
//! per-namespace connection cap, record marking, and the idle timeout (CVE-2021-46828).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use nsaux_rpcbind::{
    CallContext, Caller, DEFAULT_MAX_RECORD, RecordDecoder, Transport, frame_record,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::service::RpcbindNs;
use super::unix_secs;
use crate::serve::{Peer, Stream};

/// Read buffer per connection (records larger than this arrive in several reads).
const READ_BUF: usize = 4096;

/// Counts a connection for the per-namespace cap while it lives.
struct ConnSlot(Arc<RpcbindNs>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RpcbindNs {
    /// Takes a connection slot, or `None` when the namespace is at its cap.
    fn conn_slot(self: &Arc<Self>) -> Option<ConnSlot> {
        let max = self.state().cfg.max_connections;
        let prev = self.conns.fetch_add(1, Ordering::SeqCst);
        let slot = ConnSlot(Arc::clone(self));
        (prev < max).then_some(slot)
    }

    /// Serves a connection after taking a slot; refused (closed) at the cap.
    pub(super) async fn serve_conn(
        self: Arc<Self>,
        stream: Stream,
        peer: Peer,
        local: Option<SocketAddr>,
    ) {
        let Some(slot) = self.conn_slot() else {
            tracing::debug!(netns = %self.ns.name, ?peer, "connection limit of the namespace reached; closing");
            return;
        };
        let caller = match peer {
            Peer::Ip(a) => Caller::Ip(a),
            Peer::Local { uid, pid, .. } => Caller::Local {
                uid,
                pid: pid.and_then(|p| u32::try_from(p).ok()),
            },
        };
        let this = Arc::clone(&slot.0);
        match stream {
            Stream::Tcp(s) => this.serve_stream(s, Transport::Tcp, caller, local).await,
            Stream::Unix(s) => this.serve_stream(s, Transport::Local, caller, None).await,
        }
        drop(slot);
    }

    /// Serves one TCP or AF_LOCAL connection: record marking, idle timeout.
    async fn serve_stream<S>(
        self: Arc<Self>,
        mut s: S,
        transport: Transport,
        caller: Caller,
        local: Option<SocketAddr>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let idle = Duration::from_secs(self.state().cfg.idle_timeout_secs.max(1));
        let mut dec = RecordDecoder::new(DEFAULT_MAX_RECORD);
        let mut buf = vec![0u8; READ_BUF];
        let mut out = Vec::new();
        let mut wire = Vec::new();
        loop {
            let n = match tokio::time::timeout(idle, s.read(&mut buf)).await {
                Err(_) => {
                    tracing::debug!(netns = %self.ns.name, ?caller, "idle connection closed");
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            let records = match dec.feed(&buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(netns = %self.ns.name, ?caller, error = %e, "bad record marking; closing");
                    return;
                }
            };
            for rec in records {
                let ctx = CallContext {
                    transport,
                    caller,
                    local_addr: local,
                    now_unix: unix_secs(SystemTime::now()),
                };
                if !self.handle_call(&ctx, &rec, &mut out, None) {
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
