//! The `framegate` command line against a real server (and nginx).

mod common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_subcommands_and_json_shapes() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let u = &s.url;

    let (code, out, _) = cli(a(&["probe", "--json", u])).await;
    assert_eq!(code, 0);
    let p = json(&out);
    assert_eq!(p["smart"], true);
    assert!(
        p["server"]
            .as_str()
            .unwrap()
            .starts_with("framegate-server/")
    );
    assert!(
        p["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "readv")
    );
    assert_eq!(p["encodings"][0], "zstd-8mb");
    assert_eq!(p["writable"], false);
    let (code, out, _) = cli(a(&["probe", u])).await;
    assert_eq!(code, 0);
    assert!(out.contains("framegate server"));

    let (code, out, _) = cli(a(&["ls", "--json", &format!("{u}sub/")])).await;
    assert_eq!(
        (code, json(&out)),
        (0, serde_json::json!(["a.bin", "deeper"]))
    );
    let (_, out, _) = cli(a(&["ls", u])).await;
    assert_eq!(out, "hello.txt\nspace name.txt\nsub\n");

    let (code, out, _) = cli(a(&["cat", &format!("{u}hello.txt")])).await;
    assert_eq!((code, out.as_str()), (0, "hello, world\n"));
    let (code, out, _) = cli(a(&["cat", &format!("{u}space%20name.txt")])).await;
    assert_eq!((code, out.as_str()), (0, "spaced"));

    let (code, out, _) = cli(a(&["stat", "--json", &format!("{u}sub/a.bin")])).await;
    assert_eq!(code, 0);
    let st = json(&out);
    assert_eq!(
        (st["kind"].as_str(), st["size"].as_u64()),
        (Some("file"), Some(100_000))
    );
    assert!(st["mtime"].as_f64().unwrap() > 1e9 && st["mode"].is_string());

    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("copy.bin");
    let (code, out, _) = cli(a(&[
        "get",
        "--json",
        &format!("{u}sub/a.bin"),
        target.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["bytes"], 100_000);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(tree.path().join("sub/a.bin")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_subcommands_and_auth() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |c| {
        c.allow_writes = true;
        c.write_token = Some("tok".into());
    })
    .await;
    let u = &s.url;
    let src = tree.path().join("hello.txt");
    let (code, _, err) = cli(a(&["put", src.to_str().unwrap(), &format!("{u}up.txt")])).await;
    assert_eq!(code, 4, "no token: credentials needed ({err})");
    assert!(err.contains("a token is needed"), "{err}");
    let (code, _, err) = cli(a(&[
        "--token",
        "wrong",
        "put",
        src.to_str().unwrap(),
        &format!("{u}up.txt"),
    ]))
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the token was refused"),
        "a wrong token is named as such: {err}"
    );
    assert!(!err.contains("user:password"), "{err}");
    // `probe` asks the rw endpoint: writable with the token, and why not
    // without it.
    let (_, out, _) = cli(a(&["probe", u])).await;
    assert!(out.contains("writable:  no (a token is needed"), "{out}");
    let (_, out, _) = cli(a(&["--token", "wrong", "probe", u])).await;
    assert!(
        out.contains("writable:  no (the token was refused"),
        "{out}"
    );
    let (_, out, _) = cli(a(&["--token", "tok", "probe", u])).await;
    assert!(out.contains("writable:  yes"), "{out}");
    let (_, out, _) = cli(a(&["--token", "tok", "probe", "--json", u])).await;
    assert_eq!(json(&out)["writable"], true, "{out}");
    // The token from a file (not visible in `ps`); an empty file is an error.
    let token_file = tree.path().join("token");
    std::fs::write(&token_file, "tok\n").unwrap();
    let (code, _, err) = cli(a(&[
        "--token-file",
        token_file.to_str().unwrap(),
        "put",
        src.to_str().unwrap(),
        &format!("{u}from-file.txt"),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(&token_file, "\n").unwrap();
    let (code, _, err) = cli(a(&[
        "--token-file",
        token_file.to_str().unwrap(),
        "probe",
        u,
    ]))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is empty"), "{err}");
    let t = ["--token", "tok"];
    let (code, out, _) = cli([
        &t[..],
        &[
            "put",
            "--json",
            src.to_str().unwrap(),
            &format!("{u}up.txt"),
        ],
    ]
    .concat()
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["bytes"], 13);
    assert_eq!(
        std::fs::read(tree.path().join("up.txt")).unwrap(),
        b"hello, world\n"
    );
    let run = |extra: &[&str]| {
        [&t[..], extra]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(cli(run(&["mkdir", &format!("{u}newdir")])).await.0, 0);
    assert!(tree.path().join("newdir").is_dir());
    assert_eq!(
        cli(run(&["mv", &format!("{u}up.txt"), "newdir/moved.txt"]))
            .await
            .0,
        0
    );
    assert!(tree.path().join("newdir/moved.txt").exists());
    assert_eq!(
        cli(run(&[
            "mv",
            &format!("{u}newdir/moved.txt"),
            &format!("{u}newdir/again.txt")
        ]))
        .await
        .0,
        0
    );
    assert!(tree.path().join("newdir/again.txt").exists());
    assert_eq!(
        cli(run(&["rm", &format!("{u}newdir/again.txt")])).await.0,
        0
    );
    assert_eq!(cli(run(&["rm", "--dir", &format!("{u}newdir")])).await.0, 0);
    assert!(!tree.path().join("newdir").exists());
    let (code, _, err) = cli(run(&["rm", &format!("{u}nope")])).await;
    assert_eq!(code, 1, "remote error: {err}");
    assert!(err.contains("no-such-file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let (code, _, err) = cli(a(&["cat", &format!("{}missing", s.url)])).await;
    assert_eq!(code, 1, "{err}");
    let port = free_port();
    let (code, _, err) = cli(a(&["probe", &format!("http://127.0.0.1:{port}/")])).await;
    assert_eq!(code, 3, "connection refused: {err}");
    assert!(err.contains("cannot connect"));
    let (code, _, _) = cli(a(&["cat", "ftp://x/y"])).await;
    assert_eq!(code, 2);
    let (code, _, _) = cli(a(&["frobnicate"])).await;
    assert_eq!(code, 2);
    let ngx = nginx(tree.path());
    let (code, _, err) = cli(a(&[
        "probe",
        &ngx.url("json").replace("http://", "framegate+http://"),
    ]))
    .await;
    assert_eq!(code, 4, "no framegate server where one is required: {err}");
    let (code, out, _) = cli(a(&["probe", "--json", &ngx.url("json")])).await;
    assert_eq!((code, json(&out)["smart"].clone()), (0, Value::Bool(false)));
    let (code, _, err) = cli(a(&[
        "put",
        tree.path().join("hello.txt").to_str().unwrap(),
        &format!("{}x", ngx.url("json")),
    ]))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("needs a framegate server"));
    // A local file that cannot be written: 6, and the message names it.
    let (code, _, err) = cli(a(&[
        "get",
        &format!("{}hello.txt", s.url),
        "/nonexistent-dir/x/hello.txt",
    ]))
    .await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("/nonexistent-dir/x"), "{err}");
    let (code, out, _) = cli(a(&["completions", "bash"])).await;
    assert_eq!(code, 0);
    assert!(out.contains("framegate"));
    let (_, out, _) = cli(a(&["--help"])).await;
    assert!(
        out.contains("Exit codes (one per layer of error):"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_of_two_thousand_files_takes_a_handful_of_posts() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..2000 {
        let dir = tree.path().join(format!("d{}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}.txt")),
            format!("file number {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    let s = smart_server(tree.path(), |_| {}).await;
    let dest = tempfile::tempdir().unwrap();
    let before = s.messages("ro");
    let (code, out, err) = cli(a(&[
        "mirror",
        "--json",
        &s.url,
        dest.path().to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let posts = s.messages("ro") - before;
    assert!(posts <= 6, "{posts} POSTs for 2,000 files");
    let summary = json(&out);
    assert_eq!(
        (summary["files"].as_u64(), summary["downloaded"].as_u64()),
        (Some(2000), Some(2000))
    );
    for i in [0, 999, 1999] {
        let rel = format!("d{}/f{i}.txt", i % 20);
        assert_eq!(
            std::fs::read(dest.path().join(&rel)).unwrap(),
            std::fs::read(tree.path().join(&rel)).unwrap()
        );
    }
    // Again: everything is up to date.
    let (code, out, _) = cli(a(&[
        "mirror",
        "--json",
        &s.url,
        dest.path().to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0);
    let again = json(&out);
    assert_eq!(
        (again["downloaded"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(2000))
    );
}

/// curl's habits: `get URL -` and `get -o - URL` write to stdout, `-o FILE`
/// names the destination; a reader that closes stdout early (`| head`)
/// stops the CLI quietly with 141 (as SIGPIPE would), not "Broken pipe".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_to_stdout_and_to_a_named_file_and_a_closed_pipe() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let url = format!("{}hello.txt", s.url);
    let (code, out, err) = cli(a(&["get", &url, "-"])).await;
    assert_eq!((code, out.as_str()), (0, "hello, world\n"), "{err}");
    let (code, out, err) = cli(a(&["get", "-o", "-", &url])).await;
    assert_eq!((code, out.as_str()), (0, "hello, world\n"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("named.txt");
    let (code, _, err) = cli(a(&["get", "-q", "-o", named.to_str().unwrap(), &url])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&named).unwrap(), b"hello, world\n");
    assert!(!std::path::Path::new("-").exists());

    let big = format!("{}sub/a.bin", s.url);
    let (code, err) = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("framegate"))
            .args(["--no-compress", "cat", &big])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 10];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(141), "{err}");
    assert!(err.is_empty(), "quiet: {err}");
}

/// `mirror` goes on past a file that fails (named on stderr, exit 8, as
/// rsync's 23), and keeps the files' permission bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_continues_past_a_failed_file_and_keeps_modes() {
    use std::os::unix::fs::PermissionsExt;
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a.txt"), "a").unwrap();
    std::fs::write(tree.path().join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.path().join("run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(tree.path().join("z.txt"), "z").unwrap();
    let s = smart_server(tree.path(), |_| {}).await;
    let out_dir = tempfile::tempdir().unwrap();
    let mirror = out_dir.path().join("m");
    // A directory where a.txt goes: that file cannot be written.
    std::fs::create_dir_all(mirror.join("a.txt/inside")).unwrap();
    // A dry run says what would come, and writes nothing.
    let (code, out, err) = cli(a(&["mirror", "-n", &s.url, mirror.to_str().unwrap()])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("run.sh (10 bytes)") && out.contains("z.txt"),
        "{out}"
    );
    assert!(!mirror.join("z.txt").exists(), "nothing written");
    let (code, _, err) = cli(a(&["mirror", &s.url, mirror.to_str().unwrap()])).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("a.txt"), "the failed file is named: {err}");
    assert!(
        err.contains("a directory here, a file on the server (--delete replaces it)"),
        "and why: {err}"
    );
    assert!(err.contains("1 failed"), "{err}");
    assert_eq!(std::fs::read(mirror.join("z.txt")).unwrap(), b"z");
    let mode = std::fs::metadata(mirror.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the mode is kept");
}

/// File-operation habits: `ls -l` (kind, size, mtime; a newline in a name
/// escaped), `put -` from stdin, `put FILE DIR/` keeping the name,
/// `mkdir -p` of nested and existing directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_long_put_from_stdin_and_into_a_directory_mkdir_parents() {
    let tree = sample_tree();
    std::fs::write(tree.path().join("two\nlines.txt"), "x").unwrap();
    let s = smart_server(tree.path(), |c| c.allow_writes = true).await;
    let u = &s.url;
    let (code, out, err) = cli(a(&["ls", "-l", u])).await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.ends_with("hello.txt")).unwrap();
    assert!(line.starts_with("file"), "{line}");
    assert!(line.contains(" 13 "), "the size: {line}");
    assert!(out.contains("two\\nlines.txt"), "escaped: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("dir") && l.ends_with("sub")),
        "{out}"
    );
    let (_, out, _) = cli(a(&["ls", u])).await;
    assert!(
        out.contains("two\\nlines.txt") && !out.contains("two\nlines"),
        "{out}"
    );

    let piped = tokio::task::spawn_blocking({
        let url = format!("{u}from-stdin.txt");
        move || {
            assert_cmd::Command::cargo_bin("framegate")
                .unwrap()
                .args(["-q", "put", "-", &url])
                .write_stdin("from a pipe\n")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(
        std::fs::read(tree.path().join("from-stdin.txt")).unwrap(),
        b"from a pipe\n"
    );
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("with space.txt");
    std::fs::write(&src, "kept name").unwrap();
    let (code, _, err) = cli(a(&[
        "-q",
        "put",
        src.to_str().unwrap(),
        &format!("{u}sub/"),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(tree.path().join("sub/with space.txt")).unwrap(),
        b"kept name"
    );

    let (code, _, err) = cli(a(&["mkdir", "-p", &format!("{u}p/q/r")])).await;
    assert_eq!(code, 0, "{err}");
    assert!(tree.path().join("p/q/r").is_dir());
    let (code, _, err) = cli(a(&["mkdir", "-p", &format!("{u}p/q")])).await;
    assert_eq!(code, 0, "an existing directory is fine: {err}");
    let (code, _, _) = cli(a(&["mkdir", &format!("{u}p/q")])).await;
    assert_eq!(code, 1, "without -p it exists");
}

/// `--json` errors are one object on stdout (layer, code, exit); `-v`
/// logs what the client chose on stderr, `-vv` each message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_and_verbose_logs() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let (code, out, _) = cli(a(&["--json", "cat", &format!("{}missing", s.url)])).await;
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(v["error"]["layer"], "remote", "{out}");
    assert_eq!(v["error"]["code"], "no-such-file", "{out}");
    assert_eq!(v["error"]["exit"], 1, "{out}");
    let (code, _, err) = cli(a(&["-v", "cat", &format!("{}hello.txt", s.url)])).await;
    assert_eq!(code, 0);
    assert!(err.contains("server chosen"), "{err}");
    assert!(!err.contains("POST message"), "-v is not -vv: {err}");
    let (_, _, err) = cli(a(&["-vv", "cat", &format!("{}hello.txt", s.url)])).await;
    assert!(err.contains("POST message"), "{err}");
    let (_, _, err) = cli(a(&["cat", &format!("{}hello.txt", s.url)])).await;
    assert!(err.is_empty(), "quiet by default: {err}");
}

/// `mv` between directories of one tree (by URL or `../`), `rm -r` of a
/// tree with nested and empty directories, and `call` of a command with
/// key=value arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mv_between_directories_rm_recursive_and_call() {
    let tree = tempfile::tempdir().unwrap();
    let p = tree.path();
    std::fs::create_dir_all(p.join("a")).unwrap();
    std::fs::create_dir_all(p.join("b")).unwrap();
    std::fs::write(p.join("a/x.txt"), "x").unwrap();
    std::fs::write(p.join("a/w.txt"), "w").unwrap();
    std::fs::create_dir_all(p.join("t/deep/er")).unwrap();
    std::fs::create_dir_all(p.join("t/empty")).unwrap();
    std::fs::write(p.join("t/deep/er/f"), "f").unwrap();
    std::fs::write(p.join("t/g"), "g").unwrap();
    let s = smart_server(p, |c| c.allow_writes = true).await;
    let u = &s.url;
    let (code, _, err) = cli(a(&["mv", &format!("{u}a/x.txt"), &format!("{u}b/y.txt")])).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(p.join("b/y.txt")).unwrap(), b"x");
    let (code, _, err) = cli(a(&["mv", &format!("{u}a/w.txt"), "../b/w.txt"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(p.join("b/w.txt").exists() && !p.join("a/w.txt").exists());
    let (code, _, _) = cli(a(&[
        "mv",
        &format!("{u}b/w.txt"),
        "http://elsewhere.invalid/w",
    ]))
    .await;
    assert_eq!(code, 2, "another server is a usage error");

    let (code, _, err) = cli(a(&["rm", "-r", &format!("{u}t")])).await;
    assert_eq!(code, 0, "{err}");
    assert!(!p.join("t").exists(), "the whole tree is gone");

    let url = u.clone();
    let out = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("framegate")
            .unwrap()
            .args(["call", &url, "has", "path=b/y.txt"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, [0xf5], "the answer as sent: CBOR true");
    let (code, _, _) = cli(a(&["call", u, "has", "no-equals-sign"])).await;
    assert_eq!(code, 2);
}

/// `get --verify` checks the copy against the server's SHA-256; against a
/// plain server it says a framegate server is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_verify_uses_the_servers_digest() {
    let tree = sample_tree();
    let s = smart_server(tree.path(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.bin");
    let (code, _, err) = cli(a(&[
        "-q",
        "get",
        "--verify",
        &format!("{}sub/a.bin", s.url),
        dest.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    // A server whose digest does not match what it sent: the copy is
    // reported (exit 5), not silently accepted.
    let mut registry = framegate_server::Registry::files();
    registry.register(
        "digest",
        framegate_server::command::read_command(|_call| async move {
            Ok(framegate_server::command::Answer::cbor(
                &framegate_wire::DigestAnswer {
                    algorithm: "sha256".into(),
                    digest: "00".repeat(32),
                    size: 100_000,
                    etag: "x".into(),
                },
            ))
        }),
    );
    let gateway =
        framegate_server::Gateway::new(framegate_server::GatewayConfig::new(tree.path()), registry)
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let liar = framegate_server::serve(gateway, listener, None)
        .await
        .unwrap();
    let (code, _, err) = cli(a(&[
        "-q",
        "get",
        "--verify",
        &format!("http://{}/sub/a.bin", liar.local_addr),
        dir.path().join("c.bin").to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("is not the server's"), "{err}");
    let ngx = nginx(tree.path());
    let (code, _, err) = cli(a(&[
        "-q",
        "get",
        "--verify",
        &format!("{}sub/a.bin", ngx.url("json")),
        dir.path().join("b.bin").to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("digest needs a framegate server"), "{err}");
}
