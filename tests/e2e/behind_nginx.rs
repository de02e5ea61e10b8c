//! Two gateway processes behind a real nginx over HTTPS (deploy/ config,
//! certificates made at test time), reached with the framegate client.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use framegate_client::Refusal;
use framegate_client::{Error, Options, Transport};
use framegate_e2e::*;
use framegate_wire::ErrorCode;
use sha2::{Digest, Sha256};

struct Stack {
    dir: tempfile::TempDir,
    tree: std::path::PathBuf,
    tls: Tls,
    gateways: Vec<Gateway>,
    nginx: Nginx,
}

const TOKEN: &str = "e2e-write-token";

fn stack() -> Stack {
    stack_with(Tls::generate)
}

/// The stack with the certificates `make_tls` makes.
fn stack_with(make_tls: fn(&Path) -> Tls) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello over https\n").unwrap();
    std::fs::write(tree.join("sub/data.bin"), noise(200_000, 1)).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let tls = make_tls(dir.path());
    let gateways = vec![
        Gateway::start(&tree, &token, &[]),
        Gateway::start(&tree, &token, &[]),
    ];
    let ngx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let nginx = Nginx::start(
        &ngx_dir,
        &tls,
        [gateways[0].port, gateways[1].port],
        &tree,
        "",
    );
    Stack {
        dir,
        tree,
        tls,
        gateways,
        nginx,
    }
}

impl Stack {
    fn options(&self, token: bool) -> Options {
        let mut o = Options::default();
        o.ca_cert = Some(self.tls.ca.clone());
        o.token = token.then(|| TOKEN.to_string());
        o
    }

    fn messages(&self, i: usize) -> f64 {
        self.gateways[i].metric("framegate_messages_total")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_over_https_every_command_and_auth_on_rw_only() {
    let s = stack();
    let t = Transport::open(&s.nginx.url("/"), s.options(true))
        .await
        .unwrap();
    assert!(t.is_smart(), "probe through nginx says smart");
    assert_eq!(
        t.get("hello.txt").await.unwrap().as_ref(),
        b"hello over https\n"
    );
    let data = std::fs::read(s.tree.join("sub/data.bin")).unwrap();
    let parts = t
        .readv("sub/data.bin", &[(0, 10), (150_000, 5)])
        .await
        .unwrap();
    assert_eq!(
        parts,
        vec![
            Bytes::copy_from_slice(&data[..10]),
            Bytes::copy_from_slice(&data[150_000..150_005])
        ]
    );
    assert!(t.has("sub").await.unwrap());
    assert_eq!(t.stat("sub/data.bin").await.unwrap().size, 200_000);
    assert_eq!(t.list_dir("").await.unwrap(), ["hello.txt", "sub"]);
    assert_eq!(
        t.iter_files_recursive("").await.unwrap(),
        ["hello.txt", "sub/data.bin"]
    );
    t.put("w.txt", "written", None).await.unwrap();
    assert_eq!(t.append("w.txt", "+").await.unwrap(), 7);
    t.mkdir("d", None).await.unwrap();
    t.rename("w.txt", "d/w.txt").await.unwrap();
    assert_eq!(std::fs::read(s.tree.join("d/w.txt")).unwrap(), b"written+");
    t.delete("d/w.txt").await.unwrap();
    t.rmdir("d").await.unwrap();

    // rw needs the token; ro answers but refuses writes.
    let anonymous = Transport::open(&s.nginx.url("/"), s.options(false))
        .await
        .unwrap();
    assert_eq!(
        anonymous.get("hello.txt").await.unwrap().as_ref(),
        b"hello over https\n"
    );
    let err = anonymous.put("x", "y", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Credentials { status: 401, .. })
        ),
        "{err}"
    );
    let err = anonymous
        .call("put", path_args("x"), Some(Bytes::from("y")), false)
        .await
        .unwrap_err();
    assert!(err.is(&ErrorCode::READ_ONLY), "{err}");
    assert!(!s.tree.join("x").exists());
}

fn path_args(p: &str) -> framegate_wire::Arguments {
    framegate_wire::Arguments::new()
        .with("path", p.to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_round_trip_keeps_server_memory_bounded() {
    let s = stack();
    let t = Transport::open(&s.nginx.url("/"), s.options(true))
        .await
        .unwrap();
    let src = s.dir.path().join("big.src");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        for i in 0..256 {
            f.write_all(&noise(1 << 20, i)).unwrap();
        }
    }
    let digest = |p: &Path| {
        let mut h = Sha256::new();
        let mut f = std::fs::File::open(p).unwrap();
        std::io::copy(&mut f, &mut h).unwrap();
        hex::encode(h.finalize())
    };
    for g in &s.gateways {
        g.reset_peak_rss();
    }
    let mut file = tokio::fs::File::open(&src).await.unwrap();
    t.put_from("big.bin", &mut file, None).await.unwrap();
    let dest = s.dir.path().join("big.dest");
    assert_eq!(t.download("big.bin", &dest).await.unwrap(), 256 << 20);
    assert_eq!(
        digest(&src),
        digest(&dest),
        "SHA-256 matches after the round trip"
    );
    assert_eq!(digest(&src), digest(&s.tree.join("big.bin")));
    for g in &s.gateways {
        let peak = g.peak_rss_mib();
        eprintln!(
            "gateway {} peak RSS during 256 MiB put+get: {peak:.1} MiB",
            g.port
        );
        assert!(peak < 64.0, "server RSS stays bounded: {peak:.1} MiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_alternate_and_a_write_on_one_is_read_on_the_other() {
    let s = stack();
    let t = Transport::open(&s.nginx.url("/"), s.options(true))
        .await
        .unwrap();
    let before = [s.messages(0), s.messages(1)];
    for _ in 0..10 {
        assert!(t.has("hello.txt").await.unwrap());
    }
    let delta = [s.messages(0) - before[0], s.messages(1) - before[1]];
    assert_eq!(delta[0] + delta[1], 10.0);
    assert!(
        delta[0] >= 3.0 && delta[1] >= 3.0,
        "round robin spreads messages: {delta:?}"
    );
    // Write through nginx (one instance), read straight from each instance.
    t.put("shared.txt", "one tree", None).await.unwrap();
    for g in &s.gateways {
        let direct = Transport::open(&format!("http://127.0.0.1:{}/", g.port), Options::default())
            .await
            .unwrap();
        assert_eq!(
            direct.get("shared.txt").await.unwrap().as_ref(),
            b"one tree",
            "instance {}",
            g.port
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_instance_leaves_the_other_serving() {
    let mut s = stack();
    let t = Transport::open(&s.nginx.url("/"), s.options(true))
        .await
        .unwrap();
    s.gateways[0].stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = s.messages(1);
    for i in 0..10 {
        assert_eq!(
            t.get("hello.txt").await.unwrap().as_ref(),
            b"hello over https\n",
            "message {i}"
        );
    }
    t.put("after-stop.txt", "still writable", None)
        .await
        .unwrap();
    assert_eq!(
        s.messages(1) - before,
        11.0,
        "the survivor answered every message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_location_falls_back_to_plain_with_the_same_bytes() {
    let s = stack();
    let smart = Transport::open(&s.nginx.url("/"), s.options(true))
        .await
        .unwrap();
    let plain = Transport::open(&s.nginx.url("/static/"), s.options(true))
        .await
        .unwrap();
    assert!(smart.is_smart() && !plain.is_smart());
    assert_eq!(
        plain.get("sub/data.bin").await.unwrap(),
        smart.get("sub/data.bin").await.unwrap()
    );
    let ranges = [(5, 100), (199_000, 1000)];
    assert_eq!(
        plain.readv("sub/data.bin", &ranges).await.unwrap(),
        smart.readv("sub/data.bin", &ranges).await.unwrap()
    );
    assert_eq!(
        plain.list_dir("").await.unwrap(),
        smart.list_dir("").await.unwrap()
    );
    assert!(
        plain
            .put("x", "y", None)
            .await
            .unwrap_err()
            .is(&ErrorCode::NOT_SUPPORTED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http11_to_nginx_both_work() {
    let s = stack();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&s.tls.ca).unwrap()).unwrap();
    for (h1, expected) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder().add_root_certificate(ca.clone());
        if h1 {
            b = b.http1_only();
        }
        let resp = b
            .build()
            .unwrap()
            .get(s.nginx.url("/.framegate/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), expected);
        let mut o = s.options(true);
        o.http1_only = h1;
        let t = Transport::open(&s.nginx.url("/"), o).await.unwrap();
        let mut batch = t.batch();
        let slots: Vec<_> = (0..200).map(|_| batch.get("hello.txt")).collect();
        let put = batch.put(
            &format!("via-h{}.txt", if h1 { 1 } else { 2 }),
            Bytes::from(vec![1u8; 100_000]),
            None,
        );
        let mut r = batch.send().await.unwrap();
        for slot in slots {
            assert_eq!(r.take(slot).unwrap().as_ref(), b"hello over https\n");
        }
        r.take(put).unwrap();
    }
    assert!(
        !s.nginx.error_log().contains("[crit]"),
        "{}",
        s.nginx.error_log()
    );
}

/// A certificate made the usual way (`openssl req -x509`: its own CA) is
/// refused by the client even with `--ca-cert` (rustls:
/// `CaUsedAsEndEntity`; the CLI explains it and deploy/README.md gives a
/// recipe that works), and `insecure` (`-k`) skips the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_is_refused_unless_insecure() {
    let stack = stack_with(Tls::self_signed_ca);
    let (tls, nginx) = (&stack.tls, &stack.nginx);
    let mut o = Options::default();
    o.ca_cert = Some(tls.ca.clone());
    let err = Transport::open(&nginx.url("/"), o.clone())
        .await
        .unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        source = s.source();
    }
    assert!(chain.contains("CaUsedAsEndEntity"), "{chain}");
    o.insecure = true;
    let t = Transport::open(&nginx.url("/"), o).await.unwrap();
    assert!(t.is_smart());
    assert_eq!(t.get("hello.txt").await.unwrap(), "hello over https\n");
    // The CLI: the same refusal, explained with what to do (exit 3); -k
    // reads with a warning.
    let cli = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(framegate_e2e::client_binary())
                .args(args)
                .env("NETRC", "/nonexistent")
                .output()
                .unwrap()
        })
    };
    let ca = tls.ca.display().to_string();
    let out = cli(vec!["--ca-cert".into(), ca, "probe".into(), nginx.url("/")])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("a CA certificate") && err.contains("Sign a server certificate with it"),
        "{err}"
    );
    let out = cli(vec!["-k".into(), "cat".into(), nginx.url("/hello.txt")])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello over https\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure"));
}
