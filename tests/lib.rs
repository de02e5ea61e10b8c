//! Harness for end-to-end tests and benchmarks: `framegate-server`
//! processes, a real nginx rendered from `deploy/nginx/`, and TLS
//! certificates made at test time with rcgen. Everything listens on
//! loopback ports and is stopped (by PID) when dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    for _ in 0..200 {
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

/// The `framegate-server` binary of this workspace (built if missing).
pub fn server_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join("framegate-server");
    if !path.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-p",
            "framegate-server",
            "--bin",
            "framegate-server",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building framegate-server failed"
        );
    }
    path
}

/// A `framegate-server` process.
pub struct Gateway {
    child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Its metrics port.
    pub metrics_port: u16,
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
        let (port, metrics_port) = (free_port(), free_port());
        let mut child = Command::new(server_binary())
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
            .env("FRAMEGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, "framegate-server");
        wait_for_port(metrics_port, &mut child, "framegate-server metrics");
        Gateway {
            child,
            port,
            metrics_port,
        }
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

/// The nginx binary (installed by `.ci/run`).
pub fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
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
