//! The CLI and server habits of issue 12 not covered elsewhere, each
//! against the real binaries: the server's command policy, the session
//! access log and command-span events, `.netrc`, `-O`, `-k`'s warning,
//! read-only as exit 1 on both bindings, help text, and the progress frames
//! of long commands.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use framegate_client::{Options, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_policy_hides_and_refuses_on_every_binding() {
    let tree = sample_tree();
    let d = tree.path().to_str().unwrap();
    let s = spawn_server(
        &[
            d,
            "--listen",
            "127.0.0.1:0",
            "--tcp=127.0.0.1:0",
            "--deny-commands",
            "iter_files_recursive,tree",
        ],
        &[],
    );
    for url in [s.http.clone().unwrap(), s.tcp.clone().unwrap()] {
        let (code, out, err) = cli(a(&["--json", "probe", &url])).await;
        assert_eq!(code, 0, "{err}");
        let commands = json(&out)["commands"].clone();
        let names: Vec<&str> = commands
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(
            names.contains(&"get") && names.contains(&"hello"),
            "{names:?}"
        );
        assert!(
            !names.contains(&"iter_files_recursive") && !names.contains(&"tree"),
            "{names:?}"
        );
        let (code, _, err) = cli(a(&["call", &url, "iter_files_recursive"])).await;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("command-refused"), "a code of its own: {err}");
        let (code, _, err) = cli(a(&["call", &url, "no_such_thing"])).await;
        assert_eq!(code, 1);
        assert!(err.contains("unknown-command"), "{err}");
        // What is allowed still works.
        let (code, out, _) = cli(a(&["ls", &url])).await;
        assert_eq!(code, 0);
        assert!(out.contains("hello.txt"), "{out}");
    }
    drop(s);
    // Plain HTTP follows the policy: `get` for files, `list_dir` for
    // listings; a TOML list and the command line's add up.
    let config = tree.path().join("deny.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndeny-commands = [\"get\"]\n",
    )
    .unwrap();
    let s = spawn_server(
        &[
            d,
            "--config",
            config.to_str().unwrap(),
            "--deny-commands",
            "list_dir",
        ],
        &[],
    );
    let url = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    // The same answer whether the path exists or not.
    for path in ["hello.txt", "", "no-such-file", "no-such-dir/", "sub"] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path:?}");
        assert_eq!(r.headers()["framegate-refusal"], "command-refused");
    }
    let (code, out, _) = cli(a(&["--json", "probe", &url])).await;
    assert_eq!(code, 0);
    let names = json(&out)["commands"].to_string();
    assert!(
        !names.contains("\"get\"") && !names.contains("list_dir"),
        "{names}"
    );
    assert!(names.contains("\"stat\""), "{names}");
    drop(s);
    // Only `get` refused: a file asked for as `name/` is still a file.
    let s = spawn_server(
        &[d, "--listen", "127.0.0.1:0", "--deny-commands", "get"],
        &[],
    );
    let url = s.http.clone().unwrap();
    for path in ["hello.txt", "hello.txt/"] {
        let r = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path:?}");
    }
    let r = http.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200, "listings stay");
    drop(s);
    // From TOML, as an allow list.
    let config = tree.path().join("policy.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nallow-commands = [\"get\", \"stat\"]\n",
    )
    .unwrap();
    let s = spawn_server(&[d, "--config", config.to_str().unwrap()], &[]);
    let url = s.http.clone().unwrap();
    let (code, out, _) = cli(a(&["--json", "probe", &url])).await;
    assert_eq!(code, 0);
    assert_eq!(
        json(&out)["commands"],
        serde_json::json!(["get", "hello", "stat"])
    );
    let (code, _, err) = cli(a(&["ls", &url])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("list_dir"), "{err}");
    let (code, _, err) = cli(a(&["call", &url, "list_dir"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("command-refused"), "{err}");
    drop(s);
    // A name the server does not have, or `hello`, is refused at start.
    for bad in [
        "--deny-commands=iter_file_recursive",
        "--deny-commands=hello",
    ] {
        let out = std::process::Command::new(server_binary())
            .args(["serve", d, "--listen", "127.0.0.1:0", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--allow-commands/--deny-commands"), "{err}");
    }
}

/// Byte-stream sessions get an access-log event; commands' spans hold
/// debug events (start, end); HEAD is logged like GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_logged_and_command_spans_hold_events() {
    let tree = sample_tree();
    let d = tree.path().to_str().unwrap();
    let s = spawn_server(
        &[
            d,
            "--listen",
            "127.0.0.1:0",
            "--tcp=127.0.0.1:0",
            "--log-format",
            "json",
        ],
        &[("FRAMEGATE_LOG", "info,framegate_server=debug")],
    );
    let tcp = s.tcp.clone().unwrap();
    let http = s.http.clone().unwrap();
    let (code, _, err) = cli(a(&["cat", &format!("{tcp}hello.txt")])).await;
    assert_eq!(code, 0, "{err}");
    let head = reqwest::Client::new()
        .head(format!("{http}hello.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let log = s.stop();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let session = events
        .iter()
        .find(|v| v["target"] == "framegate::access" && v["fields"]["message"] == "session")
        .unwrap_or_else(|| panic!("a session access event: {log}"));
    assert!(
        session["fields"]["commands"].as_u64() >= Some(1),
        "{session}"
    );
    assert!(
        session["fields"]["bytes_out"].as_u64() > Some(0),
        "{session}"
    );
    assert!(
        session["span"]["peer"].as_str().is_some(),
        "the peer's address: {session}"
    );
    let answered = events
        .iter()
        .find(|v| v["fields"]["message"] == "answered" && v["span"]["name"] == "command")
        .unwrap_or_else(|| panic!("a debug event inside a command span: {log}"));
    assert!(answered["span"]["request"].as_u64().is_some(), "{answered}");
    assert!(
        events
            .iter()
            .any(|v| v["target"] == "framegate::access" && v["fields"]["method"] == "HEAD"),
        "HEAD logged: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netrc_gives_the_hosts_token_and_flags_win() {
    let tree = tempfile::tempdir().unwrap();
    let token = tree.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let served = tree.path().join("srv");
    std::fs::create_dir(&served).unwrap();
    let s = spawn_server(
        &[
            served.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--allow-writes",
            "--write-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    let url = s.http.clone().unwrap();
    let src = tree.path().join("f.txt");
    std::fs::write(&src, "data").unwrap();
    let netrc = tree.path().join("netrc");
    let put = |env: Vec<(String, String)>, extra: &[&str]| {
        let mut args = a(extra);
        args.extend(a(&["put", src.to_str().unwrap(), &format!("{url}f.txt")]));
        cli_with(args, env)
    };
    let with_netrc = || vec![("NETRC".to_string(), netrc.display().to_string())];
    // Another host's entry, or only a `default`: no token sent, 401.
    for text in [
        "machine other.example password s3cret\n",
        "default login anonymous password s3cret\n",
    ] {
        std::fs::write(&netrc, text).unwrap();
        let (code, _, err) = put(with_netrc(), &[]).await;
        assert_eq!(code, 4, "{text}: {err}");
    }
    // This host's entry (after a default with a wrong one).
    std::fs::write(
        &netrc,
        "default login x password wrong\nmachine 127.0.0.1 login me password s3cret\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = put(with_netrc(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("other users"), "{err}");
    assert_eq!(std::fs::read(served.join("f.txt")).unwrap(), b"data");
    // An explicit token wins over netrc.
    let (code, _, err) = put(with_netrc(), &["--token", "bad"]).await;
    assert_eq!(code, 4, "{err}");
    // A netrc others can read is used, with a warning.
    std::fs::set_permissions(&netrc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = put(with_netrc(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("can be read by other users"), "{err}");
}

/// `put` to a server without --allow-writes: `read-only`, exit 1, over
/// HTTP as over a byte stream (it was 4 over HTTP, 1 over TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_is_exit_one_on_both_bindings_and_dash_o_and_k_work() {
    let tree = sample_tree();
    let d = tree.path().to_str().unwrap();
    let s = spawn_server(&[d, "--listen", "127.0.0.1:0", "--tcp=127.0.0.1:0"], &[]);
    let src = tree.path().join("hello.txt");
    for url in [s.http.clone().unwrap(), s.tcp.clone().unwrap()] {
        let (code, _, err) =
            cli(a(&["put", src.to_str().unwrap(), &format!("{url}new.txt")])).await;
        assert_eq!(code, 1, "{url}: {err}");
        assert!(err.contains("read-only"), "{err}");
        assert!(
            !err.contains("/.framegate/rw"),
            "names the directory: {err}"
        );
        let (code, out, _) = cli(a(&["probe", &url])).await;
        assert_eq!(code, 0);
        assert!(
            out.starts_with(&url),
            "the URL itself, not a placeholder: {out}"
        );
    }
    assert!(!tree.path().join("new.txt").exists());
    // -O: the file's own name in the current directory.
    let here = tempfile::tempdir().unwrap();
    let http = s.http.clone().unwrap();
    let out = tokio::task::spawn_blocking({
        let here = here.path().to_path_buf();
        let url = format!("{http}hello.txt");
        move || {
            assert_cmd::Command::cargo_bin("framegate")
                .unwrap()
                .current_dir(here)
                .args(["-q", "get", "-O", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(here.path().join("hello.txt")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    // -k warns (TLS itself is covered by the e2e suite behind nginx).
    let (code, _, err) = cli(a(&["-k", "probe", &http])).await;
    assert_eq!(code, 0);
    assert!(
        err.contains("--insecure: the server's certificate is not checked"),
        "{err}"
    );
}

/// `--help` names the URL schemes, environment, examples and exit codes;
/// every subcommand has examples and described arguments; the token's
/// environment variable is shown once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_has_examples_environment_and_described_arguments() {
    let (code, out, _) = cli(a(&["--help"])).await;
    assert_eq!(code, 0);
    for needle in [
        "framegate+http(s)://",
        "framegate+ssh://",
        "FRAMEGATE_SSH",
        "FRAMEGATE_REMOTE_COMMAND",
        "FRAMEGATE_LOG",
        "NETRC",
        "Examples:",
        "Exit codes",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert_eq!(out.matches("[env: FRAMEGATE_TOKEN]").count(), 1, "{out}");
    for sub in [
        "probe",
        "ls",
        "cat",
        "get",
        "put",
        "stat",
        "mkdir",
        "mv",
        "rm",
        "call",
        "mirror",
        "completions",
    ] {
        let (code, out, _) = cli(a(&["help", sub])).await;
        assert_eq!(code, 0);
        assert!(out.contains("Example"), "{sub}: {out}");
        let args = out
            .split("Arguments:")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("{sub} lists its arguments: {out}"));
        for line in args.lines().filter(|l| l.trim_start().starts_with('<')) {
            let described = line.trim().split_once("  ").map(|(_, d)| d.trim());
            assert!(
                described.is_some_and(|d| !d.is_empty()),
                "{sub}: an argument without a description: {line:?}"
            );
        }
    }
}

/// Long commands report progress before their answer: a digest of a large
/// file reports bytes hashed (with the file's size as total) and ends the
/// topic; a small one sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_digests_send_progress_and_short_ones_do_not() {
    let tree = tempfile::tempdir().unwrap();
    let size: u64 = 256 << 20;
    let big = std::fs::File::create(tree.path().join("big")).unwrap();
    big.set_len(size).unwrap();
    std::fs::write(tree.path().join("small"), "s").unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let seen: Arc<Mutex<Vec<framegate_wire::ProgressPayload>>> = Arc::default();
    let mut options = Options::default();
    let sink = seen.clone();
    options.hooks.on_progress = Some(Arc::new(move |p: &framegate_wire::ProgressPayload| {
        sink.lock().unwrap().push(p.clone());
    }));
    let t = Transport::open(&s.url, options).await.unwrap();
    let started = std::time::Instant::now();
    let d = t.digest("big").await.unwrap();
    let took = started.elapsed();
    assert_eq!(d.size, size);
    let reports = seen.lock().unwrap().clone();
    let digest: Vec<_> = reports.iter().filter(|p| p.topic == "digest").collect();
    println!("digest of 256 MiB took {took:?}: {} reports", digest.len());
    // Hashing 256 MiB takes well over the 500 ms interval in a test build.
    assert!(took > std::time::Duration::from_secs(1), "{took:?}");
    assert!(digest.len() >= 2, "progress, then its end: {reports:?}");
    let last = digest.last().unwrap();
    assert_eq!(last.pos, -1, "the topic is ended");
    for p in &digest[..digest.len() - 1] {
        assert!(p.pos > 0 && p.pos as u64 <= size, "{p:?}");
        assert_eq!(p.total, size);
        assert_eq!(p.label.as_deref(), Some("bytes"));
    }
    seen.lock().unwrap().clear();
    t.digest("small").await.unwrap();
    assert!(seen.lock().unwrap().is_empty(), "none for a short command");
}

/// What a server says reaches the terminal escaped (a file name with an
/// escape sequence, quoted in an error message), and file dates past the
/// year 9999 (tmpfs stores them) print as 9999 instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_is_escaped_and_far_dates_do_not_panic() {
    use framegate_server::{Answer, CommandError, Registry, read_command};
    let tree = sample_tree();
    let mut registry = Registry::files();
    registry.register(
        "shout",
        read_command(|call: framegate_server::Call| async move {
            call.ctx.text(vec![framegate_wire::TextAtom::plain(
                "\x1b[31mloud\x1b]0;PWNED\x07\n",
            )]);
            Ok(Answer::Bytes(bytes::Bytes::from_static(b"ok")))
        }),
    );
    registry.register(
        "stat",
        read_command(|call: framegate_server::Call| async move {
            if call.args.get("path").is_some_and(|p| p.as_ref() == b"evil") {
                return Err(CommandError::new(
                    framegate_wire::ErrorCode::NO_SUCH_FILE,
                    "no such file: evil\x1b]0;PWNED\x07\x1b[2J",
                ));
            }
            Ok(Answer::Bytes(
                framegate_wire::StatAnswer {
                    etag: None,
                    kind: framegate_wire::FileKind::File,
                    mode: 0o644,
                    size: 1,
                    mtime: 3e11,
                }
                .encode(),
            ))
        }),
    );
    let handle = server_with(tree.path(), registry).await;
    let url = handle.url.clone();
    let (code, _, err) = cli(a(&["stat", &format!("{url}evil")])).await;
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("PWNED"), "shown, escaped: {err:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    // Under --json the message is the server's text (JSON escapes it).
    let (_, out, _) = cli(a(&["--json", "stat", &format!("{url}evil")])).await;
    assert!(
        json(&out)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\x1b]0;PWNED"),
        "{out}"
    );
    // A server's text output: shown with its escapes escaped.
    let (code, _, err) = cli(a(&["call", &url, "shout"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("loud") && !err.contains('\x1b'), "{err:?}");
    // A CBOR answer under --json is JSON.
    let (code, out, err) = cli(a(&["--json", "call", &url, "stat", "path=hello.txt"])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["kind"], "file", "{out}");
    let (code, out, err) = cli(a(&["stat", &format!("{url}hello.txt")])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("9999"), "{out}");
    let (code, out, err) = cli(a(&["ls", "-l", &url])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("9999-12-31"), "{out}");
}
