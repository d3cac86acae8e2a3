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
    print_columns(&head, &rows);
}

/// Prints a header and rows as left-aligned columns two spaces apart.
fn print_columns<const N: usize>(head: &[String; N], rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for r in std::iter::once(head).chain(rows) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    for r in std::iter::once(head).chain(rows) {
        let cells: Vec<String> = r.iter().zip(w).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
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
    print_columns(&head, &rows);
}

/// Prints `{ns: data}` as one block per namespace; tables (arrays of objects) as columns.
pub(super) fn print_per_namespace(data: &Value) {
    let Some(map) = data.as_object() else {
        println!("{}", plain(data));
        return;
    };
    for (ns, v) in map {
        println!("[{}]", escape(ns));
        match v {
            Value::Array(rows) => {
                let cols: Vec<String> = rows
                    .first()
                    .and_then(Value::as_object)
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                if cols.is_empty() {
                    for r in rows {
                        println!("  {}", plain(r));
                    }
                    continue;
                }
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| cols.iter().map(|c| plain(&r[c.as_str()])).collect())
                    .collect();
                let widths: Vec<usize> = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        cells
                            .iter()
                            .map(|r| r[i].len())
                            .chain([c.len()])
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                let line = |r: &[String]| {
                    let parts: Vec<String> = r
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect();
                    println!("  {}", parts.join("  ").trim_end());
                };
                line(&cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>());
                for r in &cells {
                    line(r);
                }
            }
            Value::Object(o) => {
                for (k, v) in o {
                    println!("  {:<24} {}", escape(k), plain(v));
                }
            }
            other => println!("  {}", plain(other)),
        }
    }
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
