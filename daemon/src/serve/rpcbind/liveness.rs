//! The liveness task of one namespace (`prune = true`): every round it asks the core's
//! [`Liveness`] what to probe and what is dead, sends the probes (UDP from the namespace's
//! port-111 socket, TCP over connections made inside the namespace), reports the answers, and
//! removes dead registrations through the journal like any other change.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use nsaux_rpcbind::{Effect, Liveness, Probe, ProbeSources, ProbeTransport, frame_record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::service::{RpcbindNs, journal_changes, undo};
use super::{any_source_for, user_entries};
use crate::lock::lock;
use crate::serve::NsInfo;

/// Most TCP liveness probes of one namespace in flight at once: each holds a socket (an fd)
/// until it is answered, refused or timed out, and a namespace may hold
/// `max_registrations` (1024) registrations.
const TCP_PROBES_IN_FLIGHT: usize = 16;

impl RpcbindNs {
    /// Starts or stops the liveness task to match the configuration.
    pub(super) fn update_prune(self: &Arc<Self>) {
        let on = self.state().cfg.prune;
        self.prune_on.store(on, Ordering::Relaxed);
        let mut task = lock(&self.prune);
        match (on, task.is_some()) {
            (true, false) => {
                let weak = Arc::downgrade(self);
                let cancel = self.ns.cancel.clone();
                let fut = async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = prune_loop(weak) => {}
                    }
                };
                *task = Some(crate::serve::contain::spawn_logged(
                    &self.ns.name,
                    "rpcbind liveness",
                    fut,
                    || {},
                ));
            }
            (false, true) => {
                if let Some(t) = task.take() {
                    t.abort();
                }
            }
            _ => {}
        }
    }

    /// One liveness round: the core counts the misses, picks what to probe (with backoff) and
    /// what is dead. UDP probes are sent here from the namespace's port-111 socket; the TCP
    /// probes are returned for [`run_tcp_probes`]; dead registrations are removed (journaled).
    fn prune_round(&self, max_misses: u32) -> Vec<Probe> {
        let ep = lock(&self.prune_ep).as_ref().and_then(Weak::upgrade);
        let sources = ProbeSources {
            udp: ep
                .as_ref()
                .is_some_and(|ep| ep.bound.is_ipv4() || ep.dual_stack),
            udp6: ep.as_ref().is_some_and(|ep| ep.bound.is_ipv6()),
            tcp: true,
        };
        let mut guard = self.state();
        let st = &mut *guard;
        let registrations = user_entries(&st.pm, &st.cfg);
        let live = st.liveness.get_or_insert_with(|| Box::new(Liveness::new()));
        let round = live.round(
            registrations,
            sources,
            max_misses,
            crate::seed::random_u32(),
        );
        let mut tcp = Vec::new();
        for p in round.probes {
            match p.transport {
                ProbeTransport::Tcp => tcp.push(p),
                ProbeTransport::Udp => {
                    let sent = ep.as_ref().is_some_and(|ep| {
                        ep.send_from(&p.call, p.target, any_source_for(p.target), 0)
                            .is_ok()
                    });
                    if !sent {
                        live.withdraw(p.xid);
                    }
                }
            }
        }
        let dead = round.dead;
        if dead.is_empty() {
            return tcp;
        }
        let removals: Vec<Effect> = dead
            .iter()
            .map(|e| Effect::Unregistered(st.pm.unset_admin(e.prog, e.vers, &e.netid)))
            .collect();
        let changes = journal_changes(&removals);
        if let Err(err) = self.journal(st, &changes) {
            // Kept rather than removed in memory only, which a restart would undo. Their misses
            // stay past the limit, so the next round tries again (and they are not probed).
            undo(&mut st.pm, removals);
            // At the cap the compaction started holds these removals (`write_journal`): the
            // next round removes them again, appending to the compacted file.
            st.cap_held = false;
            self.start_due_compaction(st);
            tracing::error!(netns = %self.ns.name, error = %err, kept = dead.len(),
                "cannot journal the removal of silent registrations; kept, retrying next round");
            return tcp;
        }
        if let Some(live) = st.liveness.as_mut() {
            live.forget(&dead);
        }
        self.table_changed(&st.pm);
        for e in &dead {
            tracing::info!(netns = %self.ns.name, prog = e.prog, vers = e.vers, netid = %e.netid, uaddr = %e.uaddr,
                "registered service stopped answering; registration removed");
        }
        tcp
    }

    /// A TCP liveness probe was answered: the service is alive, its misses are forgotten.
    fn probe_answered(&self, xid: u32) {
        if let Some(live) = self.state().liveness.as_mut() {
            live.answered(xid);
        }
    }

    /// Forgets probes that were never made, so the next round does not count them as misses.
    fn withdraw_probes(&self, xids: impl IntoIterator<Item = u32>) {
        if let Some(live) = self.state().liveness.as_mut() {
            for xid in xids {
                live.withdraw(xid);
            }
        }
    }
}

/// Runs liveness rounds until the instance is gone. The TCP probes one round starts run while
/// the loop waits for the next round, and end before it.
async fn prune_loop(weak: Weak<RpcbindNs>) {
    let mut tcp = Vec::new();
    loop {
        let Some(this) = weak.upgrade() else { return };
        let (interval, max_misses) = {
            let st = this.state();
            (
                Duration::from_secs(st.cfg.prune_interval_secs.max(1)),
                st.cfg.prune_after_misses,
            )
        };
        let ns = Arc::clone(&this.ns);
        drop(this);
        // Three quarters of the interval: every TCP probe has ended when the next round counts
        // the outstanding ones, so none is judged while its answer may still be on the way.
        let budget = interval * 3 / 4;
        tokio::join!(
            tokio::time::sleep(interval),
            run_tcp_probes(&weak, &ns, std::mem::take(&mut tcp), budget),
        );
        let Some(this) = weak.upgrade() else { return };
        tcp = this.prune_round(max_misses);
    }
}

/// Runs one round's TCP probes, at most [`TCP_PROBES_IN_FLIGHT`] at a time, each from a socket
/// created inside the namespace (its routes and addresses, like the UDP probes sent from its
/// port-111 socket), all ending by `budget`.
///
/// A probe answered with an RPC reply carrying its xid marks the service alive. One refused,
/// reset or timed out stays outstanding, so the next round counts it as a miss, exactly as an
/// unanswered UDP probe. Probes that could not be made (no socket, deadline passed before their
/// turn) are withdrawn without a miss: failing to ask is no evidence against the service, as
/// with a UDP probe whose send failed.
async fn run_tcp_probes(
    weak: &Weak<RpcbindNs>,
    ns: &Arc<NsInfo>,
    probes: Vec<Probe>,
    budget: Duration,
) {
    let deadline = tokio::time::Instant::now() + budget;
    let mut rest = probes.into_iter();
    loop {
        let batch: Vec<Probe> = rest.by_ref().take(TCP_PROBES_IN_FLIGHT).collect();
        if batch.is_empty() {
            return;
        }
        let withdraw = |batch: &[Probe]| {
            if let Some(this) = weak.upgrade() {
                this.withdraw_probes(batch.iter().map(|p| p.xid));
            }
        };
        if tokio::time::Instant::now() >= deadline {
            withdraw(&batch);
            withdraw(&rest.collect::<Vec<_>>());
            return;
        }
        // One trip to the namespace thread for the whole batch.
        let v6: Vec<bool> = batch.iter().map(|p| p.target.is_ipv6()).collect();
        let socks = ns
            .run_in(move || Ok(v6.into_iter().map(new_tcp_socket).collect::<Vec<_>>()))
            .await;
        let socks = match socks {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(netns = %ns.name, error = %e, "cannot create liveness probe sockets");
                withdraw(&batch);
                continue;
            }
        };
        let mut running = tokio::task::JoinSet::new();
        for (p, sock) in batch.into_iter().zip(socks) {
            match sock {
                Ok(sock) => {
                    running.spawn(async move {
                        let answered = tokio::time::timeout_at(deadline, tcp_probe(sock, &p)).await;
                        (p.xid, p.target, answered)
                    });
                }
                Err(e) => {
                    tracing::debug!(netns = %ns.name, target = %p.target, error = %e, "cannot create a liveness probe socket");
                    withdraw(std::slice::from_ref(&p));
                }
            }
        }
        while let Some(done) = running.join_next().await {
            let Ok((xid, target, answered)) = done else {
                continue;
            };
            match answered {
                Ok(Ok(true)) => {
                    if let Some(this) = weak.upgrade() {
                        this.probe_answered(xid);
                    }
                }
                Ok(Ok(false)) => {
                    tracing::debug!(netns = %ns.name, %target, "liveness probe got a stray answer");
                }
                Ok(Err(e)) => {
                    tracing::debug!(netns = %ns.name, %target, error = %e, "liveness probe failed");
                }
                Err(_) => {
                    tracing::debug!(netns = %ns.name, %target, "liveness probe timed out");
                }
            }
        }
    }
}

/// A non-blocking TCP socket of the given family, not yet connected. Call inside the target
/// namespace.
fn new_tcp_socket(v6: bool) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// One TCP liveness probe: connect, send its call as one record, read the head of the answer.
/// True when the core says the head answers the probe (any RPC reply with its xid: a service
/// that answers, even with an error, is alive).
async fn tcp_probe(sock: std::net::TcpStream, p: &Probe) -> io::Result<bool> {
    let mut s = tokio::net::TcpSocket::from_std_stream(sock)
        .connect(p.target)
        .await?;
    let mut wire = Vec::with_capacity(p.call.len() + 4);
    frame_record(&p.call, &mut wire);
    s.write_all(&wire).await?;
    // Record mark, xid, message type.
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    Ok(p.is_answered_by(&head[4..]))
}
