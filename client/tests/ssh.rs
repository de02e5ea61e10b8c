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
    let session = Session::new();
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
