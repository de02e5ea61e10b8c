//! Signals, against the real binary: SIGTERM, SIGINT and SIGHUP stop
//! gracefully (answers in flight finish, exit 0); a grace period that runs
//! out cuts and exits 3; the stdio session ends promptly on SIGTERM and on
//! its idle timeout.
//!
//! Every server is a child process killed when its guard drops; every wait
//! is bounded. The big transfers run one at a time (2-core CI machines).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::Batch;
use framegate_wire::{ClientEvent, FrameDecoder, MEDIA_TYPE, RequestId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

/// Exit status of a stop that had to cut work in flight.
const EXIT_CUT: i32 = 3;

/// One big transfer at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- the server process ------------------------------------------------------------

/// A `framegate-server serve` child, killed on drop.
struct Server {
    child: Child,
    stderr: PathBuf,
    http: Option<String>,
    tcp: Option<String>,
    _logs: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `serve DIR ARGS...` and waits for its "serving" lines.
    fn start(dir: &Path, args: &[&str]) -> Server {
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
            .arg("serve")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let no_http = args.contains(&"--no-http");
        let with_tcp = args.iter().any(|a| a.starts_with("--tcp"));
        let expected = usize::from(!no_http) + usize::from(with_tcp);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().take(expected) {
                if tx.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            stderr,
            http: None,
            tcp: None,
            _logs: logs,
        };
        for _ in 0..expected {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no serving line; stderr: {}", server.log()));
            let addr = |scheme: &str| {
                line.split(scheme)
                    .nth(1)
                    .map(|rest| rest.trim_end_matches('/').to_string())
            };
            if let Some(a) = addr("http://") {
                server.http = Some(a);
            } else if let Some(a) = addr("framegate://") {
                server.tcp = Some(a);
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        server
    }

    fn http(&self) -> &str {
        self.http.as_deref().unwrap()
    }

    fn tcp(&self) -> &str {
        self.tcp.as_deref().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// The exit status, within `limit`.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        exit_within(&mut self.child, limit, &self.stderr).await
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

async fn exit_within(child: &mut Child, limit: Duration, stderr: &Path) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let log = std::fs::read_to_string(stderr).unwrap_or_default();
            panic!("still running after {limit:?}; stderr:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- content and answers -------------------------------------------------------

/// The test content: a pure function of the offset, never periodic, so a
/// lost, repeated or misplaced piece shows.
fn content(offset: u64, len: usize) -> Vec<u8> {
    fn word(k: u64) -> [u8; 8] {
        let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }
    let mut out = Vec::with_capacity(len + 16);
    let mut k = offset / 8;
    while (out.len() as u64) < (offset % 8) + len as u64 {
        out.extend_from_slice(&word(k));
        k += 1;
    }
    out.drain(..(offset % 8) as usize);
    out.truncate(len);
    out
}

/// Writes `size` bytes of [`content`] to `path`.
fn write_content(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(4 * MIB) as usize;
        file.write_all(&content(offset, len)).unwrap();
        offset += len as u64;
    }
    file.flush().unwrap();
}

/// A message with one `get` of `path` and its answer, decoded as it
/// arrives and checked against [`content`].
struct Download {
    batch: Batch,
    decoder: FrameDecoder,
    input: BytesMut,
    id: RequestId,
    received: u64,
    ended: bool,
}

impl Download {
    fn new(path: &str) -> Download {
        let mut batch = Batch::new();
        batch.add("get", &[("path", path.as_bytes())], None);
        let id = batch.ids[0];
        Download {
            batch,
            decoder: FrameDecoder::default(),
            input: BytesMut::new(),
            id,
            received: 0,
            ended: false,
        }
    }

    /// The frames of the requests added so far (and not yet sent).
    fn body(&mut self) -> bytes::Bytes {
        self.batch.body()
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        while let Some(frame) = self.decoder.decode(&mut self.input).unwrap() {
            self.batch.client.handle_frame(frame).unwrap();
        }
        self.drain_events();
    }

    fn finish(&mut self) {
        while let Some(frame) = self.decoder.decode_eof(&mut self.input).unwrap() {
            self.batch.client.handle_frame(frame).unwrap();
        }
        self.batch.client.handle_input_ended();
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.batch.client.poll_event() {
            match event {
                ClientEvent::Data { request_id, data } if request_id == self.id => {
                    assert!(!self.ended, "data after the end");
                    assert!(
                        data[..] == content(self.received, data.len())[..],
                        "wrong bytes at offset {}",
                        self.received
                    );
                    self.received += data.len() as u64;
                }
                ClientEvent::End { request_id } if request_id == self.id => self.ended = true,
                ClientEvent::Failed {
                    request_id, error, ..
                } if request_id == self.id => panic!("the get failed: {error:?}"),
                _ => {}
            }
        }
    }

    /// The whole answer arrived, byte for byte.
    fn assert_complete(&self, size: u64) {
        assert_eq!(self.received, size, "answer length");
        assert!(self.ended, "the answer's end frame arrived");
    }
}

// ---- HTTP --------------------------------------------------------------------

/// POSTs a `get` of `big.bin` (of `size` bytes), reads about 1 MiB of the
/// answer, sends `signal`, reads the rest; every byte must arrive and the
/// server exit 0.
async fn http_answer_survives(signal: &str, size: u64) {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), size);
    let mut server = Server::start(dir.path(), &["--listen", "127.0.0.1:0"]);
    let mut download = Download::new("big.bin");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut response = client
        .post(format!("http://{}/.framegate/ro", server.http()))
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .body(download.body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    while download.received < MIB {
        let chunk = response.chunk().await.unwrap().expect("answer cut early");
        download.feed(&chunk);
    }
    server.signal(signal);
    // Let the stop take hold while the answer is still in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server stopped before finishing: {}",
        server.log()
    );
    while let Some(chunk) = response.chunk().await.unwrap() {
        download.feed(&chunk);
    }
    download.finish();
    download.assert_complete(size);
    let status = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.log()
    );
    assert!(server.log().contains(signal), "the log names the signal");
    // The listener is gone.
    assert!(
        tokio::net::TcpStream::connect(server.http()).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn sigterm_lets_a_256_mib_http_answer_finish_then_exits_0() {
    http_answer_survives("TERM", 256 * MIB).await;
}

#[tokio::test]
async fn sighup_lets_a_256_mib_http_answer_finish_then_exits_0() {
    http_answer_survives("HUP", 256 * MIB).await;
}

#[tokio::test]
async fn sigint_with_nothing_in_flight_exits_0_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--listen", "127.0.0.1:0"]);
    server.signal("INT");
    let status = server.exit_within(Duration::from_secs(3)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.log()
    );
}

/// Opens a POST of a `get` of `big.bin` and reads nothing of the answer.
async fn stalled_http_download(addr: &str) -> tokio::net::TcpStream {
    let mut download = Download::new("big.bin");
    let body = download.body();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /.framegate/ro HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {MEDIA_TYPE}\r\nAccept: {MEDIA_TYPE}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    sock
}

#[tokio::test]
async fn http_grace_expiry_cuts_and_exits_3() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), 64 * MIB);
    let mut server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "1s"],
    );
    let _sock = stalled_http_download(server.http()).await;
    // The answer is under way (and stuck on the full socket).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    server.signal("TERM");
    let status = server.exit_within(Duration::from_secs(6)).await;
    assert_eq!(
        status.code(),
        Some(EXIT_CUT),
        "{status}; stderr:\n{}",
        server.log()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the grace period"
    );
    let log = server.log();
    assert!(
        log.contains("cutting 1 connection(s) with 1 message(s) in flight"),
        "{log}"
    );
}

#[tokio::test]
async fn a_second_signal_cuts_at_once_and_exits_3() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), 64 * MIB);
    let mut server = Server::start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--shutdown-grace", "60s"],
    );
    let _sock = stalled_http_download(server.http()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "waits for the stalled answer"
    );
    server.signal("INT");
    let status = server.exit_within(Duration::from_secs(4)).await;
    assert_eq!(
        status.code(),
        Some(EXIT_CUT),
        "{status}; stderr:\n{}",
        server.log()
    );
}

// ---- TCP (§8) -------------------------------------------------------------------

const TCP_ONLY: [&str; 2] = ["--tcp=127.0.0.1:0", "--no-http"];

/// Connects, sends the preamble and a `get` of `big.bin`, and checks the
/// preamble's answer.
async fn tcp_download(addr: &str) -> (tokio::net::TcpStream, Download) {
    let mut download = Download::new("big.bin");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"framegate/1\n").await.unwrap();
    sock.write_all(&download.body()).await.unwrap();
    let mut ok = [0u8; 15];
    sock.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"framegate/1 ok\n");
    (sock, download)
}

async fn read_until(sock: &mut tokio::net::TcpStream, download: &mut Download, at_least: u64) {
    let mut buf = vec![0u8; 256 * 1024];
    while download.received < at_least {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "answer cut at {}", download.received);
        download.feed(&buf[..n]);
    }
}

async fn read_to_end(sock: &mut tokio::net::TcpStream, download: &mut Download) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = sock
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{e} after {} bytes of the answer", download.received));
        if n == 0 {
            break;
        }
        download.feed(&buf[..n]);
    }
    download.finish();
}

#[tokio::test]
async fn sigterm_lets_a_256_mib_tcp_answer_finish_then_exits_0() {
    let _heavy = HEAVY.lock().await;
    let size = 256 * MIB;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), size);
    let mut server = Server::start(dir.path(), &TCP_ONLY);
    let (mut sock, mut download) = tcp_download(server.tcp()).await;
    read_until(&mut sock, &mut download, MIB).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest = tokio::time::timeout(
        Duration::from_secs(120),
        read_to_end(&mut sock, &mut download),
    );
    rest.await.expect("the answer finished in time");
    download.assert_complete(size);
    drop(sock);
    let status = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.log()
    );
}

/// After the stop the server reads no more requests; one the client sent
/// anyway must not cost it the tail of the answer in flight (closing a
/// socket with unread input resets the connection, and a reset destroys
/// what was still queued for the client).
#[tokio::test]
async fn tcp_answer_survives_a_request_pipelined_after_the_stop() {
    let _heavy = HEAVY.lock().await;
    let size = 64 * MIB;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), size);
    std::fs::write(dir.path().join("small.txt"), b"small").unwrap();
    let mut server = Server::start(dir.path(), &TCP_ONLY);
    let (mut sock, mut download) = tcp_download(server.tcp()).await;
    read_until(&mut sock, &mut download, MIB).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    download.batch.add("get", &[("path", b"small.txt")], None);
    let second = download.body();
    sock.write_all(&second).await.unwrap();
    let rest = tokio::time::timeout(
        Duration::from_secs(60),
        read_to_end(&mut sock, &mut download),
    );
    rest.await.expect("the answer finished in time");
    download.assert_complete(size);
    drop(sock);
    let status = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn tcp_grace_expiry_cuts_and_exits_3() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    write_content(&dir.path().join("big.bin"), 64 * MIB);
    let mut args = TCP_ONLY.to_vec();
    args.extend(["--shutdown-grace", "1s"]);
    let mut server = Server::start(dir.path(), &args);
    // Sends the request and never reads the answer.
    let (_sock, _download) = tcp_download(server.tcp()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.signal("TERM");
    let status = server.exit_within(Duration::from_secs(6)).await;
    assert_eq!(
        status.code(),
        Some(EXIT_CUT),
        "{status}; stderr:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("cut 1 byte-stream connection(s)"), "{log}");
}

// ---- stdio -------------------------------------------------------------------

/// `serve --stdio DIR ARGS...` with stdin kept open (as under sshd).
struct StdioServer {
    child: Child,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl StdioServer {
    fn start(args: &[&str]) -> StdioServer {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
            .args(["serve", "--stdio"])
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        StdioServer {
            child,
            stderr,
            _logs: logs,
            _dir: dir,
        }
    }

    /// Sends the preamble and reads the answer to it.
    fn open_session(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"framegate/1\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "framegate/1 ok\n");
    }

    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        exit_within(&mut self.child, limit, &self.stderr).await
    }
}

#[tokio::test]
async fn stdio_session_ends_on_sigterm_within_2s() {
    let mut server = StdioServer::start(&[]);
    server.open_session();
    // Let the session sit idle, waiting for frames (stdin's reader blocked).
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&server.child, "TERM");
    let status = server.exit_within(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn stdio_sigterm_before_the_preamble_ends_it_within_2s() {
    let mut server = StdioServer::start(&[]);
    // Let the server start and wait for the preamble.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&server.child, "TERM");
    let status = server.exit_within(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn stdio_session_ends_on_its_idle_timeout() {
    let mut server = StdioServer::start(&["--idle-timeout", "1s"]);
    server.open_session();
    let started = Instant::now();
    let status = server.exit_within(Duration::from_secs(4)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "idle for 1 s"
    );
}
