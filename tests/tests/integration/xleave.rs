//! NTP interleaved mode (issue 13 item 3): real chrony clients with `server ... xleave`
//! against nsauxd behind a veth, with stock chronyd as the reference server, and the table of
//! earlier exchanges under a replayed and a flooding client.
//!
//! Each client is `chronyd -Q` (measure only, no command socket, files in a temporary
//! directory) logging its samples; a sample's mode (`4B` basic, `4I` interleaved) is column 18
//! of chrony's measurements log, its offset and peer delay columns 12 and 13.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};
use serde_json::Value;

/// NTP time now, 32.32 since 1900.
fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + 2_208_988_800) << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// A v4 client request with the given origin, receive and transmit fields.
fn request(origin: u64, receive: u64, transmit: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p[24..32].copy_from_slice(&origin.to_be_bytes());
    p[32..40].copy_from_slice(&receive.to_be_bytes());
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    p
}

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// `nsauxctl ntp stats` of one namespace.
fn ntp_stats(d: &Daemon, ns: &str) -> anyhow::Result<Value> {
    Ok(d.ctl_json(&["ntp", "stats", "--ns", ns])?[ns].clone())
}

/// How long each chrony client measures, and its poll interval (log2 s): about 100 samples.
const MEASURE: Duration = Duration::from_secs(7);
const POLL: i32 = -4;

/// A chrony client measuring `server` from `ns` (`chronyd -x`: it never touches the clock,
/// opens no command socket), logging its samples into `dir`; stopped by [`Chronyd`]'s drop.
fn client(ns: &TestNetns, server: &str, xleave: bool, dir: &Path) -> anyhow::Result<Chronyd> {
    let p = dir.display();
    let opts = if xleave { " xleave" } else { "" };
    let child = ns
        .command("chronyd")
        .args(["-d", "-x", "-u", "root", "-f", "/dev/null"])
        .arg(format!(
            "server {server}{opts} iburst minpoll {POLL} maxpoll {POLL}"
        ))
        .args([
            "port 0",
            "cmdport 0",
            "bindcmdaddress /",
            "log measurements",
        ])
        .arg(format!("logdir {p}"))
        .arg(format!("pidfile {p}/c.pid"))
        .arg(format!("driftfile {p}/drift"))
        .arg(format!("dumpdir {p}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Chronyd(child, None))
}

/// One sample of a measurements log: mode (`4B`/`4I`), offset and peer delay in seconds.
type Sample = (String, f64, f64);

fn samples(dir: &Path, server: &str) -> Vec<Sample> {
    std::fs::read_to_string(dir.join("measurements.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(server))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                (*f.get(17)?).to_owned(),
                f.get(11)?.parse().ok()?,
                f.get(12)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Median of |offset| and of delay, in microseconds, over `samples` of `mode` (or all).
fn medians(samples: &[Sample], mode: Option<&str>) -> (f64, f64, usize) {
    let pick: Vec<&Sample> = samples
        .iter()
        .filter(|s| mode.is_none_or(|m| s.0 == m))
        .collect();
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN) * 1e6
    };
    (
        med(pick.iter().map(|s| s.1.abs()).collect()),
        med(pick.iter().map(|s| s.2).collect()),
        pick.len(),
    )
}

/// Stock chronyd serving `local stratum 10` in `ns`, stopped by pid when dropped.
struct Chronyd(Child, #[allow(dead_code)] Option<tempfile::TempDir>);

impl Drop for Chronyd {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Waits until the server at `to` answers a request from `ns` with stratum `stratum`.
fn wait_stratum(ns: &TestNetns, to: SocketAddr, stratum: u8) -> anyhow::Result<()> {
    wait_for("ntp server answers", Duration::from_secs(10), || {
        let r = ns
            .udp_query(to, &request(0, 0, ntp_now()), Duration::from_millis(200))
            .ok()
            .flatten()?;
        (r.0.get(1) == Some(&stratum)).then_some(())
    })
}

/// Real chrony clients: with `xleave` against nsauxd they get interleaved samples carrying
/// the kernel's transmit stamps; against a namespace with `interleaved = false` only basic
/// ones; stock chronyd is measured alongside as the reference, and every figure is printed
/// (the README's table comes from this output).
#[test]
fn chrony_xleave_client_gets_interleaved_replies() -> anyhow::Result<()> {
    if !require(
        "chrony_xleave_client_gets_interleaved_replies",
        &["chronyd"],
    ) {
        return Ok(());
    }
    let started = Instant::now();
    // NSAUX_XLEAVE_BINARY=path/to/nsauxd measures another build (the README's figures come
    // from a release build; the test's own is a debug build, slower between its transmit
    // clock read and the send, which basic mode measures and interleaved mode does not).
    let binary = std::env::var_os("NSAUX_XLEAVE_BINARY").map(std::path::PathBuf::from);
    let d = Daemon::start_binary(
        binary.as_deref(),
        "[rpcbind]\nenabled = false\n\n[ntp]\nstratum = 5\nlocal_stratum = 5\n\n\
         [ntp.rate_limit]\nenabled = false\n\n\
         [[netns]]\nmatch = \"xl-off\"\nntp = { interleaved = false }\n",
    )?;
    let on = d.netns("xl-on")?;
    let off = d.netns("xl-off")?;
    let nsdir = tempfile::tempdir()?;
    let stock = TestNetns::create(nsdir.path(), "xl-chrony")?;
    let cl = TestNetns::create(nsdir.path(), "xl-client")?;
    veth(&cl, "xlc1", "10.134.1.1/24", &on, "xls", "10.134.1.2/24")?;
    veth(&cl, "xlc2", "10.134.2.1/24", &off, "xls", "10.134.2.2/24")?;
    veth(&cl, "xlc3", "10.134.3.1/24", &stock, "xls", "10.134.3.2/24")?;
    stock.sh("ip link set lo up")?;
    let _chronyd = nsaux_tests::chrony::Chronyd::start(&stock)?;
    wait_stratum(&cl, "10.134.1.2:123".parse()?, 5)?;
    wait_stratum(&cl, "10.134.2.2:123".parse()?, 5)?;
    wait_stratum(&cl, "10.134.3.2:123".parse()?, 10)?;
    eprintln!("xleave: servers up in {:?}", started.elapsed());
    let runs = [
        ("nsauxd", "10.134.1.2", true),
        ("nsauxd", "10.134.1.2", false),
        ("nsauxd interleaved=false", "10.134.2.2", true),
        ("chronyd", "10.134.3.2", true),
        ("chronyd", "10.134.3.2", false),
    ];
    let dirs = runs
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<Result<Vec<_>, _>>()?;
    let clients = runs
        .iter()
        .zip(&dirs)
        .map(|((_, server, xleave), dir)| client(&cl, server, *xleave, dir.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    std::thread::sleep(MEASURE);
    drop(clients);
    let mut got = Vec::new();
    for ((name, server, xleave), dir) in runs.iter().zip(&dirs) {
        let s = samples(dir.path(), server);
        let interleaved = s.iter().filter(|x| x.0 == "4I").count();
        let (off_all, delay_all, n) = medians(&s, None);
        let (off_i, delay_i, ni) = medians(&s, Some("4I"));
        eprintln!(
            "xleave: server {name:<24} client xleave={xleave:<5} samples {n} (interleaved {ni}): \
             median |offset| {off_all:.1} us, delay {delay_all:.1} us; \
             interleaved only: |offset| {off_i:.1} us, delay {delay_i:.1} us"
        );
        got.push((s.len(), interleaved));
    }
    // nsauxd with xleave: interleaved samples, carrying kernel stamps matched to replies.
    assert!(got[0].0 >= 10, "too few samples against nsauxd: {got:?}");
    assert!(
        got[0].1 * 2 >= got[0].0,
        "most samples against nsauxd should be interleaved: {got:?}"
    );
    let st = ntp_stats(&d, "xl-on")?;
    assert!(st["answered_interleaved"].as_u64() >= Some(1), "{st}");
    assert!(st["interleave_kernel_stamps"].as_u64() >= Some(1), "{st}");
    // Without xleave, or with interleaved = false: basic only.
    assert!(got[1].0 >= 10 && got[1].1 == 0, "{got:?}");
    assert!(got[2].0 >= 10 && got[2].1 == 0, "{got:?}");
    let st = ntp_stats(&d, "xl-off")?;
    assert_eq!(st["answered_interleaved"].as_u64(), Some(0), "{st}");
    // The reference: stock chronyd answers the same client interleaved too.
    assert!(got[3].1 >= 1, "chronyd reference not interleaved: {got:?}");
    eprintln!("xleave: chrony clients in {:?}", started.elapsed());
    Ok(())
}

/// A replayed earlier exchange gets one interleaved reply at most, a guessed one none, and a
/// client flooding requests that ask for interleaved mode cannot grow the table past its
/// bound (`rate_limit.max_clients`, here 64).
#[test]
fn earlier_exchanges_answer_once_and_the_table_stays_bounded() -> anyhow::Result<()> {
    if !nsaux_tests::env::require_root("earlier_exchanges_answer_once_and_the_table_stays_bounded")
    {
        return Ok(());
    }
    let d = Daemon::start(
        "[rpcbind]\nenabled = false\n\n[ntp]\nstratum = 5\nlocal_stratum = 5\n\n\
         [ntp.rate_limit]\nenabled = false\nmax_clients = 64\n",
    )?;
    let srv = d.netns("xl-tab")?;
    let nsdir = tempfile::tempdir()?;
    let cl = TestNetns::create(nsdir.path(), "xl-tab-client")?;
    veth(&cl, "xlt1", "10.134.9.1/24", &srv, "xlt", "10.134.9.2/24")?;
    let to: SocketAddr = "10.134.9.2:123".parse()?;
    wait_stratum(&cl, to, 5)?;
    let out = cl.run_in(move || -> anyhow::Result<(Vec<u64>, usize)> {
        let s = std::net::UdpSocket::bind("10.134.9.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut b = [0u8; 128];
        let mut ask = |origin: u64, receive: u64| -> anyhow::Result<Vec<u8>> {
            let tx = ntp_now() & !1;
            s.send_to(&request(origin, receive, tx), to)?;
            let n = s.recv(&mut b)?;
            Ok(b[..n].to_vec())
        };
        // Interleaved client: the first reply is basic and not saved (origin 0), the second
        // saved, the third interleaved (origin = the request's receive field).
        let r1 = ask(0, 0)?;
        let r2 = ask(be64(&r1, 32), 11)?;
        std::thread::sleep(Duration::from_millis(50));
        let r3 = ask(be64(&r2, 32), 22)?;
        let replay = ask(be64(&r2, 32), 33)?;
        let guessed = ask(be64(&r2, 32) + 2, 44)?;
        let origins = [&r1, &r2, &r3, &replay, &guessed]
            .iter()
            .map(|r| be64(r, 24))
            .collect();
        // A flood of requests that all ask (odd origins), each saving an exchange.
        let mut answered = 0;
        for i in 0..600u64 {
            s.send_to(&request((i << 8) | 1, 5, ntp_now() & !1), to)?;
            if i % 16 == 15 {
                while s.recv(&mut b).is_ok() {
                    answered += 1;
                    s.set_read_timeout(Some(Duration::from_millis(50)))?;
                }
            }
        }
        Ok((origins, answered))
    })??;
    let (origins, answered) = out;
    assert_eq!(origins[2], 22, "third reply interleaved: {origins:?}");
    assert_ne!(
        origins[3], 33,
        "a replayed exchange is answered in basic mode: {origins:?}"
    );
    assert_ne!(
        origins[4], 44,
        "a guessed exchange is answered in basic mode: {origins:?}"
    );
    assert!(answered > 500, "flood mostly answered: {answered}");
    let st = ntp_stats(&d, "xl-tab")?;
    assert_eq!(st["answered_interleaved"].as_u64(), Some(1), "{st}");
    let held = st["interleave_exchanges_held"].as_u64().unwrap_or(u64::MAX);
    assert!(held <= 64, "table past its bound: {st}");
    Ok(())
}
