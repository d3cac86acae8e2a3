//! The query pump: client messages in (UDP and TCP), through the resolver, and every
//! answer out along the route its client left; transmits the resolver makes on the way are
//! handed to the upstream side.
//!
//! Why one place: an answer can be ready after a client query, an upstream reply, a timer,
//! a subnet refresh or a new spare socket; all of them end in [`DnsNs::pump`], so no answer
//! or transmit is ever left in the core.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use nsaux_resolver::{
    AnswerKind, ClientAnswer, ClientInfo, QueryOutcome, ServFailReason, Transport,
};
use tokio::sync::mpsc;

use super::sources::SUBNET_REFRESH_INTERVAL;
use super::{DnsNs, Inner};
use crate::serve::UdpEndpoint;

/// Queries held while the subnets are re-read (beyond this they get REFUSED at once).
const MAX_HELD: usize = 16;

/// Where a deferred answer goes.
#[derive(Debug)]
pub(super) enum Route {
    /// Back out of the UDP endpoint the query came in on, from the address it was sent to.
    Udp {
        /// The endpoint (socket) the query came in on.
        ep: Arc<UdpEndpoint>,
        /// The client.
        peer: SocketAddr,
        /// The address the client sent to: the answer must come from it.
        local: IpAddr,
        /// The interface it came in on.
        ifindex: u32,
        /// When the query came in.
        since: Instant,
    },
    /// Into the TCP connection's answer queue.
    Tcp {
        /// The connection's writer queue.
        tx: mpsc::Sender<Vec<u8>>,
        /// When the query came in.
        since: Instant,
    },
}

impl Route {
    /// When the query came in (routes older than any query can live are dropped).
    pub(super) fn since(&self) -> Instant {
        match self {
            Self::Udp { since, .. } | Self::Tcp { since, .. } => *since,
        }
    }
}

/// What to do with a client message after `DnsNs::query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send `out` now.
    Reply,
    /// The answer comes later through the route.
    Deferred,
    /// Send nothing (malformed, rate-limited, overloaded).
    Drop,
}

/// A query held while the allow list is refreshed (its client was refused).
#[derive(Debug)]
pub(super) struct Held {
    /// The client's message.
    pub(super) query: Vec<u8>,
    /// Who sent it, with its token.
    pub(super) client: ClientInfo,
    /// Where its answer goes.
    pub(super) route: Route,
}

impl DnsNs {
    /// Handles one client message received at `now`. `route` is only called when the answer
    /// is deferred.
    pub(super) fn query(
        &self,
        addr: SocketAddr,
        transport: Transport,
        query: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
        route: impl FnOnce(Instant) -> Route,
    ) -> Verdict {
        let mut g = self.lock();
        // Edits of resolv.conf, the upstream list or hosts count from the next query on.
        self.check_sources(&mut g, now);
        g.next_client = g.next_client.wrapping_add(1);
        let client = ClientInfo {
            addr,
            transport,
            token: g.next_client,
        };
        let outcome = self.ask(&mut g, now, client, query, out);
        self.after_query(&mut g, client, out, outcome);
        match outcome {
            QueryOutcome::Answered(AnswerKind::Refused) => {
                let cfg = self.cfg();
                if cfg.allow_own_subnets
                    && (g.refreshing || now >= g.next_subnet_refresh)
                    && g.held.len() < MAX_HELD
                {
                    // Maybe the namespace gained an address since we looked: hold the query,
                    // re-read the subnets and then answer it.
                    g.held.push(Held {
                        query: query.to_vec(),
                        client,
                        route: route(now),
                    });
                    g.next_subnet_refresh = now + SUBNET_REFRESH_INTERVAL;
                    drop(g);
                    self.refresh_subnets();
                    out.clear();
                    return Verdict::Deferred;
                }
                Verdict::Reply
            }
            QueryOutcome::Pending(_) => {
                g.routes.insert(client.token, route(now));
                self.pump(&mut g, now);
                Verdict::Deferred
            }
            QueryOutcome::Answered(_) => Verdict::Reply,
            QueryOutcome::Dropped(_) => Verdict::Drop,
        }
    }

    /// Hands one query to the resolver (the files were checked for this batch already);
    /// says once that there are no upstreams.
    fn ask(
        &self,
        g: &mut Inner,
        now: Instant,
        client: ClientInfo,
        query: &[u8],
        out: &mut Vec<u8>,
    ) -> QueryOutcome {
        let outcome = g.resolver.handle_query(now, client, query, out);
        if outcome != QueryOutcome::Answered(AnswerKind::ServFail(ServFailReason::NoUpstreams)) {
            return outcome;
        }
        if !g.warned_no_upstreams {
            g.warned_no_upstreams = true;
            tracing::warn!(netns = %self.ns.name, source = %g.upstream_source(),
                "dns: no upstream servers for this namespace; answering SERVFAIL");
        }
        outcome
    }

    /// Delivers ready answers and sends (or queues) ready transmits; wakes the driver when
    /// something was sent (new deadlines, TCP jobs, spares wanted).
    pub(super) fn pump(&self, g: &mut Inner, now: Instant) {
        let mut sent = false;
        loop {
            let mut progressed = false;
            while let Some(a) = g.resolver.poll_answer() {
                progressed = true;
                self.deliver(g, a);
            }
            while let Some(t) = g.resolver.poll_transmit(now) {
                progressed = true;
                sent = true;
                match t.transport {
                    Transport::Tcp => g.tcp_jobs.push(t),
                    Transport::Udp => self.send_udp(g, t, now),
                }
            }
            if !progressed {
                break;
            }
        }
        if sent && g.driver_needed() {
            self.kick(g);
        }
        self.sync_metrics(g);
    }

    /// Sends one deferred answer along the route its client left (gone routes: dropped).
    fn deliver(&self, g: &mut Inner, a: ClientAnswer) {
        let Some(route) = g.routes.remove(&a.client.token) else {
            return;
        };
        self.on_deferred_answer(&a, route.since());
        match route {
            Route::Udp {
                ep,
                peer,
                local,
                ifindex,
                ..
            } => {
                if let Err(e) = ep.send_from(&a.payload, peer, local, ifindex) {
                    tracing::debug!(netns = %self.ns.name, %peer, error = %e, "dns: answer send failed");
                }
            }
            Route::Tcp { tx, .. } => {
                let _ = tx.try_send(a.payload);
            }
        }
    }

    /// Answers the queries held while the subnets were re-read (the allow list is current
    /// now), then pumps what they started.
    pub(super) fn answer_held(&self, g: &mut Inner, now: Instant) {
        let mut out = Vec::new();
        for h in std::mem::take(&mut g.held) {
            match g.resolver.handle_query(now, h.client, &h.query, &mut out) {
                QueryOutcome::Answered(_) => {
                    let a = ClientAnswer {
                        client: h.client,
                        payload: std::mem::take(&mut out),
                        kind: AnswerKind::Refused,
                        token: nsaux_resolver::QueryToken(0),
                    };
                    g.routes.insert(h.client.token, h.route);
                    self.deliver(g, a);
                }
                QueryOutcome::Pending(_) => {
                    g.routes.insert(h.client.token, h.route);
                }
                QueryOutcome::Dropped(_) => {}
            }
        }
        self.pump(g, now);
        if !g.routes.is_empty() {
            self.kick(g);
        }
    }
}
