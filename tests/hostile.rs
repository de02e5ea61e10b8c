//! Support for the hostile suite (`e2e/hostile_*.rs`): the size knob, what
//! `/proc` says about a server process (memory, descriptors, its sockets),
//! bystander clients, and raw HTTP and byte-stream plumbing for clients that
//! misbehave on purpose.
//!
//! Not for well-behaved clients: those use [`crate::Batch`] and
//! [`crate::post_message`] directly.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use framegate_wire::frame::ErrorResponseFlags;
use framegate_wire::{ErrorPayload, Frame, FrameBody, FrameDecoder, MEDIA_TYPE, RequestId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Batch, Gateway, Outcome, free_port, post_message};

/// The write token of every hostile-suite gateway.
pub const TOKEN: &str = "hostile-token";

/// The byte-stream preamble the hostile clients send (§8).
pub const PREAMBLE: &[u8] = b"framegate/1 accept-encoding=identity\n";

/// The server's answer to [`PREAMBLE`].
pub const OK_LINE: &[u8] = b"framegate/1 ok\n";

// ---- sizes and reports -------------------------------------------------------

/// Whether `FRAMEGATE_HOSTILE=full` asks for the original (large) sizes.
pub fn full() -> bool {
    std::env::var("FRAMEGATE_HOSTILE").is_ok_and(|v| v.trim() == "full")
}

/// `ci` by default, `full` with `FRAMEGATE_HOSTILE=full`.
pub fn size<T>(ci: T, full_size: T) -> T {
    if full() { full_size } else { ci }
}

/// Prints one parseable line: `HOSTILE case=N key=value ...`.
pub fn report(case: &str, fields: &[(&str, String)]) {
    let mut line = format!("HOSTILE case={case}");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    eprintln!("{line}");
}

/// Seconds with two decimals, for reports.
pub fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Milliseconds with one decimal, for reports.
pub fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The `p`-th percentile (0..=100) of `samples`, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---- the server process as /proc sees it -------------------------------------

fn status_field_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Resident memory now (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_field_kib(pid, "VmRSS:") / 1024.0
}

/// Open descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A process's descriptors once the last exchange has wound down: the
/// fewest seen over 300 ms (a bystander's connection may still be closing).
pub async fn quiet_fd_count(pid: u32) -> usize {
    let mut fewest = fd_count(pid);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fewest = fewest.min(fd_count(pid));
    }
    fewest
}

/// The soft "Max open files" of a process.
pub fn fd_limit_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Inodes of the sockets a process holds open.
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// TCP state `ESTABLISHED` in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;

/// One line of `/proc/net/tcp` (IPv4; the suite listens on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local port.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// State (`01` established, `04` fin-wait-1, ...).
    pub state: u8,
    /// Bytes queued for sending.
    pub tx_queue: u64,
    /// Bytes received, not read by the application.
    pub rx_queue: u64,
    /// Socket inode (0 once no descriptor holds it).
    pub inode: u64,
}

/// The IPv4 TCP sockets of this network namespace.
pub fn tcp_table() -> Vec<TcpEntry> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| {
        addr.split(':')
            .nth(1)
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some(TcpEntry {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                tx_queue: u64::from_str_radix(tx, 16).ok()?,
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// When the server gave up on a connection whose client does not read.
#[derive(Debug, Clone, Copy)]
pub struct CloseTimes {
    /// Last time the client's receive queue grew (the buffers were full
    /// from then on).
    pub stalled: Instant,
    /// First time the server's socket left `ESTABLISHED` (it shut its side).
    pub shut: Option<Instant>,
    /// First time the server no longer held the socket's descriptor.
    pub released: Option<Instant>,
}

impl CloseTimes {
    /// From the stall to the server's first sign of closing (shut or
    /// released), if it closed.
    pub fn closed_after(&self) -> Option<Duration> {
        let first = match (self.shut, self.released) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(first.saturating_duration_since(self.stalled))
    }
}

/// Watches the server-side sockets of connections (by the clients' local
/// ports) to server `pid` on `server_port`, every 20 ms, until the server
/// released them all or `limit` passed.
pub async fn watch_closes(
    pid: u32,
    server_port: u16,
    client_ports: &[u16],
    limit: Duration,
) -> Vec<CloseTimes> {
    let started = Instant::now();
    let mut times: Vec<CloseTimes> = client_ports
        .iter()
        .map(|_| CloseTimes {
            stalled: started,
            shut: None,
            released: None,
        })
        .collect();
    let mut rx_seen = vec![0u64; client_ports.len()];
    let mut inode: Vec<Option<u64>> = vec![None; client_ports.len()];
    while started.elapsed() < limit {
        let now = Instant::now();
        let table = tcp_table();
        let held = socket_inodes(pid);
        for (i, &client) in client_ports.iter().enumerate() {
            let client_side = table
                .iter()
                .find(|e| e.local_port == client && e.remote_port == server_port);
            if let Some(c) = client_side
                && c.rx_queue > rx_seen[i]
            {
                rx_seen[i] = c.rx_queue;
                times[i].stalled = now;
            }
            let server_side = table
                .iter()
                .find(|e| e.local_port == server_port && e.remote_port == client);
            if let Some(s) = server_side
                && s.inode != 0
            {
                inode[i].get_or_insert(s.inode);
            }
            let t = &mut times[i];
            if t.shut.is_none() && server_side.is_none_or(|s| s.state != TCP_ESTABLISHED) {
                t.shut = Some(now);
            }
            if t.released.is_none() && inode[i].is_some_and(|ino| !held.contains(&ino)) {
                t.released = Some(now);
            }
        }
        if times.iter().all(|t| t.released.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times
}

/// A metric of a gateway (the sum of the Prometheus lines starting with
/// `prefix`) from its metrics port, or `None` if no answer came within a
/// second (e.g. the server is out of descriptors).
pub async fn metric(metrics_port: u16, prefix: &str) -> Option<f64> {
    let fetch = async {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .ok()?;
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        sock.write_all(request.as_bytes()).await.ok()?;
        let mut text = String::new();
        sock.read_to_string(&mut text).await.ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; whether it held.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- running a case -----------------------------------------------------------

/// One hostile case at a time in a test process: they measure time and
/// memory, and two at once on two cores would measure each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `case` on a fresh runtime, one case at a time, bounded by `limit`.
/// Gateways owned by the future are killed when it is dropped.
pub fn run<F: Future<Output = ()>>(limit: Duration, case: F) {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if tokio::time::timeout(limit, case).await.is_err() {
            panic!("case did not finish within {limit:?}");
        }
    });
}

/// A temporary served tree and the token file of its gateway.
pub struct Site {
    _dir: tempfile::TempDir,
    /// The served directory.
    pub tree: PathBuf,
    /// The write token file.
    pub token: PathBuf,
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

impl Site {
    /// An empty tree with `small.txt` (the bystanders' file) in it.
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        std::fs::write(tree.join(SMALL), SMALL_CONTENT).unwrap();
        Site {
            _dir: dir,
            tree,
            token,
        }
    }

    /// Writes a file below the tree.
    pub fn write(&self, rel: &str, content: &[u8]) {
        let path = self.tree.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A gateway on this tree with `extra` options.
    pub fn gateway(&self, extra: &[&str]) -> Gateway {
        Gateway::start(&self.tree, &self.token, extra)
    }

    /// A gateway that also serves byte streams (`--tcp`); and that port.
    pub fn gateway_tcp(&self, extra: &[&str]) -> (Gateway, u16) {
        let port = free_port();
        let listen = format!("--tcp=127.0.0.1:{port}");
        let mut args = vec![listen.as_str()];
        args.extend_from_slice(extra);
        let gw = Gateway::start(&self.tree, &self.token, &args);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "--tcp {port} never listened");
            std::thread::sleep(Duration::from_millis(25));
        }
        (gw, port)
    }
}

/// The `ro` endpoint of a gateway.
pub fn ro(gw: &Gateway) -> String {
    format!("{}/.framegate/ro", gw.url())
}

// ---- bystanders ----------------------------------------------------------------

/// The bystanders' file.
pub const SMALL: &str = "small.txt";

/// Its six bytes.
pub const SMALL_CONTENT: &[u8] = b"hello\n";

/// One `get` message from a normal client on a new connection; the outcome
/// and how long the whole exchange took.
pub async fn get_once(url: &str, path: &str) -> (Result<Outcome, String>, Duration) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // From the connection's opening, not the client's making (which reads
    // the system's root certificates).
    let started = Instant::now();
    let mut batch = Batch::new();
    batch.add("get", &[("path", path.as_bytes())], None);
    let body = reqwest::Body::from(batch.take_body());
    let got = post_message(&http, url, TOKEN, body)
        .await
        .map(|b| batch.decode(&b).remove(0));
    (got, started.elapsed())
}

/// A bystander's `get` of [`SMALL`]: asserts the answer and returns how
/// long it took.
pub async fn bystander(gw: &Gateway) -> Duration {
    let (got, took) = get_once(&ro(gw), SMALL).await;
    match got {
        Ok(Outcome::Ok(b)) if b.as_ref() == SMALL_CONTENT => took,
        other => panic!("bystander got {other:?} after {took:?}"),
    }
}

/// Bystanders one after another every `every` until `stop` is set; their
/// latencies.
pub async fn bystanders_until(
    gw_url: String,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let (got, took) = get_once(&format!("{gw_url}/.framegate/ro"), SMALL).await;
        match got {
            Ok(Outcome::Ok(b)) if b.as_ref() == SMALL_CONTENT => out.push(took),
            other => panic!("bystander got {other:?} after {took:?}"),
        }
        tokio::time::sleep(every).await;
    }
    out
}

// ---- raw clients -----------------------------------------------------------------

/// The head of a POST of `len` body bytes to `/.framegate/ro`.
pub fn post_head(port: u16, len: usize) -> String {
    format!(
        "POST /.framegate/ro HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {MEDIA_TYPE}\r\n\
         Accept: {MEDIA_TYPE}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// One message of `n` `get`s of `path`, as body bytes.
pub fn gets(n: usize, path: &[u8]) -> Bytes {
    let mut batch = Batch::new();
    for _ in 0..n {
        batch.add("get", &[("path", path)], None);
    }
    batch.take_body()
}

/// Posts `body` as one message to `/.framegate/ro` from a socket with a
/// 4 KiB receive buffer, and reads nothing: a client that never reads (or
/// not yet). `close` asks the server to close the connection after its
/// answer (`Connection: close`), so a later read ends with the answer.
pub async fn post_unread(port: u16, body: &[u8], close: bool) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sock = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let mut head = post_head(port, body.len());
    if close {
        head.insert_str(head.len() - 2, "Connection: close\r\n");
    }
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    sock
}

/// The codes of the protocol errors among `frames`.
pub fn protocol_errors(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::ErrorResponse(e) if e.flags.contains(ErrorResponseFlags::PROTOCOL) => Some(
                ErrorPayload::decode(&e.payload)
                    .map_or_else(|e| format!("undecodable({e})"), |p| p.code.as_str().into()),
            ),
            _ => None,
        })
        .collect()
}

/// A byte-stream session: connected, preamble sent and accepted.
pub async fn stream_session(port: u16) -> tokio::net::TcpStream {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    sock.write_all(PREAMBLE).await.unwrap();
    let mut ok = [0u8; OK_LINE.len()];
    sock.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, OK_LINE);
    sock
}

/// Reads a byte-stream session's frames until `requests` requests are
/// answered (an answer's `eos` or an error-response), keeping the write
/// side open; the bytes read.
pub async fn read_answers(
    sock: &mut tokio::net::TcpStream,
    requests: usize,
) -> Result<Bytes, String> {
    let mut all = BytesMut::new();
    let mut pending = BytesMut::new();
    let mut decoder = FrameDecoder::default();
    let mut done: HashMap<RequestId, ()> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    while done.len() < requests {
        let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed after {} answers", done.len()));
        }
        all.extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Some(frame) = decoder.decode(&mut pending).map_err(|e| e.to_string())? {
            let last = match &frame.body {
                FrameBody::BytesResponse(b) => b.is_last() == Some(true),
                FrameBody::ErrorResponse(_) => true,
                _ => false,
            };
            if last && frame.request_id != RequestId::CONNECTION {
                done.insert(frame.request_id, ());
            }
        }
    }
    Ok(all.freeze())
}

// ---- HTTP/2 by hand ------------------------------------------------------------

/// The client preface and an empty SETTINGS frame (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// An HTTP/2 frame (RFC 9113 §4.1).
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A PING frame (RFC 9113 §6.7).
pub const H2_PING: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08";

/// Reads (and drops) what comes on `sock` until the server closes it,
/// sending an HTTP/2 PING a second if `ping`; how long after `started` it
/// closed, or `None` if still open after `limit`.
pub async fn read_until_closed(
    sock: &mut tokio::net::TcpStream,
    started: Instant,
    ping: bool,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 16 * 1024];
    let mut next_ping = Instant::now() + Duration::from_secs(1);
    loop {
        let wait = next_ping.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, sock.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {
                if started.elapsed() > limit {
                    return None;
                }
                if ping && sock.write_all(H2_PING).await.is_err() {
                    return Some(started.elapsed());
                }
                next_ping += Duration::from_secs(1);
            }
        }
    }
}
