//! The built-in `ident` service: answers with one line naming the namespace that answered.
//!
//! It proves the plumbing end to end (namespace entry, pktinfo, per-namespace teardown) and lets
//! an operator check which namespace an address reaches:
//! `nsaux ident netns=NAME id=COOKIE proto=udp local=ADDR peer=ADDR`.
//!
//! Over UDP it is careful not to be a reflector: see [`may_answer_from`] and
//! [`within_reply_bound`].

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{
    ConnFuture, Connection, Datagram, ListenerSpec, NsInfo, NsService, Peer, Replies, ReplyTo,
    ServiceKind, Stream, UdpEndpoint,
};
use crate::config::{IdentConfig, ServicesConfig};

/// The ident service kind.
#[derive(Debug, Default)]
pub(crate) struct Ident;

/// Ident in one namespace.
#[derive(Debug)]
struct IdentNs {
    ns: Arc<NsInfo>,
    cfg: RwLock<IdentConfig>,
}

impl ServiceKind for Ident {
    fn name(&self) -> &'static str {
        "ident"
    }

    fn enabled(&self, cfg: &ServicesConfig) -> bool {
        cfg.ident.enabled
    }

    fn instantiate(
        &self,
        ns: Arc<NsInfo>,
        cfg: &ServicesConfig,
    ) -> anyhow::Result<Arc<dyn NsService>> {
        Ok(Arc::new(IdentNs {
            ns,
            cfg: RwLock::new(cfg.ident.clone()),
        }))
    }
}

fn line(
    out: &mut Vec<u8>,
    ns: &NsInfo,
    proto: &str,
    local: Option<SocketAddr>,
    peer: &dyn std::fmt::Display,
) {
    let local = local.map_or_else(|| "-".to_owned(), |l| l.to_string());
    let _ = writeln!(
        out,
        "nsaux ident netns={} id={} proto={proto} local={local} peer={peer}",
        ns.name, ns.id
    );
}

/// Text that marks a datagram as an answer of some ident responder (ours, or an RFC 1413
/// `USERID`/`ERROR` reply), compared case-insensitively.
const ANSWER_MARKS: [&[u8]; 4] = [b"nsaux ident", b"netns=", b": userid", b": error"];

/// Whether a UDP datagram may be answered at all. Why: UDP sources are forged at will, so an
/// answer must never start a loop. A datagram from a privileged port (echo 7, daytime 13,
/// qotd 17, chargen 19, time 37 and the other well-known services that answer anything), from
/// our own port (another ident responder), or whose payload already reads like an ident answer
/// (a reflector or another responder sending our line back) is left unanswered; otherwise two
/// responders pointed at each other would bounce datagrams forever.
pub(crate) fn may_answer_from(peer: SocketAddr, own_port: u16, payload: &[u8]) -> bool {
    if peer.port() < 1024 || peer.port() == own_port {
        return false;
    }
    !ANSWER_MARKS.iter().any(|mark| {
        payload
            .windows(mark.len())
            .any(|w| w.eq_ignore_ascii_case(mark))
    })
}

/// Whether an answer of `reply_len` bytes may go to `peer`, who sent `request_len` bytes. Why:
/// an answer to a host outside this one is at most twice its request, so the responder is no
/// amplifier; remote callers pad their query (any 100 bytes or so) to get the line back.
/// Loopback callers are in this namespace already and always get it.
pub(crate) fn within_reply_bound(peer: SocketAddr, request_len: usize, reply_len: usize) -> bool {
    let loopback = match peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    };
    loopback || reply_len <= request_len.saturating_mul(2)
}

impl NsService for IdentNs {
    fn listeners(&self) -> Vec<ListenerSpec> {
        let cfg = crate::lock::read(&self.cfg).clone();
        ListenerSpec::ip_pairs(&cfg.addresses, cfg.port, cfg.udp, cfg.tcp)
    }

    fn reconfigure(&self, cfg: &ServicesConfig) -> anyhow::Result<()> {
        *crate::lock::write(&self.cfg) = cfg.ident.clone();
        Ok(())
    }

    fn on_datagram(&self, _ep: &Arc<UdpEndpoint>, d: &Datagram<'_>, out: &mut Replies) {
        if !may_answer_from(d.peer, d.local.port(), d.data) {
            return;
        }
        let buf = out.buf();
        line(buf, &self.ns, "udp", Some(d.local), &d.peer);
        let reply_len = buf.len();
        if within_reply_bound(d.peer, d.data.len(), reply_len) {
            out.commit(ReplyTo::sender(d));
        }
    }

    fn on_connection(self: Arc<Self>, conn: Connection) -> ConnFuture {
        Box::pin(async move {
            let mut out = Vec::new();
            let peer = match conn.peer {
                Peer::Ip(a) => a.to_string(),
                Peer::Local { uid, .. } => format!("uid:{uid}"),
            };
            line(&mut out, &self.ns, "tcp", conn.local, &peer);
            let write = async {
                match conn.stream {
                    Stream::Tcp(mut s) => s.write_all(&out).await,
                    Stream::Unix(mut s) => s.write_all(&out).await,
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn never_answers_reflectors_or_other_responders() {
        for port in [0, 7, 13, 17, 19, 37, 113, 1023] {
            assert!(!may_answer_from(
                sa(&format!("10.0.0.9:{port}")),
                7867,
                b"?"
            ));
        }
        assert!(!may_answer_from(sa("10.0.0.9:7867"), 7867, b"?"));
        assert!(!may_answer_from(sa("127.0.0.1:7999"), 7999, b"?"));
        for answer in [
            &b"nsaux ident netns=a id=1 proto=udp local=x peer=y\n"[..],
            b"xx NSAUX IDENT yy",
            b"6191, 23 : USERID : UNIX : stjohns",
            b"6195, 23 : ERROR : NO-USER",
            b"id=1 netns=b",
        ] {
            assert!(!may_answer_from(sa("10.0.0.9:40000"), 7867, answer));
        }
        assert!(may_answer_from(sa("10.0.0.9:40000"), 7867, b"?"));
        assert!(may_answer_from(sa("[fd00::9]:1024"), 7867, &[b'?'; 200]));
    }

    #[test]
    fn remote_answers_are_at_most_twice_the_query() {
        assert!(!within_reply_bound(sa("10.0.0.9:40000"), 1, 100));
        assert!(within_reply_bound(sa("10.0.0.9:40000"), 50, 100));
        assert!(!within_reply_bound(sa("[fd00::9]:40000"), 49, 100));
        assert!(within_reply_bound(sa("127.0.0.1:40000"), 1, 100));
        assert!(within_reply_bound(sa("127.9.9.9:40000"), 1, 100));
        assert!(within_reply_bound(sa("[::1]:40000"), 1, 100));
        assert!(within_reply_bound(sa("[::ffff:127.0.0.1]:40000"), 1, 100));
    }
}
