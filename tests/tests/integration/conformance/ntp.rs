//! The NTP comparison: nsauxd and chronyd (`local stratum 10`, `allow all`), each in its own
//! namespace, get the same packets — every version and mode, extension fields, MACs, short
//! and long packets, an interleaved request — and their answers are compared field by field
//! (clock-dependent fields such as timestamps, precision and root values are left out).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};

use super::judged::{Diff, check};

const LO: &str = "127.0.0.1:123";

/// NTP time now, 32.32 since 1900.
fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + 2_208_988_800) << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

fn header(version: u8, mode: u8, tx: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = (version << 3) | mode;
    p[2] = 6;
    p[40..48].copy_from_slice(&tx.to_be_bytes());
    p
}

/// The packet set: (case, bytes). Each carries its own transmit timestamp.
fn cases(base: u64) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut tx = base;
    let mut next = || {
        tx += 1 << 20;
        tx
    };
    for version in 0..8u8 {
        for mode in 0..8u8 {
            v.push((
                format!("v{version}-mode{mode}"),
                header(version, mode, next()),
            ));
        }
    }
    let with = |mut h: Vec<u8>, tail: &[u8]| {
        h.extend_from_slice(tail);
        h
    };
    // RFC 7822 §7.5: without a MAC the last field is at least 28 bytes, others at least 16.
    let ef = |len: u8| {
        let mut e = vec![0x12, 0x34, 0, len];
        e.resize(usize::from(len), 0);
        e
    };
    v.push(("v4-ext-unknown".into(), with(header(4, 3, next()), &ef(28))));
    v.push((
        "v4-ext-two".into(),
        with(header(4, 3, next()), &[ef(16), ef(28)].concat()),
    ));
    v.push(("v4-ext-last-16".into(), with(header(4, 3, next()), &ef(16))));
    v.push(("v3-ext-unknown".into(), with(header(3, 3, next()), &ef(28))));
    v.push((
        "v4-ext-badlen".into(),
        with(
            header(4, 3, next()),
            &[0x12, 0x34, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ));
    let mut md5 = vec![0, 0, 0, 7];
    md5.extend_from_slice(&[0xAB; 16]);
    v.push(("v3-mac-md5".into(), with(header(3, 3, next()), &md5)));
    v.push(("v4-mac-md5".into(), with(header(4, 3, next()), &md5)));
    let mut sha1 = vec![0, 0, 0, 8];
    sha1.extend_from_slice(&[0xCD; 20]);
    v.push(("v4-mac-sha1".into(), with(header(4, 3, next()), &sha1)));
    v.push((
        "v4-crypto-nak".into(),
        with(header(4, 3, next()), &[0, 0, 0, 0]),
    ));
    let h = header(4, 3, next());
    v.push(("short-47".into(), h[..47].to_vec()));
    v.push(("short-12".into(), h[..12].to_vec()));
    v.push(("long-1000".into(), with(header(4, 3, next()), &[0; 952])));
    v.push(("len-50".into(), with(header(4, 3, next()), &[0; 2])));
    v.push(("v1-mode0-long".into(), with(header(1, 0, next()), &[0; 16])));
    v
}

/// The compared fields of an answer to a request whose transmit timestamp was `tx`.
fn fields(answer: Option<&[u8]>, tx: u64) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    let Some(b) = answer else {
        f.insert("answered", "no".to_owned());
        return f;
    };
    f.insert("answered", "yes".to_owned());
    f.insert("len", b.len().to_string());
    if b.len() < 48 {
        return f;
    }
    let origin = u64::from_be_bytes(b[24..32].try_into().unwrap_or([0; 8]));
    f.insert("leap", (b[0] >> 6).to_string());
    f.insert("version", ((b[0] >> 3) & 7).to_string());
    f.insert("mode", (b[0] & 7).to_string());
    f.insert("stratum", b[1].to_string());
    f.insert("poll", i8::from_ne_bytes([b[2]]).to_string());
    f.insert(
        "origin",
        if origin == tx {
            "request transmit"
        } else {
            "other"
        }
        .to_owned(),
    );
    f
}

/// Sends every case from its own socket, then collects what came back.
fn play(to: SocketAddr, cases: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    let socks: Vec<UdpSocket> = cases
        .iter()
        .map(|(_, b)| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.send_to(b, to)?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(1000));
    Ok(socks
        .iter()
        .map(|s| {
            s.set_nonblocking(true).ok()?;
            let mut b = vec![0u8; 2048];
            let n = s.recv(&mut b).ok()?;
            b.truncate(n);
            Some(b)
        })
        .collect())
}

/// Requests from port 123 of a remote namespace (a peer's port: NTPv1 from it is not a
/// client's), each answered or not.
fn from_port_123(
    ns: &TestNetns,
    bind: SocketAddr,
    to: SocketAddr,
    tx: u64,
) -> anyhow::Result<Vec<Single>> {
    ns.run_in(move || -> anyhow::Result<_> {
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(Duration::from_millis(1000)))?;
        let mut out = Vec::new();
        for (i, (id, version, mode)) in [
            ("v1-mode0", 1u8, 0u8),
            ("v4-mode3", 4, 3),
            ("v3-mode3", 3, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let t = tx + (u64::try_from(i)? << 20);
            s.send_to(&header(version, mode, t), to)?;
            let mut b = vec![0u8; 2048];
            let got = s.recv(&mut b).ok().map(|n| b[..n].to_vec());
            out.push((format!("port123-{id}"), t, got));
        }
        Ok(out)
    })?
}

/// An interleaved exchange as a chrony client with `xleave` makes it: a first request whose
/// origin and receive fields are already set (an interleaved client never sends zeros there),
/// then one whose origin is the server's receive timestamp of the first answer and whose
/// receive field is the client's receive time of it. Returns the second answer.
fn interleaved(to: SocketAddr, tx: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_read_timeout(Some(Duration::from_millis(1000)))?;
    let mut first = header(4, 3, tx);
    first[24..32].copy_from_slice(&(tx - (1 << 30)).to_be_bytes());
    first[32..40].copy_from_slice(&(tx - (1 << 29)).to_be_bytes());
    s.send_to(&first, to)?;
    let mut b = vec![0u8; 2048];
    let Ok(n) = s.recv(&mut b) else {
        return Ok(None);
    };
    let first = b[..n].to_vec();
    let mut req = header(4, 3, tx + (1 << 24));
    req[24..32].copy_from_slice(first.get(32..40).unwrap_or(&[0; 8]));
    req[32..40].copy_from_slice(&ntp_now().to_be_bytes());
    s.send_to(&req, to)?;
    Ok(s.recv(&mut b).ok().map(|n| b[..n].to_vec()))
}

/// A real chrony client with `xleave` (`chronyd -Q`, four samples 0.25 s apart) asking the
/// server in `ns`: which modes its samples were taken in (`4B` basic, `4I` interleaved),
/// from its measurements log.
fn xleave_client(ns: &TestNetns, dir: &std::path::Path) -> anyhow::Result<Child> {
    Ok(ns
        .command("chronyd")
        .args(["-Q", "-x", "-u", "root", "-f", "/dev/null", "-t", "20"])
        .arg("server 127.0.0.1 xleave iburst maxsamples 4 minpoll -2 maxpoll -2")
        .args(["port 0", "cmdport 0", "log measurements"])
        .arg(format!("logdir {}", dir.display()))
        .arg(format!("pidfile {}/c.pid", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Whether any sample in a chrony measurements log (mode in its 18th column, `4B`/`4I`) was
/// interleaved: "interleaved", "basic", or "no samples".
fn sample_modes(log: &str) -> String {
    let modes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("127.0.0.1"))
        .filter_map(|l| l.split_whitespace().nth(17))
        .collect();
    if modes.is_empty() {
        "no samples".to_owned()
    } else if modes.iter().any(|m| m.ends_with('I')) {
        "interleaved".to_owned()
    } else {
        "basic".to_owned()
    }
}

/// One side's answer to a case: id, the request's transmit timestamp, the answer.
type Single = (String, u64, Option<Vec<u8>>);

/// One compared case: id, the request's transmit timestamp, nsauxd's and chronyd's answers.
type Row = (String, u64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Waits until the server in `ns` answers a v4 client request with stratum 10.
fn wait_stratum10(ns: &TestNetns, what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(10), || {
        let to: SocketAddr = LO.parse().ok()?;
        let r = ns
            .udp_query(to, &header(4, 3, ntp_now()), Duration::from_millis(200))
            .ok()
            .flatten()?;
        (r.0.get(1) == Some(&10)).then_some(())
    })
}

#[test]
fn ntp_matches_chronyd() -> anyhow::Result<()> {
    if !require("ntp_matches_chronyd", &["chronyd"]) {
        return Ok(());
    }
    let started = Instant::now();
    let d = Daemon::start(
        "[rpcbind]\nenabled = false\n\n[ntp]\nstratum = 10\nlocal_stratum = 10\n\n\
         [ntp.rate_limit]\nenabled = false\n",
    )?;
    let nsdir = tempfile::tempdir()?;
    let ours = d.netns("cfntp")?;
    let theirs = TestNetns::create(nsdir.path(), "cfchrony")?;
    let client = TestNetns::create(nsdir.path(), "cfntpclient")?;
    veth(
        &client,
        "cfn1",
        "10.133.1.1/24",
        &ours,
        "cfs",
        "10.133.1.2/24",
    )?;
    veth(
        &client,
        "cfn2",
        "10.133.2.1/24",
        &theirs,
        "cfs",
        "10.133.2.2/24",
    )?;
    let _chrony = nsaux_tests::chrony::Chronyd::start(&theirs)?;
    wait_stratum10(&ours, "nsauxd serves stratum 10")?;
    wait_stratum10(&theirs, "chronyd serves stratum 10")?;
    let base = ntp_now();
    let set = cases(base);
    let to: SocketAddr = LO.parse()?;
    let (s1, s2) = (set.clone(), set.clone());
    let a = ours.run_in(move || play(to, &s1))??;
    let b = theirs.run_in(move || play(to, &s2))??;
    let mut diffs_extra = Vec::new();
    let itx = base + (1 << 40);
    let ia = ours.run_in(move || interleaved(to, itx))??;
    let ib = theirs.run_in(move || interleaved(to, itx))??;
    let mut rows: Vec<Row> = set
        .iter()
        .zip(a.into_iter().zip(b))
        .map(|((id, bytes), (x, y))| {
            let tx = bytes
                .get(40..48)
                .and_then(|t| t.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            (id.clone(), tx, x, y)
        })
        .collect();
    rows.push(("v4-interleaved".into(), itx + (1 << 24), ia, ib));
    // A real xleave client against each, at once, each writing its log in its own directory.
    let logs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let clients = [&ours, &theirs]
        .iter()
        .zip(&logs)
        .map(|(ns, dir)| xleave_client(ns, dir.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for mut c in clients {
        c.wait()?;
    }
    let modes: Vec<String> = logs
        .iter()
        .map(|d| {
            sample_modes(
                &std::fs::read_to_string(d.path().join("measurements.log")).unwrap_or_default(),
            )
        })
        .collect();
    if modes[0] != modes[1] {
        diffs_extra.push(Diff {
            id: "ntp/xleave-client/modes".into(),
            nsauxd: modes[0].clone(),
            stock: modes[1].clone(),
        });
    }
    let ptx = base + (1 << 41);
    let pa = from_port_123(
        &client,
        "10.133.1.1:123".parse()?,
        "10.133.1.2:123".parse()?,
        ptx,
    )?;
    let pb = from_port_123(
        &client,
        "10.133.2.1:123".parse()?,
        "10.133.2.2:123".parse()?,
        ptx,
    )?;
    for ((id, tx, x), (_, _, y)) in pa.into_iter().zip(pb) {
        rows.push((id, tx, x, y));
    }
    let mut diffs = std::mem::take(&mut diffs_extra);
    for (id, tx, x, y) in &rows {
        let (o, s) = (fields(x.as_deref(), *tx), fields(y.as_deref(), *tx));
        if std::env::var_os("NSAUX_CONFORMANCE_VERBOSE").is_some() {
            eprintln!("{id}: nsauxd {o:?} chronyd {s:?}");
        }
        if o.get("answered") != s.get("answered") {
            diffs.push(Diff {
                id: format!("ntp/{id}/answered"),
                nsauxd: o.get("answered").cloned().unwrap_or_default(),
                stock: s.get("answered").cloned().unwrap_or_default(),
            });
            continue;
        }
        for (field, stock) in &s {
            if o.get(field) != Some(stock) {
                diffs.push(Diff {
                    id: format!("ntp/{id}/{field}"),
                    nsauxd: o.get(field).cloned().unwrap_or_else(|| "-".into()),
                    stock: stock.clone(),
                });
            }
        }
    }
    eprintln!(
        "ntp conformance: {} cases in {:?}",
        rows.len(),
        started.elapsed()
    );
    check("ntp", &diffs)
}
