//! The DNS comparison: every case of the query set is asked twice (the second answer may come
//! from a cache) of nsauxd, unbound and dnsmasq; a field where unbound and dnsmasq agree and
//! nsauxd differs is a divergence.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use nsaux_tests::env::require;

use super::dns_setup::rig;
use super::judged::{Diff, check};
use super::wire::{self, Msg, query};

const IN: u16 = 1;
const CH: u16 = 3;
const RD: u16 = 0x0100;

/// One query of the set.
struct Case {
    id: &'static str,
    bytes: Vec<u8>,
    tcp: bool,
}

fn q(id: &'static str, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Case {
    flagged(id, RD, name, qtype, IN, edns)
}

fn flagged(
    id: &'static str,
    flags: u16,
    name: &str,
    qtype: u16,
    class: u16,
    edns: Option<(u16, bool)>,
) -> Case {
    Case {
        id,
        bytes: query(
            0x4242,
            flags,
            &[(name, qtype, class)],
            edns.map(|(p, d)| (p, d, 0)),
        ),
        tcp: false,
    }
}

/// The query set: shapes of the zones, EDNS sizes, DO/CD, TCP, odd opcodes, classes,
/// counts and flags.
fn cases() -> Vec<Case> {
    let e = Some((1232, false));
    let edo = Some((1232, true));
    let mut v = vec![
        q("a-plain", "www.conf.example", 1, None),
        q("a-edns", "www.conf.example", 1, e),
        q("a-do", "www.conf.example", 1, edo),
        flagged("a-cd", RD | 0x0010, "www.conf.example", 1, IN, edo),
        flagged("a-ad", RD | 0x0020, "www.conf.example", 1, IN, e),
        flagged("a-nord", 0, "www.conf.example", 1, IN, e),
        flagged("a-zbit", RD | 0x0040, "www.conf.example", 1, IN, e),
        flagged("a-tcflag", RD | 0x0200, "www.conf.example", 1, IN, e),
        q("a-case", "WwW.CoNf.ExAmPlE", 1, e),
        q("aaaa", "www.conf.example", 28, e),
        q("mx", "conf.example", 15, e),
        q("txt", "txt.conf.example", 16, e),
        q("srv", "_sip._udp.conf.example", 33, e),
        q("caa", "conf.example", 257, e),
        q("hinfo", "hinfo.conf.example", 13, e),
        q("ns", "conf.example", 2, e),
        q("soa", "conf.example", 6, e),
        q("ptr", "ptr.conf.example", 12, e),
        q("unknown-type", "www.conf.example", 65280, e),
        q("cname-chain", "c1.conf.example", 1, e),
        q("cname-dangling", "dangling.conf.example", 1, e),
        q("big-noedns", "big.conf.example", 16, None),
        q("big-edns512", "big.conf.example", 16, Some((512, false))),
        q("big-edns1232", "big.conf.example", 16, e),
        q("big-edns4096", "big.conf.example", 16, Some((4096, false))),
        q("wildcard", "x.wild.conf.example", 1, e),
        q("wildcard-nodata", "x.wild.conf.example", 28, e),
        q("delegation", "host.sub.conf.example", 1, e),
        q("ent", "ent.conf.example", 1, e),
        q("nodata", "www.conf.example", 15, e),
        q("nxdomain", "nope.conf.example", 1, e),
        q("nxdomain-noedns", "nope.conf.example", 1, None),
        q("signed-do", "www.signed.example", 1, edo),
        q("signed-nodo", "www.signed.example", 1, e),
        flagged("signed-cd", RD | 0x0010, "www.signed.example", 1, IN, edo),
        q("signed-dnskey", "signed.example", 48, edo),
        q("signed-nx", "nope.signed.example", 1, edo),
        q("any", "www.conf.example", 255, e),
        q("axfr-udp", "conf.example", 252, e),
        q("qtype-opt", "www.conf.example", 41, e),
        flagged("chaos-version", RD, "version.bind", 16, CH, e),
        flagged("chaos-hostname", RD, "hostname.bind", 16, CH, e),
        flagged("chaos-idserver", RD, "id.server", 16, CH, e),
        flagged("chaos-version-server", RD, "version.server", 16, CH, e),
        flagged("class-any", RD, "www.conf.example", 1, 255, e),
        flagged("class-none", RD, "www.conf.example", 1, 254, e),
        flagged("class-hs", RD, "www.conf.example", 1, 4, e),
    ];
    for (id, opcode) in [
        ("opcode-iquery", 1u16),
        ("opcode-status", 2),
        ("opcode-notify", 4),
        ("opcode-update", 5),
    ] {
        v.push(flagged(
            id,
            RD | (opcode << 11),
            "www.conf.example",
            1,
            IN,
            e,
        ));
    }
    v.push(flagged(
        "opcode-notify-noedns",
        RD | (4 << 11),
        "www.conf.example",
        1,
        IN,
        None,
    ));
    v.push(Case {
        id: "qdcount0",
        bytes: query(0x4242, RD, &[], None),
        tcp: false,
    });
    v.push(Case {
        id: "qdcount0-edns",
        bytes: query(0x4242, RD, &[], Some((1232, false, 0))),
        tcp: false,
    });
    v.push(Case {
        id: "qdcount2",
        bytes: query(
            0x4242,
            RD,
            &[("www.conf.example", 1, IN), ("txt.conf.example", 16, IN)],
            Some((1232, false, 0)),
        ),
        tcp: false,
    });
    v.push(Case {
        id: "edns-version1",
        bytes: query(
            0x4242,
            RD,
            &[("www.conf.example", 1, IN)],
            Some((1232, false, 1)),
        ),
        tcp: false,
    });
    let mut resp = q("qr-set", "www.conf.example", 1, e);
    resp.bytes[2] |= 0x80;
    v.push(resp);
    let mut tcp_big = q("big-tcp", "big.conf.example", 16, e);
    tcp_big.tcp = true;
    v.push(tcp_big);
    let mut tcp_any = q("any-tcp", "www.conf.example", 255, e);
    tcp_any.tcp = true;
    v.push(tcp_any);
    v
}

/// Sends one case and returns the raw answer (`None`: no answer in time).
fn ask(to: SocketAddr, case: &Case) -> Option<Vec<u8>> {
    let wait = Duration::from_millis(1500);
    if case.tcp {
        let mut s = TcpStream::connect_timeout(&to, wait).ok()?;
        s.set_read_timeout(Some(wait)).ok()?;
        let len = u16::try_from(case.bytes.len()).ok()?;
        let mut msg = len.to_be_bytes().to_vec();
        msg.extend_from_slice(&case.bytes);
        s.write_all(&msg).ok()?;
        let mut l = [0u8; 2];
        s.read_exact(&mut l).ok()?;
        let mut b = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut b).ok()?;
        return Some(b);
    }
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.send_to(&case.bytes, to).ok()?;
    let mut b = vec![0u8; 65_535];
    let (n, _) = s.recv_from(&mut b).ok()?;
    b.truncate(n);
    Some(b)
}

fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        16 => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

fn records(rs: &[wire::Rec]) -> String {
    let v: Vec<String> = rs
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.class, r.rtype, r.rdata))
        .collect();
    v.join(" | ")
}

/// The compared fields of one answer.
fn fields(answer: Option<&[u8]>) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    let Some(bytes) = answer else {
        f.insert("answered", "no".to_owned());
        return f;
    };
    f.insert("answered", "yes".to_owned());
    let Some(m): Option<Msg> = wire::parse(bytes) else {
        f.insert("parse", format!("unparseable, {} bytes", bytes.len()));
        return f;
    };
    let bit = |b: u16| u8::from(m.flags & b != 0).to_string();
    f.insert("rcode", rcode_name(m.rcode));
    f.insert("opcode", ((m.flags >> 11) & 0xF).to_string());
    for (name, b) in [
        ("aa", 0x0400),
        ("tc", 0x0200),
        ("rd", 0x0100),
        ("ra", 0x0080),
        ("z", 0x0040),
        ("ad", 0x0020),
        ("cd", 0x0010),
    ] {
        f.insert(name, bit(b));
    }
    f.insert("question", format!("{:?}", m.questions));
    f.insert("answer", records(&m.sections[0]));
    f.insert("authority", records(&m.sections[1]));
    f.insert("additional", records(&m.sections[2]));
    f.insert(
        "opt",
        m.opt.as_ref().map_or("none".to_owned(), |o| {
            format!("v{} do={}", o.version, o.dnssec_ok)
        }),
    );
    f
}

#[test]
fn dns_matches_unbound_and_dnsmasq_where_they_agree() -> anyhow::Result<()> {
    let name = "dns_matches_unbound_and_dnsmasq_where_they_agree";
    if !require(
        name,
        &[
            "named",
            "dnssec-keygen",
            "dnssec-signzone",
            "unbound",
            "dnsmasq",
            "dig",
        ],
    ) {
        return Ok(());
    }
    let started = Instant::now();
    let rig = rig()?;
    eprintln!("dns rig up in {:?}", started.elapsed());
    let cases = std::sync::Arc::new(cases());
    // Each forwarder is asked the whole set, twice per case, all three at once.
    let mut answers = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = rig
            .targets
            .iter()
            .map(|(who, ns, to)| {
                let cases = cases.clone();
                let to = *to;
                let who: &'static str = who;
                s.spawn(move || {
                    ns.run_in(move || {
                        cases
                            .iter()
                            .map(|c| {
                                let t = Instant::now();
                                let a = [ask(to, c), ask(to, c)];
                                if t.elapsed() > Duration::from_millis(1000) {
                                    eprintln!("{who} slow on {}: {:?}", c.id, t.elapsed());
                                }
                                a
                            })
                            .collect::<Vec<_>>()
                    })
                    .map(|a| (who, a))
                })
            })
            .collect();
        for h in handles {
            answers.push(h.join().map_err(|_| anyhow::anyhow!("asker panicked")));
        }
    });
    let mut by_target = BTreeMap::new();
    for a in answers {
        let (who, a) = a??;
        by_target.insert(who, a);
    }
    let get = |who: &str| {
        by_target
            .get(who)
            .ok_or_else(|| anyhow::anyhow!("no answers from {who}"))
    };
    let (ours, unbound, dnsmasq) = (get("nsauxd")?, get("unbound")?, get("dnsmasq")?);
    let mut diffs: BTreeMap<String, Diff> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        for pass in 0..2 {
            let o = fields(ours[i][pass].as_deref());
            let u = fields(unbound[i][pass].as_deref());
            let d = fields(dnsmasq[i][pass].as_deref());
            if std::env::var_os("NSAUX_CONFORMANCE_VERBOSE").is_some() {
                eprintln!(
                    "{}#{pass}\n  nsauxd  {o:?}\n  unbound {u:?}\n  dnsmasq {d:?}",
                    case.id
                );
            }
            for (field, stock) in &u {
                if d.get(field) != Some(stock) || o.get(field) == Some(stock) {
                    continue;
                }
                let id = format!("dns/{}/{field}", case.id);
                diffs.entry(id.clone()).or_insert_with(|| Diff {
                    id,
                    nsauxd: o.get(field).cloned().unwrap_or_else(|| "-".into()),
                    stock: stock.clone(),
                });
            }
        }
    }
    let diffs: Vec<Diff> = diffs.into_values().collect();
    eprintln!(
        "dns conformance: {} cases x 2 asks x 3 forwarders in {:?}",
        cases.len(),
        started.elapsed()
    );
    check("dns", &diffs)
}
