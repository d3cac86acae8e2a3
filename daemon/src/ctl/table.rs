//! How `nsauxctl` prints the daemon's answers without `--json`: aligned columns and
//! per-namespace blocks.

use serde_json::Value;

use crate::escape::escape;

/// A JSON value as a table cell: strings without quotes (escaped: they may come from tenants),
/// null as `-`.
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s).into_owned(),
        Value::Null => "-".into(),
        other => escape(&other.to_string()).into_owned(),
    }
}

/// Prints `ns list` as one table: NAME, ID, SOURCE, SERVICES, SINCE.
pub(super) fn print_ns_table(data: &Value) {
    let rows: Vec<[String; 5]> = data
        .as_array()
        .map(|a| {
            a.iter()
                .map(|ns| {
                    let services = ns["services"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{}:{}", escape(k), plain(&v["state"])))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into());
                    [
                        plain(&ns["name"]),
                        plain(&ns["id"]),
                        plain(&ns["source"]),
                        services,
                        since(&ns["since"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let head = ["NAME", "ID", "SOURCE", "SERVICES", "SINCE"].map(String::from);
    print_columns(&head, &rows, "");
    print_ns_reasons(data);
}

/// Under the `ns list` table, one line per service that is not fully up, saying why: the
/// service's own error, or each listener that is not up with its error (`dns partial:
/// tcp:[::1]:53 ...: address in use`).
fn print_ns_reasons(data: &Value) {
    for ns in data.as_array().into_iter().flatten() {
        for (svc, v) in ns["services"].as_object().into_iter().flatten() {
            let state = v["state"].as_str().unwrap_or("");
            if state == "up" {
                continue;
            }
            let mut why: Vec<String> = v["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["state"] != "up")
                .map(|l| {
                    format!(
                        "{} {}: {}",
                        plain(&l["listener"]),
                        plain(&l["state"]),
                        plain(&l["error"])
                    )
                })
                .collect();
            if let Some(e) = v["error"].as_str() {
                why.insert(0, escape(e).into_owned());
            }
            if why.is_empty() {
                why.push("no listener configured".into());
            }
            println!(
                "{} {} {}: {}",
                plain(&ns["name"]),
                escape(svc),
                escape(state),
                why.join("; ")
            );
        }
    }
}

/// Prints a header and rows as left-aligned columns two spaces apart, each line indented.
pub(super) fn print_columns<R: AsRef<[String]>>(head: &[String], rows: &[R], indent: &str) {
    let mut w = vec![0usize; head.len()];
    for r in std::iter::once(head).chain(rows.iter().map(AsRef::as_ref)) {
        for (i, c) in r.iter().enumerate().take(w.len()) {
            w[i] = w[i].max(c.len());
        }
    }
    for r in std::iter::once(head).chain(rows.iter().map(AsRef::as_ref)) {
        let cells: Vec<String> = r.iter().zip(&w).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{indent}{}", cells.join("  ").trim_end());
    }
}

/// Prints `rpc list` as one table: NS, PROG/VERS, NETID, ADDRESS, OWNER.
pub(super) fn print_rpc_table(data: &Value) {
    let mut rows: Vec<[String; 5]> = Vec::new();
    for (ns, entries) in data.as_object().into_iter().flatten() {
        for e in entries.as_array().into_iter().flatten() {
            rows.push([
                escape(ns).into_owned(),
                format!("{}/{}", plain(&e["prog"]), plain(&e["vers"])),
                plain(&e["netid"]),
                plain(&e["address"]),
                plain(&e["owner"]),
            ]);
        }
    }
    let head = ["NS", "PROG/VERS", "NETID", "ADDRESS", "OWNER"].map(String::from);
    print_columns(&head, &rows, "");
}

/// A unix time as a rough age (`5m ago`), or `-` when it is missing.
fn since(v: &Value) -> String {
    let Some(secs) = v.as_u64() else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = now.saturating_sub(secs);
    match age {
        0..60 => format!("{age}s ago"),
        60..3600 => format!("{}m ago", age / 60),
        3600..86400 => format!("{}h ago", age / 3600),
        _ => format!("{}d ago", age / 86400),
    }
}
