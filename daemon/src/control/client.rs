//! The client side of the control protocol (used by `nsauxctl` and the tests).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{MAX_REPLY, Request, Response, SOCKET_NAME};

/// Sends one request to the daemon whose runtime directory is `runtime_dir` and returns its
/// reply (a failed reply is still `Ok`; `Err` means the daemon could not be asked).
pub(crate) fn call(runtime_dir: &Path, req: &Request) -> anyhow::Result<Response> {
    let path = runtime_dir.join(SOCKET_NAME);
    let stream = UnixStream::connect(&path)
        .with_context(|| format!("daemon not running? cannot connect to {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    (&stream).write_all(&line).context("sending request")?;
    let mut reader = BufReader::new(&stream).take(MAX_REPLY as u64 + 1);
    let mut reply = Vec::new();
    reader
        .read_until(b'\n', &mut reply)
        .context("reading reply")?;
    if reply.is_empty() {
        bail!("daemon closed the connection without answering");
    }
    serde_json::from_slice(&reply).context("daemon sent an unreadable reply")
}

use std::io::Read as _;
