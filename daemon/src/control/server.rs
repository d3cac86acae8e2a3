//! Serving the control socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::{Call, MAX_LINE, Request, Response};
use crate::serve::Peer;
use crate::serve::slots::{Slot, SlotBudget, SlotTable};

/// Control clients connected at once (only root can connect: the socket is 0600).
const MAX_CLIENTS: usize = 16;
/// Time a request line has to arrive whole, counted from the previous answer.
const IDLE: Duration = Duration::from_secs(10);

/// Binds the control socket with mode 0600. The caller holds the runtime-dir lock, so a stale
/// socket file left by a crash can be removed safely.
pub(crate) fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    // Create it private from the start: umask first, then chmod to be sure.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener =
        listener.with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

/// Accepts control clients until the task is dropped; each parsed request goes to `handler` as
/// a [`Call`], and the answer it sends back is written to the client. Held connections never
/// lock anyone out: at [`MAX_CLIENTS`] the one that completed a request longest ago is closed.
pub(crate) async fn serve(listener: UnixListener, handler: mpsc::UnboundedSender<Call>) {
    let slots = SlotTable::new();
    let budget = SlotBudget {
        local: MAX_CLIENTS,
        remote: MAX_CLIENTS,
        per_peer: MAX_CLIENTS,
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let peer = Peer::Local {
            uid: stream.peer_cred().map_or(u32::MAX, |c| c.uid()),
            gid: 0,
            pid: None,
        };
        let (slot, adm) = slots.admit(&peer, budget);
        if adm.evicted > 0 {
            tracing::debug!(
                "control socket: {MAX_CLIENTS} clients connected; closed the longest-idle one"
            );
        }
        let handler = handler.clone();
        tokio::spawn(async move {
            let evicted = slot.evicted();
            tokio::select! {
                () = evicted.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_secs(300), client(stream, handler, &slot)) => {}
            }
        });
    }
}

/// The reply line's bytes. Serialized (and the reply freed) on a blocking thread: an `ns list`
/// of thousands of namespaces is megabytes of JSON, milliseconds the loop would not serve.
async fn encode(resp: Response) -> Vec<u8> {
    let fallback = || b"{\"ok\":false}".to_vec();
    tokio::task::spawn_blocking(move || serde_json::to_vec(&resp).unwrap_or_else(|_| fallback()))
        .await
        .unwrap_or_else(|_| fallback())
}

/// Serves one client: a line must arrive whole within [`IDLE`] of the previous answer.
async fn client(stream: UnixStream, handler: mpsc::UnboundedSender<Call>, slot: &Slot) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd.take(u64::MAX));
    loop {
        let mut line = Vec::new();
        rd.get_mut().set_limit(MAX_LINE as u64 + 1);
        let Ok(Ok(n)) = tokio::time::timeout(IDLE, rd.read_until(b'\n', &mut line)).await else {
            return;
        };
        if n == 0 {
            return;
        }
        slot.record_done();
        let resp = if line.len() > MAX_LINE {
            Response::err("request too long")
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    let (reply, rx) = oneshot::channel();
                    if handler.send(Call { request, reply }).is_err() {
                        Response::err("daemon is shutting down")
                    } else {
                        rx.await
                            .unwrap_or_else(|_| Response::err("daemon is shutting down"))
                    }
                }
                Err(e) => Response::err(format!("bad request: {e}")),
            }
        };
        let mut out = encode(resp).await;
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() || line.len() > MAX_LINE {
            return;
        }
    }
}
