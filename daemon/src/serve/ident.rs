//! The built-in `ident` service: answers with one line naming the namespace that answered.
//!
//! It proves the plumbing end to end (namespace entry, pktinfo, per-namespace teardown) and lets
//! an operator check which namespace an address reaches:
//! `nsaux ident netns=NAME id=COOKIE proto=udp local=ADDR peer=ADDR`.

use std::io::Write;
use std::net::SocketAddr;
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
        line(out.buf(), &self.ns, "udp", Some(d.local), &d.peer);
        out.commit(ReplyTo::sender(d));
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
