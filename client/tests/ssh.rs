//! framegate+ssh:// through a real sshd on loopback (generated host key and
//! an authorized test key). `.ci/run` installs openssh-server and -client;
//! sshd needs root to switch users, as CI runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, server_binary};
use framegate_client::{Connector, Session, SshTarget};
use framegate_wire::Arguments;

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("none of {candidates:?} is installed: .ci/run installs openssh-server and openssh-client"))
}

fn keygen(path: &Path) {
    let status = Command::new(find(&["/usr/bin/ssh-keygen"]))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn start_sshd() -> Sshd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(&d.join("host_key"));
    keygen(&d.join("client_key"));
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    // Privilege separation needs this directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {h}\nPidFile {p}\nAuthorizedKeysFile {a}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
         UsePAM no\nStrictModes no\nPermitRootLogin yes\nLogLevel ERROR\n",
        h = d.join("host_key").display(),
        p = d.join("sshd.pid").display(),
        a = d.join("authorized_keys").display(),
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    let child = Command::new(find(&["/usr/sbin/sshd"]))
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sshd = Sshd { child, port, dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sshd;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd did not start");
}

impl Sshd {
    fn ssh_command(&self) -> String {
        format!(
            "{} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            find(&["/usr/bin/ssh"]).display(),
            self.dir.path().join("client_key").display()
        )
    }
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_over_real_ssh() {
    let sshd = start_sshd();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("remote.txt"), b"through ssh").unwrap();
    let target = SshTarget {
        host: format!("{}@127.0.0.1", user()),
        port: Some(sshd.port),
        ssh: sshd
            .ssh_command()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        remote_command: vec![
            server_binary().display().to_string(),
            "serve".into(),
            "--stdio".into(),
            "--allow-writes".into(),
            "/".into(),
        ],
    };
    // sshd's handshake and the server's start take seconds on a loaded
    // 2-core machine (the 10 s default ran out twice under fuzzers): this
    // test is about the session, not the timeout.
    let session = Session::new().connect_timeout(Duration::from_secs(60));
    session.connect(Connector::Ssh(target)).await.unwrap();
    let rel = tree.path().strip_prefix("/").unwrap().display().to_string();
    let mut args = Arguments::new();
    args.insert("path", format!("{rel}/remote.txt")).unwrap();
    assert_eq!(
        session.call("get", &args, None).await.unwrap(),
        "through ssh"
    );
    let mut put = Arguments::new();
    put.insert("path", format!("{rel}/written.txt")).unwrap();
    session
        .call("put", &put, Some(Bytes::from("via sshd")))
        .await
        .unwrap();
    session.disconnect().await.unwrap();
    assert_eq!(
        std::fs::read(tree.path().join("written.txt")).unwrap(),
        b"via sshd"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_transport_over_framegate_ssh_urls() {
    let sshd = start_sshd();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f.txt"), b"cli over ssh").unwrap();
    let url = format!(
        "framegate+ssh://{}@127.0.0.1:{}{}/",
        user(),
        sshd.port,
        tree.path().display()
    );
    let ssh = sshd.ssh_command();
    let remote = format!("{} serve --stdio /", server_binary().display());
    let run = move |args: Vec<String>| {
        let (ssh, remote) = (ssh.clone(), remote.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                assert_cmd::Command::cargo_bin("framegate")
                    .unwrap()
                    .args(&args)
                    .env("FRAMEGATE_SSH", ssh)
                    .env("FRAMEGATE_REMOTE_COMMAND", remote)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(vec!["cat".into(), format!("{url}f.txt")]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"cli over ssh");
    let out = run(vec!["probe".into(), "--json".into(), url.clone()]).await;
    let probe: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(probe["smart"], true);
    let out = run(vec!["ls".into(), "--json".into(), url.clone()]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!(["f.txt"])
    );
}

/// Size of the large download in MiB: `FRAMEGATE_BIG_MIB`, 64 (what CI
/// runs) unless set.
fn big_mib() -> u64 {
    std::env::var("FRAMEGATE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Writes `mib` MiB of xorshift64 output to `path` a MiB at a time, so
/// neither compression nor the file size shapes what the test holds.
fn write_incompressible(path: &Path, mib: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk).unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
}

/// Asserts that `copy` holds the bytes of `original`, comparing a MiB at a
/// time (the files may be larger than the test should hold).
fn assert_same_bytes(original: &Path, copy: &Path) {
    use std::io::Read;
    let len = std::fs::metadata(original).unwrap().len();
    assert_eq!(
        std::fs::metadata(copy).unwrap().len(),
        len,
        "{copy:?}: size"
    );
    let (mut a, mut b) = (
        std::fs::File::open(original).unwrap(),
        std::fs::File::open(copy).unwrap(),
    );
    let (mut left, mut right) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from((len - offset).min(1 << 20)).unwrap();
        a.read_exact(&mut left[..n]).unwrap();
        b.read_exact(&mut right[..n]).unwrap();
        assert!(
            left[..n] == right[..n],
            "{copy:?} differs from {original:?} in the MiB at {offset}"
        );
        offset += n as u64;
    }
}

/// The `framegate-server` built with the same profile as the `framegate`
/// under test (a release run measures a release server), else the debug
/// one `server_binary` finds.
fn server_binary_beside_cli() -> PathBuf {
    let beside = Path::new(env!("CARGO_BIN_EXE_framegate")).with_file_name("framegate-server");
    if beside.exists() {
        beside
    } else {
        server_binary()
    }
}

/// A child process killed and reaped when the test lets go of it, even
/// by panicking.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one run of the `framegate` CLI cost.
struct CliRun {
    status: std::process::ExitStatus,
    stderr: String,
    /// Highest `VmHWM` seen, in MiB. `VmHWM` only grows, so the last
    /// sample (at most one interval before exit) is the peak.
    peak_mib: f64,
    wall: Duration,
}

/// The process's peak resident set (`VmHWM`) in MiB, while it has one.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Runs `framegate ARGS` with `envs`, sampling its `VmHWM` every 5 ms
/// until it exits; kills it after `deadline`.
fn run_cli_sampling_rss(args: &[String], envs: &[(&str, String)], deadline: Duration) -> CliRun {
    let logs = tempfile::tempdir().unwrap();
    let stderr_path = logs.path().join("stderr");
    let started = std::time::Instant::now();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_framegate"))
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut peak_mib = 0.0f64;
    let status = loop {
        if let Some(mib) = peak_rss_mib(pid) {
            peak_mib = peak_mib.max(mib);
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < deadline,
            "framegate {args:?} still running after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    CliRun {
        status,
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        peak_mib,
        wall: started.elapsed(),
    }
}

/// `framegate-server serve DIR --tcp=127.0.0.1:0 --no-http` and the
/// address it reports.
fn start_tcp_server(dir: &Path) -> (Reaped, String) {
    use std::io::BufRead;
    let mut child = Reaped(
        Command::new(server_binary_beside_cli())
            .arg("serve")
            .arg(dir)
            .args(["--tcp=127.0.0.1:0", "--no-http"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Read to the end: a closed stdout would fail the server's next print.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("framegate-server printed no serving line");
    let addr = line
        .split("framegate://")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (child, addr)
}

/// `framegate get` of a large file (`FRAMEGATE_BIG_MIB`, default 64) over
/// `framegate+ssh://` through a real sshd and over `framegate://`: the
/// copy is exact and the CLI's peak RSS stays under 64 MiB, whatever the
/// file size.
#[test]
fn cli_get_over_ssh_and_tcp_keeps_client_memory_flat() {
    const LIMIT_MIB: f64 = 64.0;
    let mib = big_mib();
    // Generous for a debug build on a loaded machine: 2 minutes plus a
    // second per MiB.
    let deadline = Duration::from_secs(120 + mib);
    let tree = tempfile::tempdir().unwrap();
    let source = tree.path().join("big.bin");
    write_incompressible(&source, mib);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let get = |url: String| {
        vec![
            "--no-compress".to_string(),
            "-q".into(),
            "get".into(),
            url,
            dest.display().to_string(),
        ]
    };
    let check = |how: &str, run: &CliRun| {
        eprintln!(
            "framegate get over {how}, {mib} MiB: client peak RSS {:.1} MiB, {:.2} s",
            run.peak_mib,
            run.wall.as_secs_f64()
        );
        assert!(
            run.status.success(),
            "get over {how}: {}: {}",
            run.status,
            run.stderr
        );
        assert_same_bytes(&source, &dest);
        assert!(
            run.peak_mib < LIMIT_MIB,
            "get over {how}, {mib} MiB: client peak RSS {:.1} MiB",
            run.peak_mib
        );
        std::fs::remove_file(&dest).unwrap();
    };

    let sshd = start_sshd();
    let url = format!(
        "framegate+ssh://{}@127.0.0.1:{}{}",
        user(),
        sshd.port,
        source.display()
    );
    let envs = [
        ("FRAMEGATE_SSH", sshd.ssh_command()),
        (
            "FRAMEGATE_REMOTE_COMMAND",
            format!("{} serve --stdio /", server_binary_beside_cli().display()),
        ),
    ];
    let run = run_cli_sampling_rss(&get(url), &envs, deadline);
    check("ssh", &run);
    drop(sshd);

    let (_server, addr) = start_tcp_server(tree.path());
    let run = run_cli_sampling_rss(&get(format!("framegate://{addr}/big.bin")), &[], deadline);
    check("tcp", &run);
}
