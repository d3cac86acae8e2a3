//! `nsauxctl metrics`: the Prometheus exposition read from the daemon's observation socket,
//! printed once, or served at `/metrics` with `--listen` as a long-running exporter.
//!
//! Why a separate process: the daemon holds setns and low-port privileges and must not open an
//! HTTP port; the exporter runs as an unprivileged user in the socket's group and can only
//! read (the observation socket accepts no requests). Why a hand-written HTTP/1.1 responder
//! and not hyper: one route, `GET` only, one response per connection (`Connection: close`);
//! a bounded request read with a timeout is all Prometheus needs, and it keeps the exporter's
//! dependency set (and audit surface) to tokio, which the daemon already uses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::AbortHandle;

/// The content type of the OpenMetrics text the daemon writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest request head read (a scrape's is a few hundred bytes).
const MAX_HEAD: usize = 8192;
/// Connections held at once. A newcomer beyond them closes the oldest connection still
/// sending its request head (a slowloris), or failing that the oldest one, so a flood of idle
/// or never-reading clients cannot lock a real scraper out (it sends its head at once and is
/// answered in milliseconds).
const MAX_CONNS: usize = 64;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a whole exchange may take (a client that never reads is dropped after it).
const TIMEOUT: Duration = Duration::from_secs(10);

/// `nsauxctl metrics` arguments.
#[derive(Debug, Args)]
pub(crate) struct MetricsArgs {
    /// Serve the metrics over HTTP at `/metrics` on this address (e.g. 127.0.0.1:9755) until
    /// stopped, instead of printing them once.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen: Option<SocketAddr>,
    /// The daemon's observation socket (default: RUNTIME_DIR/observe.sock; see `[observe]`).
    #[arg(long, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
}

/// Runs `nsauxctl metrics`.
pub(crate) fn run(runtime_dir: &Path, args: &MetricsArgs) -> anyhow::Result<()> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| runtime_dir.join("observe.sock"));
    let Some(listen) = args.listen else {
        let text = crate::metrics::observe::read(&socket)?;
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) is the reader's choice, not an error.
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.context("writing to stdout"),
        };
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(serve(listen, socket))
}

async fn serve(listen: SocketAddr, socket: PathBuf) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!(
        "nsauxctl: serving http://{}/metrics from {}",
        listener.local_addr().unwrap_or(listen),
        socket.display()
    );
    let socket = Arc::new(socket);
    let conns = Arc::new(Mutex::new(Conns::default()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of fds (EMFILE) most likely: make room, then back off a little.
                eprintln!("nsauxctl: accept failed: {e}");
                crate::lock::lock(&conns).evict();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let in_head = Arc::new(AtomicBool::new(true));
        let socket = Arc::clone(&socket);
        let (flag, table) = (Arc::clone(&in_head), Arc::clone(&conns));
        let evicted = {
            let mut g = crate::lock::lock(&conns);
            let id = g.next_id;
            g.next_id += 1;
            let task = tokio::spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT, respond(stream, &socket, &flag)).await;
                crate::lock::lock(&table).remove(id);
            });
            g.admit(Conn {
                id,
                in_head,
                abort: task.abort_handle(),
            })
        };
        if evicted {
            // Let the aborted task drop its socket now, not after a run of accepts.
            tokio::task::yield_now().await;
        }
    }
}

/// One connection being served.
#[derive(Debug)]
struct Conn {
    id: u64,
    /// Still reading the request head (the first to go when room is needed).
    in_head: Arc<AtomicBool>,
    abort: AbortHandle,
}

/// The connections being served, oldest first.
#[derive(Debug, Default)]
struct Conns {
    list: VecDeque<Conn>,
    next_id: u64,
}

impl Conns {
    /// Adds `c`, closing one old connection first when [`MAX_CONNS`] are held (true then).
    fn admit(&mut self, c: Conn) -> bool {
        let full = self.list.len() >= MAX_CONNS;
        if full {
            self.evict();
        }
        self.list.push_back(c);
        full
    }

    /// Closes the oldest connection still sending its head, or else the oldest one.
    fn evict(&mut self) {
        let victim = self
            .list
            .iter()
            .position(|c| c.in_head.load(Ordering::Relaxed))
            .unwrap_or(0);
        if let Some(c) = self.list.remove(victim) {
            c.abort.abort();
        }
    }

    fn remove(&mut self, id: u64) {
        self.list.retain(|c| c.id != id);
    }
}

/// Reads one request head and answers it; the connection closes after the answer.
async fn respond(
    mut stream: TcpStream,
    socket: &Path,
    in_head: &AtomicBool,
) -> std::io::Result<()> {
    let Ok(head) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else {
        return Ok(());
    };
    let Some(head) = head? else {
        return reply(
            &mut stream,
            "431 Request Header Fields Too Large",
            "text/plain",
            b"",
        )
        .await;
    };
    if head.is_empty() {
        return Ok(());
    }
    in_head.store(false, Ordering::Relaxed);
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match scrape(socket).await {
            Ok(text) => {
                let body = if method == "HEAD" {
                    &[][..]
                } else {
                    text.as_bytes()
                };
                reply(&mut stream, "200 OK", CONTENT_TYPE, body).await
            }
            Err(e) => {
                let msg = format!("cannot read {}: {e}\n", socket.display());
                reply(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    msg.as_bytes(),
                )
                .await
            }
        },
        ("GET" | "HEAD", "/") => {
            let body = b"nsaux exporter: metrics at /metrics\n";
            reply(&mut stream, "200 OK", "text/plain", body).await
        }
        ("GET" | "HEAD", _) => {
            reply(&mut stream, "404 Not Found", "text/plain", b"not found\n").await
        }
        _ => {
            reply(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
            )
            .await
        }
    }
}

/// Reads a request head (to its empty line); `None` when it is longer than [`MAX_HEAD`],
/// an empty head when the client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(head))
}

/// One exposition from the daemon's observation socket.
async fn scrape(socket: &Path) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}
