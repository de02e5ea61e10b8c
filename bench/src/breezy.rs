//! Breezy's smart server and client for P8: `brz serve` in the venv
//! `bench/peer/setup-brz.sh` makes, read by `bench/peer/brz_read.py`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use framegate_e2e::{free_port, repo_root};

use crate::{Env, SMALL_FILES};

/// Breezy's smart server (`brz serve`) over the small files, in the venv
/// `bench/peer/setup-brz.sh` makes; stopped on drop.
pub(crate) struct Breezy {
    server: std::process::Child,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
}

/// The venv holding Breezy, made (once) by `bench/peer/setup-brz.sh`.
fn brz_venv() -> Option<PathBuf> {
    static VENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let setup = Command::new(repo_root().join("bench/peer/setup-brz.sh"))
            .output()
            .ok()?;
        if !setup.status.success() {
            eprintln!(
                "breezy setup failed: {}",
                String::from_utf8_lossy(&setup.stderr)
            );
            return None;
        }
        Some(PathBuf::from(String::from_utf8_lossy(&setup.stdout).trim()))
    })
    .clone()
}

impl Breezy {
    pub(crate) fn start(env: &Env) -> Option<Breezy> {
        let venv = brz_venv()?;
        let port = free_port();
        let server = Command::new(venv.join("bin/brz"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--directory",
            ])
            .arg(env.tree.join("small"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Breezy { server, port })
    }
}

impl Drop for Breezy {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Reads the 1,000 small files through Breezy's client at `url`
/// (`bench/peer/brz_read.py`): seconds of the first pass, from opening the
/// transport (cold), and the median of `runs` more (warm).
pub(crate) fn brz_read(url: &str, runs: usize) -> Option<(f64, f64)> {
    let out = Command::new(brz_venv()?.join("bin/python"))
        .arg(repo_root().join("bench/peer/brz_read.py"))
        .arg(url)
        .args([SMALL_FILES.to_string(), runs.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "breezy client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((v["cold_s"].as_f64()?, v["median_s"].as_f64()?))
}
