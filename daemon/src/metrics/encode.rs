//! The snapshot written as the OpenMetrics text exposition (what Prometheus scrapes), through
//! the `prometheus-client` crate's encoder, so escaping, `_total` suffixes and the `# EOF`
//! marker follow the specification rather than hand-written formatting.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{N, RPC_PROCS, SERIES, Snapshot};

/// Namespaces by how they were found and whether all their listeners are up, from the
/// manager's `ns list` (the observation socket asks it at each scrape).
pub(crate) type NsCounts = Vec<((String, String), u64)>;

#[derive(Debug)]
struct Exposition {
    snap: Snapshot,
    namespaces: NsCounts,
}

/// The distinct series names of `idx`, in first-appearance order.
fn names(idx: impl Iterator<Item = usize>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for i in idx {
        if !out.contains(&SERIES[i].name) {
            out.push(SERIES[i].name);
        }
    }
    out
}

/// The help text of series `name`.
fn help(name: &str) -> &'static str {
    SERIES
        .iter()
        .find(|s| s.name == name)
        .map_or("", |s| s.help)
}

/// Writes one counter sample with `labels`.
fn counter(
    enc: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    v: u64,
) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_family(&labels)?)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let info = [
            ("version", crate::build_info::VERSION),
            ("commit", crate::build_info::COMMIT),
            ("rustc", crate::build_info::RUSTC),
        ];
        let mut e = enc.encode_descriptor(
            "nsaux_build",
            "Build of the running nsauxd (always 1)",
            None,
            MetricType::Info,
        )?;
        e.encode_info(&info)?;

        let mut e = enc.encode_descriptor(
            "nsaux_namespaces",
            "Namespaces tracked, by source and state (serving: every listener up; partial: some failed)",
            None,
            MetricType::Gauge,
        )?;
        for ((source, state), n) in &self.namespaces {
            let labels = [("source", source.as_str()), ("state", state.as_str())];
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(e.encode_family(&labels)?)?;
        }

        for name in names(0..N) {
            let mut e = enc.encode_descriptor(name, help(name), None, MetricType::Counter)?;
            for i in (0..N).filter(|i| SERIES[*i].name == name) {
                counter(&mut e, SERIES[i].labels, self.snap.totals[i])?;
            }
        }

        let mut e = enc.encode_descriptor(
            "nsaux_rpcbind_calls",
            "Portmapper calls by version and procedure (what rpcinfo -m shows)",
            None,
            MetricType::Counter,
        )?;
        for (v, names) in RPC_PROCS.iter().enumerate() {
            let vers = ["2", "3", "4"][v];
            for (p, proc_) in names.iter().enumerate() {
                let n = self.snap.rpc[v][p];
                counter(&mut e, &[("version", vers), ("procedure", proc_)], n)?;
            }
        }

        let e = enc.encode_descriptor(
            "nsaux_rpcbind_registrations",
            "Portmapper registrations in the tables of all live namespaces",
            None,
            MetricType::Gauge,
        )?;
        gauge(self.snap.registrations).encode(e)?;

        let mut e = enc.encode_descriptor(
            "nsaux_dns_upstream_latency_seconds",
            "Time from a DNS query to its upstream-relayed answer",
            None,
            MetricType::Histogram,
        )?;
        e.encode_histogram::<NoLabelSet>(
            self.snap.latency_sum,
            self.snap.latency_count,
            &self.snap.latency,
            None,
        )?;

        let (writes, failures) = self.snap.journal;
        let e = enc.encode_descriptor(
            "nsaux_journal_writes",
            "Registration journal writes (appends and rewrites) that succeeded",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(writes).encode(e)?;
        let e = enc.encode_descriptor(
            "nsaux_journal_write_failures",
            "Registration journal writes that failed",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(failures).encode(e)?;
        let e = enc.encode_descriptor(
            "nsaux_receive_coalesced_waits",
            "Waits for datagrams a worker under sustained load delayed by up to receive_coalesce_us",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.snap.coalesced_waits).encode(e)?;
        let e = enc.encode_descriptor(
            "nsaux_quiet_lane_pauses",
            "Times the quiet lane paused because it had used its CPU budget (quiet_lane_cpu_percent)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.snap.lane_pauses).encode(e)?;

        // Per-namespace series: one descriptor per name, one sample per opted-in namespace.
        let per_ns: Vec<usize> = (0..N).filter(|i| SERIES[*i].per_ns).collect();
        for name in names(per_ns.iter().copied()) {
            let full = format!("nsaux_netns_{}", name.trim_start_matches("nsaux_"));
            let help = format!("{}, per opted-in namespace", help(name));
            let mut e = enc.encode_descriptor(&full, &help, None, MetricType::Counter)?;
            for (ns, vals) in &self.snap.per_ns {
                for (j, &i) in per_ns.iter().enumerate() {
                    if SERIES[i].name == name {
                        let mut labels = vec![("netns", ns.as_str())];
                        labels.extend_from_slice(SERIES[i].labels);
                        counter(&mut e, &labels, vals[j])?;
                    }
                }
            }
        }
        self.encode_per_ns_rpc(&mut enc)
    }
}

impl Exposition {
    /// The portmapper's per-namespace series: calls by version and procedure, and the
    /// registrations gauge, one set per opted-in namespace.
    fn encode_per_ns_rpc(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut e = enc.encode_descriptor(
            "nsaux_netns_rpcbind_calls",
            "Portmapper calls by version and procedure, per opted-in namespace",
            None,
            MetricType::Counter,
        )?;
        for ns in &self.snap.per_ns_rpc {
            for (v, names) in RPC_PROCS.iter().enumerate() {
                let vers = ["2", "3", "4"][v];
                for (p, proc_) in names.iter().enumerate() {
                    let n = ns.calls.get(v).and_then(|r| r.get(p)).copied().unwrap_or(0);
                    let labels = [
                        ("netns", ns.netns.as_str()),
                        ("version", vers),
                        ("procedure", proc_),
                    ];
                    counter(&mut e, &labels, n)?;
                }
            }
        }
        let mut e = enc.encode_descriptor(
            "nsaux_netns_rpcbind_registrations",
            "Portmapper registrations in the table, per opted-in namespace",
            None,
            MetricType::Gauge,
        )?;
        for ns in &self.snap.per_ns_rpc {
            gauge(ns.registrations).encode(e.encode_family(&[("netns", ns.netns.as_str())])?)?;
        }
        Ok(())
    }
}

/// A gauge of a count (saturating at `i64::MAX`, the gauge's type).
fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The exposition text of `snap` and the namespace counts.
pub(crate) fn text(snap: Snapshot, namespaces: NsCounts) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { snap, namespaces }));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_ends_with_eof() {
        let out = text(
            super::super::snapshot(),
            vec![(("dir".into(), "serving".into()), 2)],
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
        for name in [
            "nsaux_build_info{version=",
            "nsaux_namespaces{source=\"dir\",state=\"serving\"} 2",
            "nsaux_requests_total{service=\"ntp\"}",
            "nsaux_drops_total{service=\"dns\",reason=\"rate_limited\"}",
            "nsaux_rpcbind_calls_total{version=\"2\",procedure=\"getport\"}",
            "nsaux_dns_upstream_latency_seconds_bucket{le=\"+Inf\"}",
            "nsaux_journal_writes_total",
            "nsaux_receive_coalesced_waits_total",
            "nsaux_quiet_lane_pauses_total",
            "nsaux_rpcbind_registrations ",
            "commit=\"",
            "rustc=\"rustc ",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }
}
