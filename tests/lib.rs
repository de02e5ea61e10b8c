//! Harness for end-to-end tests and benchmarks: `framegate-server`
//! processes, a real nginx rendered from `deploy/nginx/`, and TLS
//! certificates made at test time with rcgen. Everything listens on
//! loopback ports and is stopped (by PID) when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framegate_wire::{
    Arguments, ClientEvent, ClientReactor, ErrorKind, FrameDecoder, MEDIA_TYPE, RequestId,
};

pub mod garage;
pub mod hostile;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768–60999 by default): a port
    // the kernel hands out for `:0` can be taken as the local port of some
    // test's outgoing connection before the server binds it (seen with
    // 10,000 concurrent connections: "Address already in use").
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id() % 8_000;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + u16::try_from((start + n * 7) % 12_000).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    wait_for_port_within(port, child, what, Duration::from_secs(5));
}

fn wait_for_port_within(port: u16, child: &mut Child, what: &str, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not start listening on {port}");
}

/// The `framegate-server` binary of this workspace, built (or brought up
/// to date) once per test process: the e2e crate does not depend on the
/// server crate, so `cargo test` alone would run a stale binary.
/// `FRAMEGATE_SERVER_BIN` names another binary instead.
pub fn server_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            workspace_binary(
                "framegate-server",
                "framegate-server",
                "FRAMEGATE_SERVER_BIN",
            )
        })
        .clone()
}

/// The `framegate` CLI of this workspace, built like [`server_binary`]
/// (`FRAMEGATE_CLIENT_BIN` names another).
pub fn client_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("framegate-client", "framegate", "FRAMEGATE_CLIENT_BIN"))
        .clone()
}

fn workspace_binary(package: &str, bin: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", package, "--bin", bin]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building {bin} failed");
    target.join(profile).join(bin)
}

/// A `framegate-server` process.
pub struct Gateway {
    child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its metrics port.
    pub metrics_port: u16,
    tree: PathBuf,
    token_file: PathBuf,
    extra: Vec<String>,
    fd_limit: Option<u64>,
    env: Vec<(String, String)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts a gateway serving `tree` with writes allowed behind `token_file`.
    pub fn start(tree: &Path, token_file: &Path, extra: &[&str]) -> Gateway {
        Gateway::start_at(tree, token_file, free_port(), extra)
    }

    /// Like [`start`](Self::start), on a given HTTP port.
    pub fn start_at(tree: &Path, token_file: &Path, port: u16, extra: &[&str]) -> Gateway {
        Gateway::launch(tree, token_file, port, extra, None)
    }

    /// Like [`start`](Self::start), under a descriptor limit of `fd_limit`
    /// (soft and hard, so the server cannot raise it): started through
    /// `sh -c 'ulimit -n N && exec ...'`, the same process id.
    pub fn start_with_fd_limit(
        tree: &Path,
        token_file: &Path,
        fd_limit: u64,
        extra: &[&str],
    ) -> Gateway {
        Gateway::launch(tree, token_file, free_port(), extra, Some(fd_limit))
    }

    /// Like [`start`](Self::start), with `env` added to its environment
    /// (e.g. an object store's credentials; `tree` is then its URL).
    pub fn start_with_env(
        tree: &Path,
        token_file: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Gateway {
        Gateway::launch_env(tree, token_file, free_port(), extra, None, env.to_vec())
    }

    fn launch(
        tree: &Path,
        token_file: &Path,
        port: u16,
        extra: &[&str],
        fd_limit: Option<u64>,
    ) -> Gateway {
        Gateway::launch_env(tree, token_file, port, extra, fd_limit, Vec::new())
    }

    fn launch_env(
        tree: &Path,
        token_file: &Path,
        port: u16,
        extra: &[&str],
        fd_limit: Option<u64>,
        env: Vec<(String, String)>,
    ) -> Gateway {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let metrics_port = free_port();
        let child = Self::spawn(
            tree,
            token_file,
            port,
            metrics_port,
            &extra,
            fd_limit,
            &env,
            Duration::from_secs(15),
        );
        Gateway {
            child,
            port,
            metrics_port,
            tree: tree.to_path_buf(),
            token_file: token_file.to_path_buf(),
            extra,
            fd_limit,
            env,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        tree: &Path,
        token_file: &Path,
        port: u16,
        metrics_port: u16,
        extra: &[String],
        fd_limit: Option<u64>,
        env: &[(String, String)],
        limit: Duration,
    ) -> Child {
        let mut command = match fd_limit {
            None => Command::new(server_binary()),
            Some(n) => {
                // `ulimit -n` sets the soft and the hard limit; `exec` keeps
                // the process id (no `pre_exec`: no unsafe code).
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(server_binary());
                sh
            }
        };
        let mut child = command
            .arg("serve")
            .arg(tree)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(["--allow-writes", "--write-token-file"])
            .arg(token_file)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            // `FRAMEGATE_E2E_SERVER_LOG=debug` to see what a server did.
            .env(
                "FRAMEGATE_LOG",
                std::env::var("FRAMEGATE_E2E_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for_port_within(port, &mut child, "framegate-server", limit);
        wait_for_port_within(metrics_port, &mut child, "framegate-server metrics", limit);
        child
    }

    /// `kill -9`: no chance to clean up. Waits until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same tree, port and options (after
    /// [`kill`](Self::kill) or [`stop`](Self::stop)); returns once it listens,
    /// that is after whatever recovery it does at start-up.
    pub fn restart(&mut self) {
        self.kill();
        self.metrics_port = free_port();
        self.child = Self::spawn(
            &self.tree,
            &self.token_file,
            self.port,
            self.metrics_port,
            &self.extra,
            self.fd_limit,
            &self.env,
            Duration::from_secs(60),
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// A metric value from its Prometheus text (sum over matching lines).
    pub fn metric(&self, prefix: &str) -> f64 {
        let text = http_get_plain(self.metrics_port, "/metrics");
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Peak resident memory (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.pid())
    }

    /// Resets the peak-RSS counter (Linux `clear_refs`).
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

/// VmHWM of a process in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn http_get_plain(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
pub struct Tls {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

impl Tls {
    /// Generates the certificates into `dir`.
    pub fn generate(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "framegate test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let tls = Tls {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&tls.ca, ca_cert.pem()).unwrap();
        std::fs::write(&tls.cert, leaf_cert.pem()).unwrap();
        std::fs::write(&tls.key, leaf_key.serialize_pem()).unwrap();
        tls
    }
}

impl Tls {
    /// A self-signed certificate for localhost that is its own CA
    /// (`CA:TRUE`, what `openssl req -x509` makes): `ca` and `cert` are the
    /// same file. TLS clients (rustls) refuse it as a server's certificate.
    pub fn self_signed_ca(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let tls = Tls {
            ca: dir.join("self.pem"),
            cert: dir.join("self.pem"),
            key: dir.join("self-key.pem"),
        };
        std::fs::write(&tls.cert, cert.pem()).unwrap();
        std::fs::write(&tls.key, key.serialize_pem()).unwrap();
        tls
    }
}

/// The nginx binary (installed by `.ci/run`).
/// `FRAMEGATE_NGINX` names another; else `nginx` on `PATH`, else the usual
/// sbin places (Debian puts it in /usr/sbin, often not on a user's PATH).
pub fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FRAMEGATE_NGINX") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .expect("nginx is not installed: .ci/run installs it with apt-get")
}

/// A real nginx running `deploy/nginx/framegate.conf` rendered for the test.
pub struct Nginx {
    child: Child,
    /// The HTTPS port.
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx in front of `upstreams` (ports), with the static mirror
    /// at `/static/` serving `static_root`. `extra_http` is added to the
    /// `http` block (e.g. gzip for benchmarks).
    pub fn start(
        dir: &Path,
        tls: &Tls,
        upstreams: [u16; 2],
        static_root: &Path,
        extra_http: &str,
    ) -> Nginx {
        let port = free_port();
        let deploy = repo_root().join("deploy/nginx");
        let proxy = dir.join("framegate-proxy.conf");
        std::fs::copy(deploy.join("framegate-proxy.conf"), &proxy).unwrap();
        let site = std::fs::read_to_string(deploy.join("framegate.conf"))
            .unwrap()
            .replace("{{UPSTREAM_1}}", &format!("127.0.0.1:{}", upstreams[0]))
            .replace("{{UPSTREAM_2}}", &format!("127.0.0.1:{}", upstreams[1]))
            .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
            .replace("{{SERVER_NAME}}", "localhost")
            .replace("{{CERT}}", &tls.cert.display().to_string())
            .replace("{{KEY}}", &tls.key.display().to_string())
            .replace("{{STATIC_ROOT}}", &static_root.display().to_string())
            .replace("{{PROXY_PARAMS}}", &proxy.display().to_string());
        assert!(!site.contains("{{"), "every placeholder is rendered");
        std::fs::write(dir.join("framegate-site.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             types {{ text/plain txt; application/octet-stream bin; application/json json; }}\n\
             default_type application/octet-stream;\n  sendfile on;\n  {extra_http}\n  include {d}/framegate-site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let mut child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "nginx");
        Nginx {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// The HTTPS base URL of `path` (e.g. `/` or `/static/`).
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---- framegate messages built from the core crate ---------------------------

/// What one request of a message got.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The whole answer.
    Ok(Bytes),
    /// An error-response.
    Err {
        /// `protocol` (true) or `application`.
        protocol: bool,
        /// The error code (§10).
        code: String,
        /// The message.
        message: String,
    },
    /// No complete answer before the response ended.
    Unanswered,
}

impl Outcome {
    /// The answer decoded as CBOR, if it is one.
    pub fn cbor(&self) -> Option<ciborium::Value> {
        match self {
            Outcome::Ok(b) => ciborium::from_reader(&b[..]).ok(),
            _ => None,
        }
    }

    /// The error code, if it is an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Outcome::Err { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Short text for reports (answers longer than 64 bytes are summarized).
    pub fn describe(&self) -> String {
        match self {
            Outcome::Ok(b) if b.len() > 64 => format!("{} bytes", b.len()),
            Outcome::Ok(b) => match self.cbor() {
                Some(v) => format!("cbor {v:?}"),
                None => format!("bytes {:?}", String::from_utf8_lossy(b)),
            },
            Outcome::Err {
                protocol,
                code,
                message,
            } => format!(
                "{} error {code} ({message})",
                if *protocol { "protocol" } else { "application" }
            ),
            Outcome::Unanswered => "unanswered".into(),
        }
    }
}

/// Request arguments from name/value pairs.
pub fn arguments(pairs: &[(&str, &[u8])]) -> Arguments {
    let mut a = Arguments::new();
    for (k, v) in pairs {
        a.insert(k, Bytes::copy_from_slice(v)).unwrap();
    }
    a
}

/// The requests of one message, built with the core crate's client reactor
/// (so frames can be cut and interleaved at will), and the decoding of the
/// answers. Slots are request indices in the order they were started.
#[derive(Default)]
pub struct Batch {
    client: ClientReactor,
    ids: Vec<RequestId>,
}

impl Batch {
    /// An empty message.
    pub fn new() -> Self {
        Batch::default()
    }

    /// A whole request; returns its slot.
    pub fn add(&mut self, name: &str, pairs: &[(&str, &[u8])], data: Option<Bytes>) -> usize {
        let id = self.client.request(name, &arguments(pairs), data).unwrap();
        self.ids.push(id);
        self.ids.len() - 1
    }

    /// Starts a request whose data follows with [`data`](Self::data).
    pub fn start(&mut self, name: &str, pairs: &[(&str, &[u8])]) -> usize {
        let id = self
            .client
            .start_request(name, &arguments(pairs), true)
            .unwrap();
        self.ids.push(id);
        self.ids.len() - 1
    }

    /// More data for a started request; `last` completes it.
    pub fn data(&mut self, slot: usize, data: Bytes, last: bool) {
        self.client.send_data(self.ids[slot], data, last).unwrap();
    }

    /// Requests so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The frames queued since the last call, as body bytes.
    pub fn take_body(&mut self) -> Bytes {
        let mut buf = BytesMut::new();
        self.client.write_transmit(&mut buf);
        buf.freeze()
    }

    /// Decodes a whole response body into one outcome per slot.
    pub fn decode(&mut self, bytes: &[u8]) -> Vec<Outcome> {
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::from(bytes);
        // A malformed tail ends the decoding; its requests stay unanswered.
        while let Ok(Some(frame)) = dec.decode_eof(&mut buf) {
            if self.client.handle_frame(frame).is_err() {
                break;
            }
        }
        self.client.handle_input_ended();
        let mut data: HashMap<RequestId, BytesMut> = HashMap::new();
        let mut outcome: HashMap<RequestId, Outcome> = HashMap::new();
        while let Some(ev) = self.client.poll_event() {
            match ev {
                ClientEvent::Data {
                    request_id,
                    data: d,
                } => data.entry(request_id).or_default().extend_from_slice(&d),
                ClientEvent::End { request_id } => {
                    let bytes = data.remove(&request_id).unwrap_or_default().freeze();
                    outcome.insert(request_id, Outcome::Ok(bytes));
                }
                ClientEvent::Failed {
                    request_id,
                    kind,
                    error,
                } => {
                    data.remove(&request_id);
                    outcome.insert(
                        request_id,
                        Outcome::Err {
                            protocol: kind == ErrorKind::Protocol,
                            code: error.code.as_str().to_string(),
                            message: error.message.clone(),
                        },
                    );
                }
                ClientEvent::Unanswered { request_id } => {
                    outcome.insert(request_id, Outcome::Unanswered);
                }
                _ => {}
            }
        }
        self.ids
            .iter()
            .map(|id| outcome.remove(id).unwrap_or(Outcome::Unanswered))
            .collect()
    }
}

/// An HTTP client for messages: separate connections per client, bounded
/// waits.
pub fn message_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// POSTs a message body to `url` (an `.../.framegate/ro|rw` endpoint) with
/// the bearer `token`; returns the response body, or why there is none.
pub async fn post_message(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: reqwest::Body,
) -> Result<Bytes, String> {
    let resp = http
        .post(url)
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("POST {url}: status {status}: {text}"));
    }
    resp.bytes()
        .await
        .map_err(|e| format!("POST {url}: response body: {e}"))
}

/// A request body fed piece by piece from the test (chunked encoding), so a
/// test knows how much of a message it has handed to the connection.
pub fn fed_body() -> (tokio::sync::mpsc::Sender<Bytes>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

// ---- seeded randomness and trees on disk -----------------------------------

/// A small seeded PRNG (SplitMix64): runs are reproducible from the printed
/// seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed named by the environment variable `var`, else one from the
    /// clock.
    pub fn seed_from_env(var: &str) -> u64 {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a path on disk is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory.
    Dir,
    /// A regular file with this content.
    File(Vec<u8>),
    /// Anything else (symlink, ...).
    Other,
}

/// Every path below `root` (relative, `/`-separated, sorted), files with
/// their content. Entries vanishing during the walk are skipped.
pub fn walk_tree(root: &Path) -> std::collections::BTreeMap<String, Entry> {
    fn go(root: &Path, rel: &str, out: &mut std::collections::BTreeMap<String, Entry>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                out.insert(child.clone(), Entry::Dir);
                go(root, &child, out);
            } else if ft.is_file() {
                if let Ok(content) = std::fs::read(e.path()) {
                    out.insert(child, Entry::File(content));
                }
            } else {
                out.insert(child, Entry::Other);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    go(root, "", &mut out);
    out
}

/// Every path below `root` (relative, sorted) without reading contents.
pub fn list_tree(root: &Path) -> Vec<String> {
    fn go(root: &Path, rel: &str, out: &mut Vec<String>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            out.push(child.clone());
            if is_dir {
                go(root, &child, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, "", &mut out);
    out.sort();
    out
}
