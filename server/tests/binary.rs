//! The `framegate-server` binary: TOML config, metrics listener, SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// Everything a finished (or killed) child wrote to its piped stderr.
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut err = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut err).unwrap();
    }
    err
}

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
    let err = stderr_of(&mut child);
    assert!(
        err.lines().any(|l| l.starts_with('{')),
        "JSON logs on stderr: {err}"
    );
    // One access-log event per request, plain GETs included.
    let access: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "framegate::access")
        .collect();
    let get = access
        .iter()
        .find(|v| v["fields"]["path"] == "/f.txt")
        .unwrap_or_else(|| panic!("an access entry for GET /f.txt: {err}"));
    assert_eq!(get["fields"]["method"], "GET");
    assert_eq!(get["fields"]["status"], 200);
    assert_eq!(get["fields"]["bytes"], 15, "{get}");
    assert!(
        access
            .iter()
            .any(|v| v["fields"]["path"] == "/.framegate/healthz"),
        "{err}"
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

/// `framegate-server serve ARGS…` run until it says it serves (then
/// stopped) or exits: its exit code (`None`: it was serving), stdout and
/// stderr.
fn start_briefly(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            printed.push_str(&line);
            printed.push('\n');
            if line.contains(" serving ") {
                let _ = tx.send((true, printed.clone()));
            }
        }
        let _ = tx.send((false, printed));
    });
    let (serving, out) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or((false, String::new()));
    let code = if serving {
        let _ = child.kill();
        let _ = child.wait();
        None
    } else {
        child.wait().unwrap().code()
    };
    let err = stderr_of(&mut child);
    (code, out, err)
}

/// Writes need a token off loopback (or an explicit flag); a token without
/// `--allow-writes` is an error, not a silently read-only server; on
/// loopback, writes without a token start with a warning.
#[test]
fn write_safety_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let t = token.to_str().unwrap();
    let (code, _, err) = start_briefly(&[d, "--listen", "0.0.0.0:0", "--allow-writes"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--write-token-file"), "{err}");
    let (code, _, err) = start_briefly(&[d, "--listen", "127.0.0.1:0", "--write-token-file", t]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("needs --allow-writes"), "{err}");
    let (code, _, err) = start_briefly(&[d, "--tcp=0.0.0.0:0", "--no-http", "--allow-writes"]);
    assert_eq!(code, Some(2), "the byte-stream listener too: {err}");
    // Allowed: explicitly, with a token, or on loopback (with a warning).
    for args in [
        vec![
            d,
            "--listen",
            "0.0.0.0:0",
            "--allow-writes",
            "--allow-unauthenticated-writes",
        ],
        vec![
            d,
            "--listen",
            "0.0.0.0:0",
            "--allow-writes",
            "--write-token-file",
            t,
        ],
        vec![d, "--listen", "127.0.0.1:0", "--allow-writes"],
    ] {
        let (code, out, err) = start_briefly(&args);
        assert_eq!(code, None, "{args:?} starts: {out}{err}");
        if args.len() == 4 {
            assert!(
                err.contains("without a token"),
                "a warning on loopback: {err}"
            );
        }
        // Colours only on a terminal: none in a piped log.
        assert!(
            !err.contains('\u{1b}'),
            "no ANSI codes in a piped log: {err:?}"
        );
    }
}

/// `--tcp DIR` serves DIR on the default byte-stream address (the address
/// takes `=`); `--tcp=ADDR` listens on ADDR.
#[test]
fn tcp_takes_its_address_with_an_equals_sign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "x").unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = start_briefly(&["--tcp=127.0.0.1:0", d, "--no-http"]);
    assert_eq!(code, None, "{out}{err}");
    assert!(out.contains("at framegate://127.0.0.1:"), "{out}");
    assert!(
        out.contains(&*dir.path().canonicalize().unwrap().to_string_lossy()),
        "{out}"
    );
    let (code, out, err) = start_briefly(&["--tcp", d, "--no-http"]);
    // The default port may be taken on this machine; either way DIR was
    // taken as the directory, not as an address.
    assert!(!err.contains("invalid value"), "{err}");
    if code.is_none() {
        assert!(out.contains("framegate://127.0.0.1:4159/"), "{out}");
    } else {
        assert!(err.contains("127.0.0.1:4159"), "{err}");
    }
}
