//! How `nsauxctl` prints each answer without `--json`: one sentence for a verb that changes
//! something, `rpcinfo -m`'s layout for portmapper statistics, tables for lists, and
//! `key  value` lines for counters. Never raw JSON: nested values are flattened
//! (`a.b  value`) and lists of records become tables.

use serde_json::Value;

use super::table::{plain, print_columns};
use crate::escape::escape;

/// Prints `{ns: data}` as one block per namespace; each block rendered by [`print_value`].
pub(super) fn print_per_namespace(data: &Value) {
    let Some(map) = data.as_object() else {
        print_value(data, "");
        return;
    };
    for (ns, v) in map {
        println!("[{}]", escape(ns));
        print_value(v, "  ");
    }
}

/// Prints any answer as `key  value` lines: nested objects flattened with dots, arrays of
/// scalars joined with commas, arrays of objects as an indented table under their key.
pub(super) fn print_value(v: &Value, indent: &str) {
    match v {
        Value::Object(o) => {
            let mut lines = Vec::new();
            let mut tables = Vec::new();
            flatten(o, "", &mut lines, &mut tables);
            let w = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in &lines {
                println!("{indent}{k:<w$}  {v}");
            }
            for (k, rows) in tables {
                println!("{indent}{k}:");
                print_records(&rows, &format!("{indent}  "));
            }
        }
        Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
            print_records(rows, indent);
        }
        other => println!("{indent}{}", scalar(other)),
    }
}

/// Splits an object into `key value` lines and `key: table` blocks.
fn flatten(
    o: &serde_json::Map<String, Value>,
    prefix: &str,
    lines: &mut Vec<(String, String)>,
    tables: &mut Vec<(String, Vec<Value>)>,
) {
    for (k, v) in o {
        let key = format!("{prefix}{}", escape(k));
        match v {
            Value::Object(inner) => flatten(inner, &format!("{key}."), lines, tables),
            Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
                tables.push((key, rows.clone()));
            }
            other => lines.push((key, scalar(other))),
        }
    }
}

/// A scalar (or a list of scalars) as one cell; anything deeper is flattened to `k=v` pairs.
fn scalar(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), scalar(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => plain(other),
    }
}

/// Prints an array of objects as a table whose columns are the first row's keys.
fn print_records(rows: &[Value], indent: &str) {
    let cols: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let head: Vec<String> = cols.iter().map(|c| escape(c).to_uppercase()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| scalar(&r[c.as_str()])).collect())
        .collect();
    print_columns(&head, &cells, indent);
}

/// Procedure names per portmapper version, in procedure-number order, as `rpcinfo -m` heads
/// its columns.
const PROCS: [&[&str]; 3] = [
    &["NULL", "SET", "UNSET", "GETPORT", "DUMP", "CALLIT"],
    &[
        "NULL", "SET", "UNSET", "GETADDR", "DUMP", "CALLIT", "TIME", "U2T", "T2U",
    ],
    &[
        "NULL", "SET", "UNSET", "GETADDR", "DUMP", "CALLIT", "TIME", "U2T", "T2U", "VERADDR",
        "INDRECT", "GETLIST", "GETSTAT",
    ],
];

/// Prints `rpc stats` the way `rpcinfo -m` does: per version a row of calls per procedure
/// (SET and UNSET as `calls/succeeded`), then the lookup and remote-call tables.
pub(super) fn print_rpc_stats(data: &Value) {
    for (ns, v) in data.as_object().into_iter().flatten() {
        println!("[{}]", escape(ns));
        println!("  registrations: {}", plain(&v["registrations"]));
        for s in v["by_version"].as_array().into_iter().flatten() {
            let vers = s["version"].as_u64().unwrap_or(0);
            let (title, names) = match vers {
                2 => ("PORTMAP (version 2)", PROCS[0]),
                3 => ("RPCBIND (version 3)", PROCS[1]),
                _ => ("RPCBIND (version 4)", PROCS[2]),
            };
            println!("  {title} statistics");
            let calls: Vec<u64> = s["calls_by_proc"]
                .as_array()
                .map(|a| a.iter().map(|c| c.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default();
            let row: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let n = calls.get(i).copied().unwrap_or(0);
                    match *name {
                        "SET" => format!("{n}/{}", plain(&s["set"])),
                        "UNSET" => format!("{n}/{}", plain(&s["unset"])),
                        _ => n.to_string(),
                    }
                })
                .collect();
            let head: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            print_columns(&head, &[row], "  ");
            let lookups = s["lookups"].as_array().cloned().unwrap_or_default();
            if !lookups.is_empty() {
                let what = if vers == 2 {
                    "PMAP_GETPORT"
                } else {
                    "RPCBPROC_GETADDR"
                };
                println!("  {what} call statistics");
                print_records(&lookups, "  ");
            }
            let remote = s["remote_calls"].as_array().cloned().unwrap_or_default();
            if !remote.is_empty() {
                println!("  PMAP_RMTCALL call statistics");
                print_records(&remote, "  ");
            }
        }
    }
}

/// Prints `dns stats`: the counters as `key value` lines, the upstreams as a table (ADDRESS,
/// SRTT, FAILURES, STATE).
pub(super) fn print_dns_stats(data: &Value) {
    for (ns, v) in data.as_object().into_iter().flatten() {
        println!("[{}]", escape(ns));
        let mut counters = v.clone();
        let upstreams = counters
            .as_object_mut()
            .and_then(|o| o.remove("upstreams"))
            .and_then(|u| u.as_array().cloned())
            .unwrap_or_default();
        print_value(&counters, "  ");
        println!("  upstreams:");
        if upstreams.is_empty() {
            println!("    (none)");
            continue;
        }
        let rows: Vec<Vec<String>> = upstreams
            .iter()
            .map(|u| {
                vec![
                    plain(&u["addr"]),
                    u["srtt_us"]
                        .as_u64()
                        .map_or_else(|| "-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
                    plain(&u["failures"]),
                    if u["down"].as_bool() == Some(true) {
                        "down"
                    } else {
                        "up"
                    }
                    .into(),
                ]
            })
            .collect();
        let head = ["ADDRESS", "SRTT", "FAILURES", "STATE"].map(String::from);
        print_columns(&head, &rows, "    ");
    }
}

/// One sentence for `attach`.
pub(super) fn attached(data: &Value) -> String {
    format!(
        "attached namespace {} (id {}, {})",
        plain(&data["name"]),
        plain(&data["id"]),
        plain(&data["source"])
    )
}

/// One sentence for `detach`.
pub(super) fn detached(data: &Value) -> String {
    format!("detached namespace {}", plain(&data["detached"]))
}
