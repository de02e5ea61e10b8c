//! The `framegate-server` binary: TOML config, metrics listener, SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// The port in `line` after `marker`, if any.
fn port_after(line: &str, marker: &str) -> Option<u16> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_from_a_toml_config_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "from the binary").unwrap();
    // Port 0 for both listeners, and the addresses read back from what the
    // server prints: a port picked beforehand may be taken by the time the
    // server binds it (a loopback ephemeral port), and the server would then
    // exit with the first listener's queued connections reset.
    let config = dir.path().join("framegate.toml");
    std::fs::write(
        &config,
        format!(
            "dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\nkeepalive-interval = \"5s\"\nmax-requests-per-message = 100\nlog-format = \"json\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut port, mut metrics) = (None, None);
    let mut printed = String::new();
    while port.is_none() || metrics.is_none() {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("server exited before printing its addresses: {printed}");
        }
        printed.push_str(&line);
        if let Some(p) = port_after(&line, " at http://127.0.0.1:") {
            if line.contains(": metrics at ") {
                metrics = Some(p);
            } else {
                port = Some(p);
            }
        }
    }
    let (port, metrics) = (port.unwrap(), metrics.unwrap());
    assert!(get(port, "/f.txt").ends_with("from the binary"));
    assert!(get(port, "/.framegate/healthz").starts_with("HTTP/1.1 200"));
    let m = get(metrics, "/metrics");
    assert!(m.contains("framegate_messages_in_flight"), "{m}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(0), "graceful stop exits 0");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(
        printed.contains(&format!("http://127.0.0.1:{port}/")),
        "prints the URL to use: {printed}{rest}"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.lines().any(|l| l.starts_with('{')),
        "JSON logs on stderr: {err}"
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "no-such-key = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-key"));
    let help = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--allow-writes",
        "--write-token-file",
        "--max-frame-size",
        "--keepalive-interval",
        "--body-read-timeout",
        "--shutdown-grace",
        "--log-format",
        "--metrics-listen",
        "--config",
    ] {
        assert!(text.contains(flag), "{flag} in --help");
    }
}
