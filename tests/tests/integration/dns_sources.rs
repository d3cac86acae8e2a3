//! Where a namespace's DNS data comes from (issues 11 and 14): nsaux's own upstream list
//! beside a resolv.conf that names nsaux, the host namespace's upstreams from the host's
//! resolver configuration (systemd-resolved's list behind its stub), edits counted from the
//! next query, and a 100,000-line hosts file rewritten in one namespace while another keeps
//! answering. Every daemon points `netns_etc_dir` and the host files at private directories:
//! nothing here touches the host's /etc/netns or /etc/resolv.conf.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use nsaux_tests::daemon::{Daemon, wait_for};
use nsaux_tests::dns::{Server, dig, section, status};
use nsaux_tests::env::require;
use nsaux_tests::netns::{TestNetns, veth};

/// Where every upstream server listens, inside its own namespace.
const UP_ADDR: &str = "192.0.2.53";

/// unbound's zone: `www.test` A `ip`.
fn zone(ip: &str) -> String {
    format!(
        "  local-zone: \".\" refuse\n  local-zone: \"test.\" static\n  \
         local-data: \"test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 30\"\n  \
         local-data: \"www.test. 300 IN A {ip}\"\n"
    )
}

/// DNS only, files under `etc`.
fn config(etc: &Path, extra: &str) -> String {
    format!(
        "[ntp]\nenabled = false\n\n[rpcbind]\nenabled = false\n\n[dns]\nnetns_etc_dir = \"{}\"\n{extra}",
        etc.display()
    )
}

/// Links `vs` to a new upstream namespace (10.54.IDX.0/24) with a route to [`UP_ADDR`].
fn link_upstream(vs: &TestNetns, updir: &Path, idx: u8) -> anyhow::Result<TestNetns> {
    let up = TestNetns::create(updir, &format!("up{idx}"))?;
    veth(
        vs,
        &format!("tou{idx}"),
        &format!("10.54.{idx}.1/24"),
        &up,
        "tovs0",
        &format!("10.54.{idx}.2/24"),
    )?;
    up.sh(&format!("ip addr add {UP_ADDR}/32 dev lo"))?;
    vs.sh(&format!("ip route add {UP_ADDR}/32 via 10.54.{idx}.2"))?;
    Ok(up)
}

/// Writes `ETC/NS/FILE`.
fn put(etc: &Path, ns: &str, file: &str, text: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(etc.join(ns))?;
    std::fs::write(etc.join(ns).join(file), text)?;
    Ok(())
}

/// The first answer of `dig @127.0.0.53 ARGS` in `vs` once the endpoint answers at all.
fn first_answer(vs: &TestNetns, args: &str) -> anyhow::Result<(Option<String>, String)> {
    let out = wait_for("dns endpoint answers", Duration::from_secs(5), || {
        dig(vs, &format!("@127.0.0.53 {args}"))
            .ok()
            .filter(|o| status(o).is_some())
    })?;
    Ok((section(&out, "ANSWER").first().map(|a| a.3.clone()), out))
}

#[test]
fn resolv_conf_naming_only_nsaux_warns_and_the_upstreams_file_fixes_it() -> anyhow::Result<()> {
    let test = "resolv_conf_naming_only_nsaux_warns_and_the_upstreams_file_fixes_it";
    if !require(test, &["dig", "unbound"]) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    // What a user writes first: the namespace's programs ask nsaux.
    put(
        etc.path(),
        "vsself",
        "resolv.conf",
        "nameserver 127.0.0.53\n",
    )?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let vs = d.netns("vsself")?;
    let up = link_upstream(&vs, updir.path(), 1)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("10.7.7.1"))?;
    let (_, out) = first_answer(&vs, "www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("SERVFAIL"), "{out}");
    let line = wait_for("WARN naming the namespace", Duration::from_secs(2), || {
        d.log()
            .lines()
            .find(|l| l.contains("names only nsaux itself") && l.contains("vsself"))
            .map(str::to_owned)
    })?;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("nsaux-upstreams"), "says what to do: {line}");
    // The documented fix; the very next query uses it (no reload, no restart).
    put(
        etc.path(),
        "vsself",
        "nsaux-upstreams",
        &format!("{UP_ADDR}\n"),
    )?;
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    assert_eq!(section(&out, "ANSWER")[0].3, "10.7.7.1", "{out}");
    let stats = d.ctl_json(&["dns", "stats", "--ns", "vsself"])?;
    assert!(
        stats["vsself"]["upstream_source"]
            .as_str()
            .is_some_and(|s| s.ends_with("vsself/nsaux-upstreams")),
        "{stats}"
    );
    Ok(())
}

#[test]
fn hosts_edits_count_from_the_next_query_even_over_cached_answers() -> anyhow::Result<()> {
    let test = "hosts_edits_count_from_the_next_query_even_over_cached_answers";
    if !require(test, &["dig", "unbound"]) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    let updir = tempfile::tempdir()?;
    put(etc.path(), "vsedit", "hosts", "10.1.1.1 edit.lan\n")?;
    put(
        etc.path(),
        "vsedit",
        "resolv.conf",
        &format!("nameserver {UP_ADDR}\n"),
    )?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let vs = d.netns("vsedit")?;
    let up = link_upstream(&vs, updir.path(), 2)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("10.7.7.2"))?;
    let (a, out) = first_answer(&vs, "edit.lan A")?;
    assert_eq!(a.as_deref(), Some("10.1.1.1"), "{out}");
    // The upstream's answer is cached (TTL 300)...
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.7.7.2", "{out}");
    // ...and the hosts file now says otherwise, for both names: the next query sees it.
    put(
        etc.path(),
        "vsedit",
        "hosts",
        "10.1.1.2 edit.lan\n10.9.9.9 www.test\n",
    )?;
    let out = dig(&vs, "@127.0.0.53 edit.lan A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.1.1.2", "{out}");
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.9.9.9", "{out}");
    // Taken out again: the upstream's answer comes back at once.
    put(etc.path(), "vsedit", "hosts", "")?;
    let out = dig(&vs, "@127.0.0.53 www.test A")?;
    assert_eq!(section(&out, "ANSWER")[0].3, "10.7.7.2", "{out}");
    Ok(())
}

#[test]
fn host_namespace_forwards_to_resolveds_upstreams_behind_the_stub() -> anyhow::Result<()> {
    let test = "host_namespace_forwards_to_resolveds_upstreams_behind_the_stub";
    if !require(test, &["nsenter", "dig", "unbound"]) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let etc = tempfile::tempdir()?;
    let hostetc = tempfile::tempdir()?;
    let home = TestNetns::create(dir.path(), "home")?;
    let up = link_upstream(&home, dir.path(), 3)?;
    let _srv = Server::unbound(&up, UP_ADDR, &zone("10.7.7.3"))?;
    // The host's files as systemd-resolved leaves them: /etc/resolv.conf names its stub, the
    // real servers are in /run/systemd/resolve/resolv.conf (both private copies here).
    let stub = hostetc.path().join("resolv.conf");
    let resolved = hostetc.path().join("resolved.conf");
    std::fs::write(&stub, "nameserver 127.0.0.53\noptions edns0 trust-ad\n")?;
    std::fs::write(&resolved, format!("nameserver {UP_ADDR}\n"))?;
    let cfg = format!(
        "host_netns = true\n{}host_resolv_conf = \"{}\"\nhost_resolved_conf = \"{}\"\n",
        config(etc.path(), ""),
        stub.display(),
        resolved.display()
    );
    let d = Daemon::start_in_netns(&cfg, &home.path)?;
    let (a, out) = first_answer(&home, "www.test A")?;
    assert_eq!(a.as_deref(), Some("10.7.7.3"), "{out}");
    let stats = d.ctl_json(&["dns", "stats", "--ns", "host"])?;
    assert!(
        stats["host"]["upstream_source"]
            .as_str()
            .is_some_and(|s| s.contains("resolved.conf")),
        "{stats}"
    );
    // A host whose /etc/resolv.conf names real servers: those, from the next query on.
    std::fs::write(&resolved, "nameserver 192.0.2.99\n")?;
    std::fs::write(&stub, format!("nameserver {UP_ADDR}\n"))?;
    let out = dig(&home, "@127.0.0.53 www.test A")?;
    assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
    let stats = d.ctl_json(&["dns", "stats", "--ns", "host"])?;
    assert_eq!(
        stats["host"]["upstream_source"].as_str(),
        Some(stub.display().to_string().as_str()),
        "{stats}"
    );
    Ok(())
}

/// A hosts file of `lines` lines whose last name, `last.lan`, has address 10.250.0.`tag`.
fn big_hosts(lines: u32, tag: u8) -> String {
    let mut s = String::with_capacity(lines as usize * 32);
    for i in 0..lines - 1 {
        let _ = writeln!(
            s,
            "10.{}.{}.{} name{i}.big.lan alias{i}",
            100 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        );
    }
    let _ = writeln!(s, "10.250.0.{tag} last.lan");
    s
}

#[test]
fn rewriting_a_huge_hosts_file_in_one_namespace_never_stalls_another() -> anyhow::Result<()> {
    let test = "rewriting_a_huge_hosts_file_in_one_namespace_never_stalls_another";
    if !require(test, &["dig"]) {
        return Ok(());
    }
    let etc = tempfile::tempdir()?;
    put(etc.path(), "vsbig", "hosts", &big_hosts(100_000, 0))?;
    put(etc.path(), "vsquiet", "hosts", "10.2.2.2 quiet.lan\n")?;
    let d = Daemon::start(&config(etc.path(), ""))?;
    let big = d.netns("vsbig")?;
    let quiet = d.netns("vsquiet")?;
    let (a, out) = first_answer(&quiet, "quiet.lan A")?;
    assert_eq!(a.as_deref(), Some("10.2.2.2"), "{out}");
    // From the start (its first version is being loaded already), rewrite the big file
    // (temp + rename, as editors do) over and over, and ask in the big namespace so the
    // versions are loaded, while the quiet one is asked too.
    let path = etc.path().join("vsbig/hosts");
    let tmp = etc.path().join("vsbig/hosts.tmp");
    let started = Instant::now();
    let mut last = 0u8;
    let mut quiet_answers = 0;
    while started.elapsed() < Duration::from_secs(4) && last < 20 {
        last += 1;
        std::fs::write(&tmp, big_hosts(100_000, last))?;
        std::fs::rename(&tmp, &path)?;
        let _ = dig(&big, "@127.0.0.53 last.lan A")?;
        for _ in 0..3 {
            // One try of 2 s: an event loop stalled by the parse would lose these.
            let out = dig(&quiet, "@127.0.0.53 quiet.lan A")?;
            assert_eq!(status(&out).as_deref(), Some("NOERROR"), "{out}");
            assert_eq!(section(&out, "ANSWER")[0].3, "10.2.2.2", "{out}");
            quiet_answers += 1;
        }
    }
    assert!(quiet_answers >= 3);
    // The big namespace ends on its last version, loaded off the loop: a load takes seconds
    // in a debug build on a loaded machine (timing targets live in the benches).
    let want = format!("10.250.0.{last}");
    wait_for(
        "the last version of the big file",
        Duration::from_secs(60),
        || {
            dig(&big, "@127.0.0.53 last.lan A")
                .ok()
                .filter(|o| section(o, "ANSWER").first().is_some_and(|a| a.3 == want))
        },
    )?;
    Ok(())
}
