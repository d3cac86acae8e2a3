//! The judged divergences (`tests/conformance/divergences.toml`) and the check that every
//! divergence seen is on the list.
//!
//! The file is a list of `[[divergence]]` tables with string keys `id`, `behaviour`,
//! `nsauxd`, `stock` and `reason`; the reader below takes exactly that subset of TOML (the
//! test crate has no TOML parser, and the file is ours).

use std::collections::BTreeMap;

/// One divergence seen in a run: where, and what each side answered.
#[derive(Debug, Clone)]
pub(super) struct Diff {
    /// Stable name: `area/case/field`.
    pub(super) id: String,
    /// What nsauxd answered.
    pub(super) nsauxd: String,
    /// What the stock daemon(s) answered.
    pub(super) stock: String,
}

/// The ids of the judged list, each with its reason.
fn judged() -> anyhow::Result<BTreeMap<String, String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/divergences.toml");
    let text = std::fs::read_to_string(path)?;
    let mut out = BTreeMap::new();
    let mut entry: BTreeMap<String, String> = BTreeMap::new();
    let mut flush = |entry: &mut BTreeMap<String, String>| -> anyhow::Result<()> {
        if entry.is_empty() {
            return Ok(());
        }
        for key in ["id", "behaviour", "nsauxd", "stock", "reason"] {
            anyhow::ensure!(
                entry.get(key).is_some_and(|v| !v.is_empty()),
                "divergence {entry:?} lacks `{key}`"
            );
        }
        let id = entry.remove("id").unwrap_or_default();
        let reason = entry.remove("reason").unwrap_or_default();
        anyhow::ensure!(out.insert(id.clone(), reason).is_none(), "{id} twice");
        entry.clear();
        Ok(())
    };
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[divergence]]" {
            flush(&mut entry)?;
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad line {line:?}"))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| anyhow::anyhow!("value not a one-line string: {line:?}"))?;
        entry.insert(k.trim().to_owned(), v.replace("\\\"", "\""));
    }
    flush(&mut entry)?;
    Ok(out)
}

/// Prints every divergence of `area` and fails on those not judged. Judged ids of `area`
/// that were not seen are printed too (a fix may have made one obsolete) but do not fail:
/// some depend on timing (a cache answer) or on the host.
pub(super) fn check(area: &str, diffs: &[Diff]) -> anyhow::Result<()> {
    let list = judged()?;
    let mut unjudged = Vec::new();
    for d in diffs {
        let mark = if list.contains_key(&d.id) {
            "judged"
        } else {
            unjudged.push(d);
            "UNJUDGED"
        };
        eprintln!(
            "{mark} {}: nsauxd {:?}, stock {:?}",
            d.id, d.nsauxd, d.stock
        );
    }
    let prefix = format!("{area}/");
    for id in list.keys().filter(|k| k.starts_with(&prefix)) {
        if !diffs.iter().any(|d| &d.id == id) {
            eprintln!("judged but not seen this run: {id}");
        }
    }
    anyhow::ensure!(
        unjudged.is_empty(),
        "{} unjudged divergence(s) in {area}: {:#?}",
        unjudged.len(),
        unjudged
    );
    Ok(())
}
