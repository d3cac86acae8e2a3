//! Does nsauxd use more cores when it has more (issue 11 item 4)?
//!
//! `cargo bench -p nsaux-tests --bench workers` (root). Not a timed test: it prints one table per
//! spread and fails only if no answer came back.
//!
//! One daemon per `worker_threads` value N (1, 2, and the number of allowed CPUs if more; or
//! `NSAUX_WORKERS_N=1,2,4`), all running at once, each serving NTP and DNS in the same number of
//! namespaces. Each round floods every daemon in turn (the order reversed every other round, so
//! drift in the load of a shared machine hits every N alike) with requests spread over
//! `SPREADS` namespaces, from the cheap generators of [`nsaux_tests::flood`] (UDP: GSO bursts
//! out, GRO reads in) and [`nsaux_tests::tcp_flood`] (pipelined TCP). Per daemon: answers/s, the
//! server's CPUs busy and CPUs *waiting* (its threads runnable but not running, from
//! `schedstat`: on a shared machine, busy + waiting near N says the daemon had work for all N
//! workers and the machine set the pace), the CPUs of the least and the most busy worker thread
//! (close together: the work is spread, nothing serialises on one thread), CPU per answer, the generator's CPU per request and
//! its CPUs busy / waiting; medians over rounds with their range. `NSAUX_BENCH_BASELINE` adds the same rows for that build.
//!
//! Three kinds of flood, one set of tables each (`NSAUX_WORKERS_KIND`, a comma-separated list
//! of `ntp`, `dns`, `dns-tcp`; default all): NTP, whose answer costs the server about what the request costs the generator (on
//! loopback the sender pays the delivery into the receiver's socket), so on 2 CPUs the two
//! split the machine and a second worker has no CPU left to use; and DNS queries for a record
//! of the daemon's configuration (`w.lan`), which cost the server about twice as much per
//! answer; and the same DNS queries over TCP, pipelined (`nsaux_tests::tcp_flood`: a window of
//! queries per `write`), where the generator costs a fraction of the server's CPU per answer,
//! so a second worker has a CPU to use even on a 2-CPU machine.
//!
//! `NSAUX_WORKERS_SECS` (default 2) is the time of one flood, `NSAUX_WORKERS_ROUNDS` (default 3)
//! the rounds; `NSAUX_FLOOD_SOCKETS` (default 4) client sockets per namespace,
//! `NSAUX_FLOOD_WINDOW` (default 32) requests in flight per socket, `NSAUX_FLOOD_THREADS`
//! (default 1) generator threads.

use std::net::SocketAddr;
use std::time::Duration;

use nsaux_tests::bench::{Build, builds, median, print_table, range};
use nsaux_tests::closed_loop::{dns_a_query, ntp_request, wait_dns_answers, wait_ntp_answers};
use nsaux_tests::daemon::Daemon;
use nsaux_tests::flood::{Flood, FloodReport};
use nsaux_tests::netns::TestNetns;
use nsaux_tests::tcp_flood::TcpFlood;

const NTP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 123);
const DNS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53)),
    53,
);

/// What a flood asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ntp,
    /// A record from the daemon's configuration (answered without an upstream).
    Dns,
    /// The same over TCP, pipelined (`nsaux_tests::tcp_flood`): a window of queries per
    /// `write`, so the generator costs a fraction of what the server does per answer.
    DnsTcp,
}

impl Kind {
    fn target(self) -> SocketAddr {
        match self {
            Self::Ntp => NTP,
            Self::Dns | Self::DnsTcp => DNS,
        }
    }

    fn request(self) -> fn(u64) -> Vec<u8> {
        match self {
            Self::Ntp => ntp_request,
            Self::Dns | Self::DnsTcp => |n| dns_a_query(n as u16, "w.lan"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ntp => "NTP",
            Self::Dns => "DNS (configured record)",
            Self::DnsTcp => "DNS over TCP, pipelined (configured record)",
        }
    }
}

/// The kinds to run (`NSAUX_WORKERS_KIND`, default both).
fn kinds() -> Vec<Kind> {
    let s = std::env::var("NSAUX_WORKERS_KIND").unwrap_or_else(|_| "ntp,dns,dns-tcp".into());
    s.split(',')
        .filter_map(|k| match k.trim() {
            "ntp" => Some(Kind::Ntp),
            "dns" => Some(Kind::Dns),
            "dns-tcp" => Some(Kind::DnsTcp),
            _ => None,
        })
        .collect()
}
/// Namespaces a flood is spread over, one table each.
const SPREADS: [usize; 2] = [4, 8];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `worker_threads` values to compare.
fn worker_counts() -> Vec<usize> {
    if let Ok(s) = std::env::var("NSAUX_WORKERS_N") {
        let v: Vec<usize> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        if !v.is_empty() {
            return v;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut v = vec![1, 2];
    if cores > 2 {
        v.push(cores);
    }
    v
}

/// One daemon under test and its namespaces.
struct Server {
    label: String,
    /// Its `worker_threads`.
    n: usize,
    daemon: Daemon,
    spaces: Vec<TestNetns>,
}

fn start(build: &Build, n: usize, spaces: usize) -> anyhow::Result<Server> {
    let config = format!(
        "worker_threads = {n}\n[ntp]\nstratum = 10\nlocal_stratum = 10\n\
         rate_limit = {{ enabled = false }}\n[dns]\nlocal_domains = [\"lan\"]\n\
         records = [{{ name = \"w.lan\", addr = \"10.9.9.9\" }}]\n[rpcbind]\nenabled = false\n"
    );
    let daemon = build.start(&config)?;
    let spaces = (0..spaces)
        .map(|i| daemon.netns(&format!("W{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for ns in &spaces {
        wait_ntp_answers(&ns.path, NTP, "NTP in a worker-table namespace")?;
        wait_dns_answers(&ns.path, DNS, "w.lan", "DNS in a worker-table namespace")?;
    }
    Ok(Server {
        label: format!("{} N={n}", build.label),
        n,
        daemon,
        spaces,
    })
}

/// One flood of `time` into the first `spread` namespaces of `s`.
struct Sample {
    flood: FloodReport,
    /// Server CPU in that time.
    server_cpu: Duration,
    /// Time the server's threads were runnable but waiting for a CPU.
    server_waited: Duration,
    /// CPU of the least and of the most busy of the N worker threads (N > 1).
    worker_spread: Option<(Duration, Duration)>,
}

fn measure(s: &Server, kind: Kind, spread: usize, time: Duration) -> anyhow::Result<Sample> {
    let namespaces: Vec<_> = s.spaces[..spread].iter().map(|n| n.path.clone()).collect();
    let sockets = env_or("NSAUX_FLOOD_SOCKETS", 4);
    let window = env_or("NSAUX_FLOOD_WINDOW", 32);
    let run = move || -> anyhow::Result<FloodReport> {
        if kind == Kind::DnsTcp {
            return TcpFlood {
                target: kind.target(),
                namespaces,
                conns_per_ns: sockets,
                window,
                time,
                max_requests: u64::MAX,
                request: kind.request(),
            }
            .run();
        }
        Flood {
            target: kind.target(),
            namespaces,
            sockets_per_ns: sockets,
            window,
            burst: 32,
            threads: env_or("NSAUX_FLOOD_THREADS", 1),
            time,
            max_requests: u64::MAX,
            request: kind.request(),
        }
        .run()
    };
    let pid = s.daemon.pid();
    let (cpu0, waited0) = (nsaux_tests::bench::cpu_ns(pid), run_delay_ns(pid));
    let workers0 = worker_cpu(pid);
    let report = run()?;
    // The N busiest `nsaux-worker` threads (the runtime's blocking pool has the same name but
    // idles here); with one worker the runtime runs on the main thread instead.
    let mut used: Vec<u64> = worker_cpu(pid)
        .into_iter()
        .map(|(tid, ns)| {
            let was = workers0.iter().find(|(t, _)| *t == tid).map_or(0, |w| w.1);
            ns.saturating_sub(was)
        })
        .collect();
    used.sort_unstable_by(|a, b| b.cmp(a));
    let worker_spread = (s.n > 1 && used.len() >= s.n).then(|| {
        (
            Duration::from_nanos(used[s.n - 1]),
            Duration::from_nanos(used[0]),
        )
    });
    let cpu = nsaux_tests::bench::cpu_ns(pid).saturating_sub(cpu0);
    let waited = run_delay_ns(pid).saturating_sub(waited0);
    Ok(Sample {
        flood: report,
        server_cpu: Duration::from_nanos(cpu),
        server_waited: Duration::from_nanos(waited),
        worker_spread,
    })
}

/// On-CPU ns of each `nsaux-worker` thread of `pid`, by thread id.
fn worker_cpu(pid: u32) -> Vec<(u64, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "nsaux-worker")
        })
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            Some((tid, s.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Time all threads of `pid` spent runnable but not running, in ns (the second field of
/// `/proc/PID/task/*/schedstat`). Busy + waiting close to N CPUs means the N workers always
/// had work and the machine, not the daemon, set the pace.
fn run_delay_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The medians of the least and the most busy worker's CPUs ("-" with one worker).
fn spread_cell(n: usize, v: &[Sample], secs: impl Fn(&Sample) -> f64) -> String {
    if n < 2 {
        return "-".to_owned();
    }
    let pick = |hi: bool| {
        v.iter()
            .map(|x| {
                x.worker_spread.map_or(f64::NAN, |(lo_cpu, hi_cpu)| {
                    (if hi { hi_cpu } else { lo_cpu }).as_secs_f64() / secs(x)
                })
            })
            .collect::<Vec<f64>>()
    };
    format!("{:.2}–{:.2}", median(&pick(false)), median(&pick(true)))
}

fn cell(v: &[f64], digits: usize) -> String {
    let (lo, hi) = range(v);
    format!(
        "{:.digits$} ({lo:.digits$}–{hi:.digits$})",
        median(v),
        digits = digits
    )
}

fn main() -> anyhow::Result<()> {
    if !nsaux_tests::env::require_root("bench workers") {
        return Ok(());
    }
    nsaux_tests::bench::build_release_daemon()?;
    let time = Duration::from_secs_f64(env_or("NSAUX_WORKERS_SECS", 2.0f64).max(0.2));
    let rounds: usize = env_or("NSAUX_WORKERS_ROUNDS", 3usize).max(1);
    let most = SPREADS.iter().copied().max().unwrap_or(1);
    let mut servers = Vec::new();
    for b in builds()? {
        for n in worker_counts() {
            servers.push(start(&b, n, most)?);
        }
    }
    // Warm-up: threads, buffers and caches made before anything is measured.
    for s in &servers {
        for &kind in &kinds() {
            measure(s, kind, most, Duration::from_millis(300))?;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut answered = 0;
    for (kind, spread) in kinds()
        .into_iter()
        .flat_map(|k| SPREADS.map(move |s| (k, s)))
    {
        let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                samples[i].push(measure(&servers[i], kind, spread, time)?);
            }
        }
        let mut rows = Vec::new();
        for (s, v) in servers.iter().zip(&samples) {
            let secs = |x: &Sample| x.flood.elapsed.as_secs_f64().max(1e-9);
            let f = |g: &dyn Fn(&Sample) -> f64| v.iter().map(g).collect::<Vec<f64>>();
            answered += v.iter().map(|x| x.flood.answers).sum::<u64>();
            rows.push(vec![
                s.label.clone(),
                cell(&f(&|x| x.flood.rate()), 0),
                cell(&f(&|x| x.server_cpu.as_secs_f64() / secs(x)), 2),
                format!(
                    "{:.2}",
                    median(&f(&|x| x.server_waited.as_secs_f64() / secs(x)))
                ),
                spread_cell(s.n, &v[..], secs),
                cell(
                    &f(&|x| x.server_cpu.as_secs_f64() * 1e6 / x.flood.answers.max(1) as f64),
                    2,
                ),
                cell(&f(&|x| x.flood.cpu_us_per_request()), 2),
                format!(
                    "{:.2} / {:.2}",
                    median(&f(&|x| x.flood.cpu.as_secs_f64() / secs(x))),
                    median(&f(&|x| x.flood.waited.as_secs_f64() / secs(x)))
                ),
                v.iter().map(|x| x.flood.lost).sum::<u64>().to_string(),
            ]);
        }
        println!(
            "\n{} floods spread over {spread} namespaces, {rounds} rounds of {:.1} s, \
             {cores} CPUs allowed (median (range)):\n",
            kind.name(),
            time.as_secs_f64()
        );
        print_table(
            &[
                "server",
                "answers/s",
                "server CPUs busy",
                "server CPUs waiting",
                "least–most busy worker CPUs",
                "server CPU µs / answer",
                "generator CPU µs / request",
                "generator CPUs busy / waiting",
                "requests given up",
            ],
            &rows,
        );
    }
    anyhow::ensure!(answered > 0, "no answer at all");
    Ok(())
}
