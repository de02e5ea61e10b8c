//! Runs the server's fuzz entry points (`framegate_server::fuzzing`) on
//! pseudo-random input and on the fuzz seeds (`fuzz/seeds/<target>`) with
//! the stable toolchain, so CI exercises them without cargo-fuzz. Needs
//! `--features fuzzing`.
//!
//! Each test stops after its time or its iteration count (scaled with the
//! time), whichever comes first. Knobs: `FRAMEGATE_FUZZ_SEED` (a number;
//! the default is fixed, so runs repeat) and `FRAMEGATE_FUZZ_SECS`
//! (seconds per test, default 3).
//! A failing run saves its input (path printed) for the fuzz target of
//! the same name: `cargo fuzz run <target> <file>` replays it.
#![cfg(feature = "fuzzing")]

use std::time::{Duration, Instant};

use framegate_server::fuzzing;
use framegate_wire::fuzzing::{MessageScript, Outcome};

const DEFAULT_SEED: u64 = 0x5eed_f00d;

fn base_seed() -> u64 {
    std::env::var("FRAMEGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn budget() -> Duration {
    let secs = std::env::var("FRAMEGATE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Saves the input of a run that panics (under the test's target
/// directory) and prints where, with its start in hex.
struct Report<'a> {
    target: &'a str,
    run: u64,
    input: &'a [u8],
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fuzz-failure-{}-{}", self.target, self.run));
        let saved = match std::fs::write(&path, self.input) {
            Ok(()) => path.display().to_string(),
            Err(e) => format!("not saved: {e}"),
        };
        eprintln!(
            "failing {} input (FRAMEGATE_FUZZ_SEED={}, run {}, {} bytes, {saved}): {}{}",
            self.target,
            base_seed(),
            self.run,
            self.input.len(),
            hex::encode(&self.input[..self.input.len().min(256)]),
            if self.input.len() > 256 { "..." } else { "" },
        );
    }
}

/// Runs `each` on `make`'s inputs (one generator per run, seeded from the
/// base seed and the run number) until the time budget or `max_runs` —
/// per 3 s of budget, so a longer budget also allows more runs.
fn bounded(
    target: &str,
    max_runs: u64,
    mut make: impl FnMut(&mut fastrand::Rng) -> Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> u64 {
    let started = Instant::now();
    let max_runs = max_runs * (budget().as_secs_f64() / 3.0).ceil().max(1.0) as u64;
    let mut runs = 0;
    while runs < max_runs && started.elapsed() < budget() {
        let mut rng = fastrand::Rng::with_seed(base_seed() ^ runs.wrapping_mul(0x9e37_79b9));
        let input = make(&mut rng);
        let _report = Report {
            target,
            run: runs,
            input: &input,
        };
        each(&input);
        runs += 1;
    }
    eprintln!("{target}: {runs} runs in {:.1?}", started.elapsed());
    runs
}

/// The seed corpus of a fuzz target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = rng.usize(..=max);
    std::iter::repeat_with(|| rng.u8(..)).take(len).collect()
}

/// A well-formed message of real commands, now and then damaged: a byte
/// flipped, cut short, or a piece repeated.
fn message_bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.u8(..) < 32 {
        return random_bytes(rng, 200);
    }
    let script = MessageScript::from_bytes(&random_bytes(rng, 300));
    let mut bytes = script.encode().body.to_vec();
    if bytes.is_empty() {
        return bytes;
    }
    match rng.u8(..4) {
        0 => {
            let at = rng.usize(..bytes.len());
            bytes[at] ^= rng.u8(1..);
        }
        1 => bytes.truncate(rng.usize(..bytes.len())),
        2 => {
            let from = rng.usize(..bytes.len());
            let piece = bytes[from..].to_vec();
            bytes.extend_from_slice(&piece[..piece.len().min(64)]);
        }
        _ => {}
    }
    bytes
}

#[test]
fn clean_path_on_random_input() {
    let pieces: &[&[u8]] = &[
        b"a",
        b"b.txt",
        b".",
        b"..",
        b"/",
        b"/",
        b"//",
        b".framegate",
        b".framegate-upload-",
        b".framegatex",
        b"\0",
        b"\\",
        b"\xc3\xa9",
        b"\xff",
        b" ",
        b"~",
        b"C:",
    ];
    bounded(
        "clean_path",
        20_000,
        |rng| {
            if rng.bool() {
                random_bytes(rng, 16)
            } else {
                (0..rng.usize(..10))
                    .flat_map(|_| pieces[rng.usize(..pieces.len())].iter().copied())
                    .collect()
            }
        },
        fuzzing::clean_path,
    );
    for seed in seeds("clean_path") {
        fuzzing::clean_path(&seed);
    }
}

#[test]
fn drive_message_on_random_input() {
    let runs = bounded("driver_bytes", 400, message_bytes, fuzzing::drive_message);
    assert!(runs > 0);
    for seed in seeds("driver_bytes") {
        fuzzing::drive_message(&seed);
    }
}

#[test]
fn drive_ops_on_random_input() {
    let mut answered = 0;
    let mut failed = 0;
    let mut codes = std::collections::BTreeMap::new();
    let mut count = |outcomes: Vec<Outcome>| {
        for outcome in outcomes {
            match outcome {
                Outcome::Answered(_) => answered += 1,
                Outcome::Failed(_, code) => {
                    failed += 1;
                    *codes.entry(code.as_str().to_string()).or_insert(0) += 1;
                }
                Outcome::Unanswered => {}
            }
        }
    };
    bounded(
        "driver_ops",
        300,
        |rng| random_bytes(rng, 400),
        |input| count(fuzzing::drive_ops(&MessageScript::from_bytes(input))),
    );
    for seed in seeds("driver_ops") {
        count(fuzzing::drive_ops(&MessageScript::from_bytes(&seed)));
    }
    eprintln!("drive_ops: {answered} requests answered, {failed} failed: {codes:?}");
    // The inputs reach command execution, not only frame errors.
    assert!(answered >= 10, "{answered} requests answered");
    assert!(failed >= 10, "{failed} requests failed");
}

/// The seed corpora of the fuzz targets (`fuzz/seeds/<target>`) are made
/// from real inputs by this test: it checks that the committed seeds are
/// what the current vocabulary makes, and with `FRAMEGATE_WRITE_SEEDS=1`
/// (re)writes them (after changing the vocabulary).
#[test]
fn seed_corpus_is_current() {
    use framegate_wire::client::ClientConfig;
    use framegate_wire::{Arguments, ClientReactor, Encoding};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let rewrite = std::env::var_os("FRAMEGATE_WRITE_SEEDS").is_some();
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        if rewrite {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        } else {
            let committed = std::fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("seed {target}/{name}: {e} (FRAMEGATE_WRITE_SEEDS=1)"));
            assert!(
                committed == bytes,
                "seed {target}/{name} is stale: rerun with FRAMEGATE_WRITE_SEEDS=1"
            );
        }
    };

    let ranges: &[(&str, &str)] = &[
        ("two", "0,10\n100,5"),
        ("one", "0,1"),
        ("empty", ""),
        ("max-offset", "18446744073709551615,0"),
        ("spaces-crlf", " 5 , 3\r\n"),
        ("blank-lines", "0,1\n\n2,3\n"),
        ("negative", "-1,3"),
        ("overflow", "18446744073709551615,1"),
    ];
    for (name, text) in ranges {
        write("ranges", name, text.as_bytes());
    }
    let preambles: &[(&str, &str)] = &[
        (
            "client-zstd",
            "framegate/1 accept-encoding=zstd-8mb,identity\n",
        ),
        ("client-bare", "framegate/1\n"),
        (
            "client-extra",
            "framegate/1  token=x  accept-encoding=brotli,zstd-8mb \r\n",
        ),
        ("server-ok", "framegate/1 ok\n"),
        ("server-error", "framegate/1 error unsupported-version\n"),
        ("http", "GET / HTTP/1.1\r\n"),
        ("version-2", "framegate/2 accept-encoding=identity\n"),
    ];
    for (name, text) in preambles {
        write("preamble", name, text.as_bytes());
    }
    let paths: &[(&str, &[u8])] = &[
        ("dotdot-inside", b"a/b/../c"),
        ("dots-slashes", b"./a//b/"),
        ("dotdot", b".."),
        ("absolute", b"/etc/passwd"),
        ("reserved", b"x/.framegate/ro"),
        ("staging-name", b"sub/.framegate-upload-1"),
        ("nul", b"a\0b"),
        ("unicode", "\u{e9}/\u{fc}.txt".as_bytes()),
        ("reserved-left", b".framegate/../a"),
    ];
    for (name, path) in paths {
        write("clean_path", name, path);
    }

    // Real messages, as the client reactor encodes them.
    type Request<'a> = (&'a str, &'a [(&'a str, &'a [u8])], Option<&'a [u8]>);
    let message = |encoding: Encoding, requests: &[Request<'_>]| {
        let mut client = ClientReactor::new({
            let mut config = ClientConfig::default();
            config.encoding = encoding;
            config
        });
        for (name, args, data) in requests {
            let mut a = Arguments::new();
            for (k, v) in *args {
                a.insert(k, bytes::Bytes::copy_from_slice(v)).unwrap();
            }
            client
                .request(name, &a, data.map(bytes::Bytes::copy_from_slice))
                .unwrap();
        }
        let mut body = bytes::BytesMut::new();
        client.write_transmit(&mut body);
        body.to_vec()
    };
    let id = Encoding::Identity;
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "hello-get",
            message(
                id,
                &[("hello", &[], None), ("get", &[("path", b"a.txt")], None)],
            ),
        ),
        (
            "put-get",
            message(
                id,
                &[
                    ("put", &[("path", b"new.txt")], Some(b"new contents\n")),
                    ("get", &[("path", b"new.txt")], None),
                ],
            ),
        ),
        (
            "readv-stat-has",
            message(
                id,
                &[
                    (
                        "readv",
                        &[("path", b"b.bin"), ("ranges", b"0,3\n5,2")],
                        None,
                    ),
                    ("stat", &[("path", b"sub/c.txt")], None),
                    ("has", &[("path", b"missing")], None),
                ],
            ),
        ),
        (
            "listings",
            message(
                id,
                &[
                    ("list_dir", &[("path", b"sub")], None),
                    ("iter_files_recursive", &[], None),
                ],
            ),
        ),
        (
            "mkdir-rename-delete",
            message(
                id,
                &[
                    ("mkdir", &[("path", b"sub/new"), ("mode", b"755")], None),
                    ("put", &[("path", b"sub/new/x")], Some(b"x")),
                    (
                        "rename",
                        &[("from", b"sub/new/x"), ("to", b"sub/new/y")],
                        None,
                    ),
                    ("delete", &[("path", b"sub/new/y")], None),
                    ("rmdir", &[("path", b"sub/new")], None),
                ],
            ),
        ),
        (
            "append",
            message(id, &[("append", &[("path", b"new.txt")], Some(b"more\n"))]),
        ),
        (
            "zstd-hello-get",
            message(
                Encoding::Zstd8Mb,
                &[("hello", &[], None), ("get", &[("path", b"a.txt")], None)],
            ),
        ),
        (
            "escapes",
            message(
                id,
                &[
                    ("get", &[("path", b"../outside.txt")], None),
                    ("get", &[("path", b"link")], None),
                    ("put", &[("path", b"linkdir/x")], Some(b"x")),
                ],
            ),
        ),
    ];
    for (name, bytes) in &messages {
        write("driver_bytes", name, bytes);
    }
    let cut = &messages[1].1;
    write("driver_bytes", "put-cut-short", &cut[..cut.len() - 5]);

    // Scripts: the first random inputs that make well-formed messages of
    // several commands, and a few that do not.
    let limits = framegate_wire::ServerConfig::default();
    let (mut well_formed, mut other) = (0, 0);
    for seed in 0..10_000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let input = random_bytes(&mut rng, 160);
        let message = MessageScript::from_bytes(&input).encode();
        let distinct: std::collections::HashSet<_> = message.commands().iter().collect();
        if message.must_be_answered(&limits) && distinct.len() >= 4 && well_formed < 8 {
            write("driver_ops", &format!("well-formed-{well_formed}"), &input);
            well_formed += 1;
        } else if !message.is_well_formed() && message.requests() >= 3 && other < 3 {
            write("driver_ops", &format!("damaged-{other}"), &input);
            other += 1;
        }
    }
}
