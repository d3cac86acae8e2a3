//! DNS over TCP: the client side of the endpoint (RFC 7766 framing, pipelining, idle
//! timeout) and one-shot TCP exchanges with upstreams (after a truncated UDP answer).

use std::io;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nsaux_resolver::{Transport, UpstreamTransmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::DnsNs;
use super::pump::{Route, Verdict};
use crate::serve::{Connection, NsInfo, Peer, Stream};

/// Answers queued per connection before further deferred answers are dropped (a client that
/// pipelines more than this without reading is not a resolver client).
const ANSWER_QUEUE: usize = 64;
/// Longest time one write of answers may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued answers gathered into one write stop growing past this many bytes.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// Appends `m` with its two-byte length (RFC 1035 4.2.2); an answer too long to frame is
/// skipped (the resolver never builds one: TCP answers are capped at 65,535 bytes).
fn push_frame(out: &mut Vec<u8>, m: &[u8]) {
    if let Ok(len) = u16::try_from(m.len()) {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(m);
    }
}

/// Serves one client connection until it closes, idles out (no complete query for the idle
/// timeout), takes too long over one query, or sends something unusable.
pub(super) async fn serve_client(svc: Arc<DnsNs>, conn: Connection) {
    let (Stream::Tcp(stream), Peer::Ip(peer)) = (conn.stream, conn.peer) else {
        return;
    };
    let slot = &conn.slot;
    let cfg = svc.cfg();
    let idle = Duration::from_secs(cfg.tcp_idle_timeout.clamp(1, 86_400));
    let record = Duration::from_secs(cfg.tcp_record_timeout.clamp(1, 3_600));
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::new(rd);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(ANSWER_QUEUE);
    let reader = async move {
        let mut out = Vec::new();
        let mut last_complete = Instant::now();
        loop {
            let mut len = [0u8; 2];
            // Idle is counted from the last complete query, so a trickle does not extend it.
            if !matches!(
                tokio::time::timeout_at((last_complete + idle).into(), rd.read(&mut len[..1]))
                    .await,
                Ok(Ok(1))
            ) {
                break;
            }
            // From its first byte a query has `record` to arrive whole, however it trickles,
            // and never more than the idle timeout since the last complete one.
            let deadline = (Instant::now() + record).min(last_complete + idle).into();
            if !matches!(
                tokio::time::timeout_at(deadline, rd.read_exact(&mut len[1..])).await,
                Ok(Ok(_))
            ) {
                break;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if !matches!(
                tokio::time::timeout_at(deadline, rd.read_exact(&mut msg)).await,
                Ok(Ok(_))
            ) {
                break;
            }
            last_complete = Instant::now();
            slot.record_done();
            let verdict = svc.query(
                peer,
                Transport::Tcp,
                &msg,
                &mut out,
                Instant::now(),
                |since| Route::Tcp {
                    tx: tx.clone(),
                    since,
                },
            );
            match verdict {
                Verdict::Reply => {
                    if tx.send(std::mem::take(&mut out)).await.is_err() {
                        break;
                    }
                }
                Verdict::Deferred => {}
                // Nothing sensible to answer (not even a header): end the stream.
                Verdict::Drop => break,
            }
        }
    };
    let writer = async move {
        while let Some(m) = rx.recv().await {
            // Every answer already queued leaves with this one, in order, in one write: a
            // client pipelining queries (RFC 7766) gets its answers in one segment per batch
            // instead of one system call and segment each. The answers move from the queue
            // into the batch (no more held than before), and the batch is freed after its
            // write, so an idle connection keeps no buffer.
            let mut frames = Vec::with_capacity(m.len() + 2);
            push_frame(&mut frames, &m);
            while frames.len() < WRITE_BATCH_BYTES
                && let Ok(m) = rx.try_recv()
            {
                push_frame(&mut frames, &m);
            }
            if frames.is_empty() {
                continue;
            }
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&frames)).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
    };
    // The writer ends once the reader and every route holding the channel are gone, so
    // answers still being resolved when the client half-closes are delivered.
    tokio::join!(reader, writer);
}

/// One upstream exchange over TCP from inside the namespace; the reply (or the failure) goes
/// to the resolver, then the driver is woken to re-arm its timer. Holds the service only
/// weakly while waiting, and gives up at the attempt's deadline or when `stop` fires.
pub(super) async fn upstream_attempt(
    svc: Weak<DnsNs>,
    ns: Arc<NsInfo>,
    stop: CancellationToken,
    t: UpstreamTransmit,
) {
    let result = tokio::select! {
        () = stop.cancelled() => return,
        r = tokio::time::timeout_at(t.deadline.into(), exchange(&ns, &t)) => r,
    };
    let Some(svc) = svc.upgrade() else { return };
    let now = Instant::now();
    let mut g = svc.lock();
    match result {
        Ok(Ok(reply)) => {
            g.limit_cache();
            let _ = g
                .resolver
                .handle_upstream(now, t.upstream, Transport::Tcp, &reply);
            g.account_cache(&ns);
        }
        Ok(Err(e)) => {
            tracing::debug!(netns = %ns.name, upstream = %t.upstream, error = %e, "dns: upstream tcp failed");
            g.resolver
                .handle_upstream_error(now, t.upstream, Transport::Tcp, t.dns_id);
        }
        Err(_) => {
            g.resolver
                .handle_upstream_error(now, t.upstream, Transport::Tcp, t.dns_id);
        }
    }
    svc.pump(&mut g, now);
    svc.kick(&mut g);
}

/// Connects (socket created inside the namespace), sends one framed message, reads one.
async fn exchange(ns: &NsInfo, t: &UpstreamTransmit) -> io::Result<Vec<u8>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let v6 = t.upstream.is_ipv6();
    let std_sock = ns
        .run_in(move || {
            let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
            let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
            s.set_nonblocking(true)?;
            Ok(std::net::TcpStream::from(s))
        })
        .await?;
    let mut stream = tokio::net::TcpSocket::from_std_stream(std_sock)
        .connect(t.upstream)
        .await?;
    let len = u16::try_from(t.payload.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut frame = Vec::with_capacity(t.payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&t.payload);
    stream.write_all(&frame).await?;
    let mut lenb = [0u8; 2];
    stream.read_exact(&mut lenb).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
