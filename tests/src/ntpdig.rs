//! ntpdig's JSON output (`ntpdig -j`), read the same way by every test that asks a namespace
//! for the time with the real client.

/// ntpdig's `-j` report as JSON; an error that quotes the output when it is not JSON (ntpdig
/// prints a plain message when no server answered).
pub fn report(out: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("ntpdig output {out:?}: {e}"))
}
