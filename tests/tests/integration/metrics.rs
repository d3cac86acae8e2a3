//! Metrics and operator logs (issue 12): the exposition read by `nsauxctl metrics` and scraped
//! over HTTP from `nsauxctl metrics --listen` run as an unprivileged user, every line checked
//! against the OpenMetrics text format; counters moved by real `dig`, `ntpdig` and `rpcinfo`
//! traffic, kept across reloads, per-namespace series appearing and leaving with their
//! namespace; the DNS query log and upstream down/up transitions in the daemon's log.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{answer_a, dig, status};
use nsaux_tests::env::{bin, require};
use nsaux_tests::netns::TestNetns;

/// Samples of one exposition: `name{labels}` (labels as printed) → value.
type Samples = BTreeMap<String, f64>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses `{k="v",...}` at the start of `s`; returns the rest after `}`.
fn parse_labels(s: &str) -> Result<&str, String> {
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok(r);
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some(_) => {}
                None => return Err("unterminated label value".into()),
            }
        };
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ,".into());
        }
    }
}

/// Checks every line of an OpenMetrics text exposition (HELP/TYPE/UNIT descriptors, samples
/// of the family last typed, label syntax, numeric values, `# EOF` last) and returns samples.
fn parse_exposition(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut family: Option<(String, String)> = None;
    let mut lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.pop(), Some(""), "must end with a newline");
    assert_eq!(lines.pop(), Some("# EOF"), "must end with # EOF");
    for line in lines {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name, arg) = (p.next(), p.next(), p.next());
            let name = name.unwrap_or_else(|| panic!("descriptor without a name: {line:?}"));
            assert!(valid_name(name), "bad metric name in {line:?}");
            assert!(name.starts_with("nsaux_"), "{line:?}: not nsaux_-prefixed");
            match kw {
                Some("HELP") => assert!(arg.is_some_and(|a| !a.is_empty()), "{line:?}"),
                Some("TYPE") => {
                    let t = arg.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "bad type in {line:?}"
                    );
                    family = Some((name.to_owned(), t.to_owned()));
                }
                Some("UNIT") => {}
                _ => panic!("unknown descriptor line {line:?}"),
            }
            continue;
        }
        let (fam, ty) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(valid_name(name), "bad sample name in {line:?}");
        let suffixes: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            suffixes.iter().any(|s| name == format!("{fam}{s}")),
            "{line:?} is not a sample of {fam} ({ty})"
        );
        let rest = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{e}: {line:?}"))
        } else {
            &line[name_end..]
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        if ty == "counter" {
            assert!(v >= 0.0, "negative counter: {line:?}");
        }
        let key = line[..line.len() - value.len() - 1].to_owned();
        assert!(
            samples.insert(key, v).is_none(),
            "duplicate sample {line:?}"
        );
    }
    samples
}

fn metrics(d: &Daemon) -> anyhow::Result<Samples> {
    let out = d.ctl(&["metrics"])?;
    anyhow::ensure!(
        out.status.success(),
        "nsauxctl metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_exposition(&String::from_utf8(out.stdout)?))
}

fn get(s: &Samples, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(-1.0)
}

/// A fake upstream on 127.0.0.1:53 inside a namespace: answers every A query; stops when
/// dropped (its port then refuses, which the resolver sees at once as a failure).
struct Upstream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(ns: &TestNetns) -> anyhow::Result<Self> {
        let sock = ns.run_in(|| UdpSocket::bind(("127.0.0.1", 53)))??;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf)
                    && let Some(reply) = answer_a(&buf[..n], [10, 12, 0, 1])
                {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A daemon with DNS upstreams from `ETC/NAME/resolv.conf` (`nameserver 127.0.0.1`).
fn start(etc: &Path, names: &[&str], observe: &str) -> anyhow::Result<Daemon> {
    for n in names {
        std::fs::create_dir_all(etc.join(n))?;
        std::fs::write(etc.join(n).join("resolv.conf"), "nameserver 127.0.0.1\n")?;
    }
    Daemon::start(&format!(
        "[rpcbind]\nenabled = true\n\n[ntp]\nlocal_stratum = 10\n\n[dns]\nnetns_etc_dir = \"{}\"\n\n[observe]\n{observe}",
        etc.display()
    ))
}

fn dig_ok(ns: &TestNetns, name: &str) -> anyhow::Result<String> {
    wait_for("dns answers", Duration::from_secs(5), || {
        dig(ns, &format!("@127.0.0.53 +tries=1 +time=1 {name} A"))
            .ok()
            .filter(|o| status(o).as_deref() == Some("NOERROR"))
    })
}

#[test]
fn counters_follow_traffic_reloads_and_namespaces() -> anyhow::Result<()> {
    if !require(
        "counters_follow_traffic_reloads_and_namespaces",
        &["dig", "ntpdig", "rpcinfo"],
    ) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let observe = "per_namespace = [\"tenant-*\"]\n";
    let d = start(etc.path(), &["tenant-a", "other"], observe)?;
    let a = d.netns("tenant-a")?;
    let _b = d.netns("other")?;
    let _up = Upstream::start(&a)?;
    dig_ok(&a, "www.example")?;
    dig_ok(&a, "www.example")?;
    let ntp = wait_for("ntp answers", Duration::from_secs(5), || {
        a.sh("ntpdig -t 1 127.0.0.1").ok()
    })?;
    assert!(ntp.status.success());
    a.sh("rpcinfo -p 127.0.0.1")?;

    let dns_req = "nsaux_requests_total{service=\"dns\"}";
    let s = wait_for("namespaces serving", Duration::from_secs(5), || {
        metrics(&d)
            .ok()
            .filter(|s| get(s, "nsaux_namespaces{source=\"dir\",state=\"serving\"}") == 2.0)
    })?;
    assert!(get(&s, dns_req) >= 2.0, "{s:#?}");
    assert!(get(&s, "nsaux_dns_cache_hits_total") >= 1.0, "{s:#?}");
    assert!(get(&s, "nsaux_dns_cache_misses_total") >= 1.0, "{s:#?}");
    assert!(get(&s, "nsaux_dns_upstream_latency_seconds_count") >= 1.0);
    assert!(get(&s, "nsaux_requests_total{service=\"ntp\"}") >= 1.0);
    assert!(get(&s, "nsaux_answers_total{service=\"ntp\"}") >= 1.0);
    let dump = "nsaux_rpcbind_calls_total{version=\"2\",procedure=\"dump\"}";
    assert!(get(&s, dump) >= 1.0, "{s:#?}");
    assert!(s.keys().any(|k| k.starts_with("nsaux_build_info{version=")));
    let per_ns = "nsaux_netns_requests_total{netns=\"tenant-a\",service=\"dns\"}";
    assert!(get(&s, per_ns) >= 2.0, "{s:#?}");
    assert!(
        !s.keys().any(|k| k.contains("netns=\"other\"")),
        "no series for a namespace that did not opt in"
    );

    // A reload (same settings, one more opted-in glob) keeps every counter.
    d.write_config(
        &std::fs::read_to_string(d.dir.path().join("nsaux.toml"))?
            .replace(observe, "per_namespace = [\"tenant-*\", \"nothing-*\"]\n"),
    )?;
    let out = d.ctl(&["reload"])?;
    assert!(out.status.success(), "{out:?}");
    let after = metrics(&d)?;
    for k in [dns_req, dump, per_ns, "nsaux_dns_cache_hits_total"] {
        assert!(get(&after, k) >= get(&s, k), "{k} went back after reload");
    }

    // The namespace leaves: its series go, daemon-wide counters stay.
    drop(_up);
    let mut a = a;
    a.delete()?;
    let gone = wait_for("per-namespace series gone", Duration::from_secs(5), || {
        metrics(&d)
            .ok()
            .filter(|s| !s.keys().any(|k| k.contains("netns=\"tenant-a\"")))
    })?;
    assert!(get(&gone, dns_req) >= get(&after, dns_req), "{gone:#?}");
    assert!(get(&gone, dump) >= get(&after, dump));
    Ok(())
}

#[test]
fn a_failed_nsauxctl_reload_is_logged_by_the_daemon() -> anyhow::Result<()> {
    if !nsaux_tests::env::require_root("a_failed_nsauxctl_reload_is_logged_by_the_daemon") {
        return Ok(());
    }
    let d = Daemon::start("")?;
    d.write_config("[observe]\ngroup = \"no-such-group-nsaux\"\n")?;
    let out = d.ctl(&["reload"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no group named"));
    wait_for("reload failure logged", Duration::from_secs(5), || {
        d.log()
            .lines()
            .any(|l| l.contains("nsauxctl reload failed") && l.contains("no group named"))
            .then_some(())
    })?;
    // `validate` says the same offline.
    let out = Command::new(bin("nsauxctl"))
        .args(["validate", "--config"])
        .arg(d.dir.path().join("nsaux.toml"))
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("observe.group"));
    Ok(())
}

/// Sends `GET /metrics` to 127.0.0.1:`port` inside `ns`; returns the status line, headers
/// and body.
fn http_get(ns: &TestNetns, port: u16) -> anyhow::Result<(String, String)> {
    ns.run_in(move || -> anyhow::Result<(String, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no header end in {resp:?}"))?;
        Ok((head.to_owned(), body.to_owned()))
    })?
}

/// `nsauxctl metrics --listen` run as nobody inside a namespace, killed when dropped.
pub(crate) struct Exporter(pub(crate) Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the exporter as user nobody in `ns`, listening on `listen`, reading the daemon's
/// observation socket `sock`: how an operator runs it (no root, no capabilities).
pub(crate) fn spawn_unprivileged_exporter(
    ns: &Path,
    listen: &str,
    sock: &Path,
) -> anyhow::Result<Exporter> {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(bin("nsauxctl"))
        .args(["metrics", "--listen", listen, "--socket"])
        .arg(sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Exporter(child))
}

/// A daemon whose observation socket user nobody may read (a world-traversable directory, the
/// socket 0660 in group nogroup), with `extra` lines added to `[observe]`: how an operator
/// gives an unprivileged exporter access. The directory lives as long as the returned guard.
pub(crate) fn daemon_readable_by_nobody(
    extra: &str,
) -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf, Daemon)> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let sock = dir.path().join("observe.sock");
    let d = Daemon::start(&format!(
        "[observe]\nsocket = \"{}\"\nmode = \"0660\"\ngroup = \"nogroup\"\n{extra}",
        sock.display()
    ))?;
    Ok((dir, sock, d))
}

#[test]
fn exporter_serves_metrics_over_http_as_an_unprivileged_user() -> anyhow::Result<()> {
    if !require(
        "exporter_serves_metrics_over_http_as_an_unprivileged_user",
        &["setpriv"],
    ) {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt as _;
    let (_dir, sock, d) = daemon_readable_by_nobody("")?;
    let meta = std::fs::metadata(&sock)?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
    let ns = d.netns("exp")?;

    // Without the group: refused.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65533", "--clear-groups"])
        .arg(bin("nsauxctl"))
        .arg("metrics")
        .arg("--socket")
        .arg(&sock)
        .output()?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );

    let port = 9755;
    let _exporter = spawn_unprivileged_exporter(&ns.path, &format!("127.0.0.1:{port}"), &sock)?;
    let (head, body) = wait_for("exporter answers", Duration::from_secs(5), || {
        http_get(&ns, port).ok()
    })?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    let s = parse_exposition(&body);
    assert_eq!(
        get(&s, "nsaux_namespaces{source=\"dir\",state=\"serving\"}")
            + get(&s, "nsaux_namespaces{source=\"dir\",state=\"partial\"}"),
        1.0,
        "{s:#?}"
    );
    assert!(s.contains_key("nsaux_requests_total{service=\"dns\"}"));
    Ok(())
}

#[test]
fn query_log_and_upstream_transitions() -> anyhow::Result<()> {
    if !require("query_log_and_upstream_transitions", &["dig"]) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let d = start(
        etc.path(),
        &["qlog-a", "quiet-b"],
        "query_log = [\"qlog-*\"]\n",
    )?;
    let a = d.netns("qlog-a")?;
    let b = d.netns("quiet-b")?;
    let up_a = Upstream::start(&a)?;
    let _up_b = Upstream::start(&b)?;
    dig_ok(&a, "logged.example")?;
    dig_ok(&b, "quiet.example")?;
    let line = wait_for("query logged", Duration::from_secs(5), || {
        d.log()
            .lines()
            .find(|l| l.contains("dns query") && l.contains("name=logged.example."))
            .map(str::to_owned)
    })?;
    for field in [
        "netns=qlog-a",
        "client=127.0.0.1:",
        "qtype=A",
        "rcode=NOERROR",
        "from=upstream",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        !d.log().contains("quiet.example"),
        "a namespace without query_log logs no queries"
    );

    // The upstream goes away: one WARN once it is down, one INFO when it answers again.
    drop(up_a);
    for i in 0..6 {
        let _ = dig(
            &a,
            &format!("@127.0.0.53 +tries=1 +time=1 miss{i}.example A"),
        );
        if d.log().contains("upstream down") {
            break;
        }
    }
    wait_for("upstream down logged", Duration::from_secs(5), || {
        d.log()
            .lines()
            .any(|l| {
                l.contains("WARN") && l.contains("upstream down") && l.contains("netns=qlog-a")
            })
            .then_some(())
    })?;
    let _up_a = Upstream::start(&a)?;
    wait_for("upstream up logged", Duration::from_secs(20), || {
        let _ = dig(&a, "@127.0.0.53 +tries=1 +time=1 back.example A");
        d.log()
            .lines()
            .any(|l| {
                l.contains("INFO") && l.contains("upstream up again") && l.contains("netns=qlog-a")
            })
            .then_some(())
    })?;
    let log = d.log();
    assert_eq!(log.matches("upstream down").count(), 1, "{log}");
    assert_eq!(log.matches("upstream up again").count(), 1, "{log}");
    Ok(())
}
