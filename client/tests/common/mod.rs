//! Shared helpers: a real framegate-server on loopback, a real nginx.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub mod proxy;

use framegate_server::{Gateway, GatewayConfig, Registry, ServeHandle, serve};

pub struct Smart {
    pub url: String,
    pub gateway: Arc<Gateway>,
    pub handle: ServeHandle,
}

pub async fn smart_server(root: &Path, configure: impl FnOnce(&mut GatewayConfig)) -> Smart {
    let mut config = GatewayConfig::new(root);
    configure(&mut config);
    serve_gateway(config, Registry::files()).await
}

/// A server of `root` with these commands (a test's own, or a policy).
pub async fn server_with(root: &Path, registry: Registry) -> Smart {
    serve_gateway(GatewayConfig::new(root), registry).await
}

async fn serve_gateway(config: GatewayConfig, registry: Registry) -> Smart {
    let gateway = Gateway::new(config, registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = serve(gateway.clone(), listener, None).await.unwrap();
    Smart {
        url: format!("http://{}/", handle.local_addr),
        gateway,
        handle,
    }
}

impl Smart {
    /// framegate messages the server has seen on `endpoint`.
    pub fn messages(&self, endpoint: &str) -> u64 {
        self.gateway
            .metrics
            .messages
            .with_label_values(&[endpoint])
            .get()
    }
}

/// A tree with a few files of every kind.
pub fn sample_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::create_dir_all(p.join("sub/deeper")).unwrap();
    std::fs::write(
        p.join("sub/a.bin"),
        (0..=255u8).cycle().take(100_000).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(p.join("sub/deeper/z.txt"), b"z").unwrap();
    std::fs::write(p.join("space name.txt"), b"spaced").unwrap();
    dir
}

pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768–60999 by default): a port
    // the kernel hands out for `:0` can become the local port of another
    // test's outgoing connection before the process under test binds it.
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

/// A real nginx serving `root` as static files on loopback:
/// `/json/` with `autoindex_format json`, `/html/` with HTML autoindex,
/// `/bare/` without any index.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn nginx_binary() -> PathBuf {
    // `FRAMEGATE_NGINX`, else `nginx` on PATH, else the usual sbin places.
    if let Some(path) = std::env::var_os("FRAMEGATE_NGINX") {
        return path.into();
    }
    which("nginx")
        .or_else(|| {
            ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .expect("nginx is not installed: .ci/run installs it (apt-get install nginx)")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

pub fn nginx(root: &Path) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let r = root.display();
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        location /json/ {{ alias {r}/; autoindex on; autoindex_format json; }}
        location /html/ {{ alias {r}/; autoindex on; }}
        location /bare/ {{ alias {r}/; }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut n = Nginx {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return n;
        }
        if let Ok(Some(status)) = n.child.try_wait() {
            let log = std::fs::read_to_string(n._dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not start on port {port}");
}

impl Nginx {
    pub fn url(&self, location: &str) -> String {
        format!("http://127.0.0.1:{}/{location}/", self.port)
    }
}

/// The `framegate-server` binary the workspace test run built (under
/// `CARGO_TARGET_DIR` when set).
pub fn server_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let p = target.join("debug/framegate-server");
    assert!(
        p.exists(),
        "build the workspace first (cargo test --workspace builds framegate-server)"
    );
    p.canonicalize().unwrap()
}

/// Runs the `framegate` CLI off the async runtime (no FRAMEGATE_TOKEN, no
/// netrc); returns (exit code, stdout, stderr).
pub async fn cli(args: Vec<String>) -> (i32, String, String) {
    cli_with(args, Vec::new()).await
}

/// [`cli`] with extra environment variables.
pub async fn cli_with(args: Vec<String>, env: Vec<(String, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = assert_cmd::Command::cargo_bin("framegate")
            .unwrap()
            .args(&args)
            .env_remove("FRAMEGATE_TOKEN")
            .env("NETRC", "/nonexistent/netrc")
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Owned argument strings.
pub fn a(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Parses one JSON value, or fails with the text.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A `framegate-server` process started by a test, stopped (SIGTERM) when
/// dropped; its stderr is kept in a file.
pub struct ServerProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT/` (None with --no-http).
    pub http: Option<String>,
    /// `framegate://127.0.0.1:PORT/` (with --tcp).
    pub tcp: Option<String>,
    pub stderr: tempfile::NamedTempFile,
}

/// Starts `framegate-server serve ARGS` (listening on port 0 unless ARGS
/// say otherwise) and waits for the addresses it prints.
pub fn spawn_server(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    use std::io::BufRead;
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(server_binary())
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wants_http = !args.contains(&"--no-http");
    let wants_tcp = args.iter().any(|a| a.starts_with("--tcp"));
    std::thread::spawn(move || {
        let (mut http, mut tcp) = (None, None);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(" at http://")
                && !line.contains("metrics")
            {
                http = Some(line[at + 4..].to_string());
            }
            if let Some(at) = line.find(" at framegate://") {
                tcp = Some(line[at + 4..].to_string());
            }
            if (http.is_some() || !wants_http) && (tcp.is_some() || !wants_tcp) {
                let _ = tx.send((http.take(), tcp.take()));
            }
        }
    });
    let (http, tcp) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the server did not start: {}",
                std::fs::read_to_string(stderr.path()).unwrap_or_default()
            )
        });
    ServerProcess {
        child,
        http,
        tcp,
        stderr,
    }
}

impl ServerProcess {
    /// Stops it with SIGTERM and returns what it logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
