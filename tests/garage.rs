//! A real Garage cluster on loopback for the object-store tests: three
//! nodes, replication factor 3, one data and metadata directory each, one
//! bucket and one key. Garage is `garage` on `PATH` (`.ci/run` installs it
//! with `cargo install --locked garage` when missing), or
//! `FRAMEGATE_GARAGE_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// The bucket every cluster has.
pub const BUCKET: &str = "framegate";

/// The S3 region Garage answers for.
pub const REGION: &str = "garage";

/// The key every cluster has: `GK` and 24 hex digits, 64 hex digits.
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
/// Its secret.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The `garage` binary.
pub fn garage_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FRAMEGATE_GARAGE_BIN") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|p| p.is_file())
    });
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
    found
        .or(home.filter(|p| p.is_file()))
        .expect("garage is not installed: .ci/run installs it (cargo install --locked garage)")
}

/// One node of a [`Garage`] cluster.
pub struct Node {
    child: Option<Child>,
    config: PathBuf,
    /// Its S3 port.
    pub s3_port: u16,
}

impl Node {
    /// `http://127.0.0.1:PORT`, its S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }
}

/// A running three-node cluster; stopped (killed) when dropped.
pub struct Garage {
    /// The nodes.
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs `garage -c config ARGS` once; its output (it must succeed).
fn run(garage: &Path, config: &Path, args: &[&str]) -> String {
    run_until(garage, config, args, Duration::ZERO)
}

/// Like [`run`], retried until it succeeds or `within` passed (the
/// cluster takes a moment to connect).
fn run_until(garage: &Path, config: &Path, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = Command::new(garage)
            .arg("-c")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "garage {args:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Garage {
    /// Starts three nodes, connects them, applies a layout with
    /// replication factor 3, and makes the bucket and the key.
    pub fn start() -> Garage {
        let garage = garage_binary();
        let dir = tempfile::tempdir().unwrap();
        let secret = "5c1b2a39f0de4d6fa1e08b9c7d3f2e1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e";
        let mut nodes = Vec::new();
        for i in 0..3 {
            let base = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&base).unwrap();
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = base.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{base}/meta"
data_dir = "{base}/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                    base = base.display()
                ),
            )
            .unwrap();
            let child = Command::new(&garage)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            nodes.push(Node {
                child: Some(child),
                config,
                s3_port: s3,
            });
        }
        let first = nodes[0].config.clone();
        let ids: Vec<String> = nodes
            .iter()
            .map(|n| {
                run_until(
                    &garage,
                    &n.config,
                    &["node", "id", "-q"],
                    Duration::from_secs(30),
                )
                .trim()
                .to_owned()
            })
            .collect();
        for id in &ids[1..] {
            run_until(
                &garage,
                &first,
                &["node", "connect", id],
                Duration::from_secs(30),
            );
        }
        for id in &ids {
            let short = id.split('@').next().unwrap();
            run_until(
                &garage,
                &first,
                &["layout", "assign", "-z", "dc1", "-c", "1G", short],
                Duration::from_secs(30),
            );
        }
        run(&garage, &first, &["layout", "apply", "--version", "1"]);
        run_until(
            &garage,
            &first,
            &["bucket", "create", BUCKET],
            Duration::from_secs(30),
        );
        run(
            &garage,
            &first,
            &["key", "import", "--yes", "-n", "framegate", KEY_ID, SECRET],
        );
        run(
            &garage,
            &first,
            &[
                "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
            ],
        );
        let cluster = Garage { nodes, _dir: dir };
        cluster.wait_until_writable();
        cluster
    }

    /// Waits until every node answers S3 requests (a listing) with the key.
    fn wait_until_writable(&self) {
        for node in &self.nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            let url = format!("{}/{BUCKET}?list-type=2&max-keys=1", node.endpoint());
            loop {
                // Unsigned: any answer at all means the API is up; the
                // gateway's own start-up check does the signed listing.
                let up = std::net::TcpStream::connect(("127.0.0.1", node.s3_port)).is_ok();
                if up {
                    break;
                }
                assert!(Instant::now() < deadline, "{url} never answered");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `kill -9` of node `i`: the cluster keeps a quorum of two.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The environment a gateway needs to reach the cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// The `serve` flags for a gateway on node `i`'s S3 endpoint.
    pub fn flags(&self, i: usize) -> Vec<String> {
        vec![
            "--s3-endpoint".into(),
            self.nodes[i].endpoint(),
            "--s3-path-style".into(),
            "--s3-allow-http".into(),
        ]
    }
}
