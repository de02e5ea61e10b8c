//! `cargo run --release -p framegate-bench --bin cost` — what one small
//! `get` costs the server, in instructions (callgrind: no noise from a
//! shared machine), with the floor beside it.
//!
//! The release server runs under `valgrind --tool=callgrind` with
//! instrumentation off; after a warm-up message, it is switched on for
//! one message of 1,000 `get`s of 1 KiB files and then for a message of
//! one `get` (`callgrind_control`), and each is dumped. Instructions per
//! `get` = (I(1,000) − I(1)) / 999: the message's fixed cost (HTTP, the
//! reactor's set-up) drops out. Both messages go identity-encoded (no
//! zstd) and their answers are read whole.
//!
//! The floor: the same 1,000 files opened, `fstat`ed, read and closed by
//! one thread in this process — user-space instructions under callgrind
//! (the kernel's are not counted, as for the server) and wall time.
//! `FRAMEGATE_COST_FILES` (default 1,000) files.
//!
//! Writes the `cost` section of BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framegate_e2e::{Batch, free_port, message_client, post_message, server_binary};

#[path = "../sections.rs"]
mod sections;

const TOKEN: &str = "cost-token";

/// Opens, `fstat`s, reads and closes every file: the least a server must
/// do for these `get`s.
#[inline(never)]
fn floor_pass(files: &[PathBuf], buf: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for path in files {
        let mut file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        buf.clear();
        file.read_to_end(buf).unwrap();
        total += len.min(buf.len());
    }
    total
}

/// The `totals:` count of a callgrind output file (its `summary:` line
/// can be 0 in a dump taken while collection runs).
fn instructions(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    let count = |prefix: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(prefix)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    count("totals:")
        .or_else(|| count("summary:"))
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// The `n` functions of a callgrind dump with the highest self cost, as
/// `callgrind_annotate` prints them (paths shortened).
fn top_functions(file: &Path, n: usize) -> String {
    let out = Command::new("callgrind_annotate")
        .arg(file)
        .output()
        .expect("callgrind_annotate (valgrind) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = String::new();
    for line in text
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .take(n)
    {
        lines.push_str(&shorten(line));
        lines.push('\n');
    }
    lines
}

/// A profile line without the binary's path and with crate sources named
/// from the crate (`tokio-1.x/src/…`) or the standard library (`core/…`).
fn shorten(line: &str) -> String {
    let mut line = line.split(" [").next().unwrap_or(line).to_owned();
    for marker in ["/.cargo/registry/src/", "/rustc/"] {
        if let Some(at) = line.find(marker) {
            let start = line[..at].rfind(' ').map_or(0, |i| i + 1);
            let tail = &line[at + marker.len()..];
            // Skip the registry's index directory, or the compiler's hash
            // and `library/`.
            let skip = if marker == "/rustc/" { 2 } else { 1 };
            let rest = tail
                .match_indices('/')
                .nth(skip - 1)
                .map_or(tail, |(i, _)| &tail[i + 1..]);
            line = format!("{}{rest}", &line[..start]);
        }
    }
    line
}

fn callgrind_control(args: &[&str], pid: u32) {
    let status = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control (valgrind) is installed");
    assert!(status.success(), "callgrind_control {args:?} failed");
}

/// The newest dump `callgrind.out.N` in `dir` after the one numbered
/// `after`.
fn dump_numbered(dir: &Path, n: u32) -> PathBuf {
    let want = format!(".{n}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&want))
        {
            return found;
        }
        assert!(Instant::now() < deadline, "dump {n} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gets(files: &[PathBuf], tree: &Path) -> Batch {
    let mut batch = Batch::new();
    for f in files {
        let rel = f.strip_prefix(tree).unwrap().to_string_lossy().into_owned();
        batch.add("get", &[("path", rel.as_bytes())], None);
    }
    batch
}

async fn message(url: &str, files: &[PathBuf], tree: &Path) {
    let mut batch = gets(files, tree);
    let body = batch.take_body();
    let bytes = post_message(&message_client(), url, TOKEN, body.into())
        .await
        .unwrap();
    let outcomes = batch.decode(&bytes);
    assert_eq!(outcomes.len(), files.len());
    for o in outcomes {
        assert!(
            matches!(o, framegate_e2e::Outcome::Ok(ref b) if b.len() == 1024),
            "a get failed"
        );
    }
}

fn floor_under_callgrind(dir: &Path) -> u64 {
    let out = dir.join("floor.out");
    let status = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*floor_pass*",
        ])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().unwrap())
        .arg("--floor")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the floor under callgrind failed");
    instructions(&out)
}

/// CPU time (user + system) of process `pid` so far, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks * 10.0
}

/// Context switches (voluntary and not) of every thread of `pid` so far.
fn context_switches(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The release server run normally: `messages` messages of a `get` of
/// every file, one after another; the server's CPU time per message (ms)
/// and its threads' context switches per `get`.
async fn cpu_and_switches(files: &[PathBuf], tree: &Path, messages: usize) -> (f64, f64) {
    let token = tree.parent().unwrap().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let gw = framegate_e2e::Gateway::start(tree, &token, &[]);
    let url = format!("{}/.framegate/ro", gw.url());
    message(&url, files, tree).await;
    let (cpu, switches) = (cpu_ms(gw.pid()), context_switches(gw.pid()));
    for _ in 0..messages {
        message(&url, files, tree).await;
    }
    let cpu = (cpu_ms(gw.pid()) - cpu) / messages as f64;
    let switches = (context_switches(gw.pid()) - switches) as f64 / (messages * files.len()) as f64;
    (cpu, switches)
}

fn files_in(tree: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tree)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--floor") {
        // Run by `floor_under_callgrind`: one pass over the tree.
        let tree = PathBuf::from(&args[2]).join("tree");
        let files = files_in(&tree);
        let mut buf = Vec::with_capacity(4096);
        let total = floor_pass(&files, &mut buf);
        assert_eq!(total, files.len() * 1024);
        return;
    }
    let count = std::env::var("FRAMEGATE_COST_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000usize);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..count {
        let body: Vec<u8> = (0..1024u32).map(|b| (b * 7 + i as u32) as u8).collect();
        std::fs::write(tree.join(format!("f{i:05}")), body).unwrap();
    }
    let files = files_in(&tree);

    // The floor: wall time (median of 21 passes) and instructions.
    let mut buf = Vec::with_capacity(4096);
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        floor_pass(&files, &mut buf);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let floor_ms = times[times.len() / 2];
    let floor_ir = floor_under_callgrind(dir.path());
    // More messages (`FRAMEGATE_COST_MESSAGES`) to profile the server
    // meanwhile.
    let messages = std::env::var("FRAMEGATE_COST_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize);
    let (cpu_per_message, switches_per_get) = cpu_and_switches(&files, &tree, messages).await;

    // The server under callgrind, collection off until asked.
    let port = free_port();
    let cg_dir = dir.path().join("cg");
    std::fs::create_dir(&cg_dir).unwrap();
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!(
            "--callgrind-out-file={}",
            cg_dir.join("callgrind.out").display()
        ))
        .arg(server_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg(&tree)
        // Set as the server would set it for itself: without it the server
        // re-executes itself to set it, and callgrind (not following
        // exec) loses it.
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server never listened");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server under callgrind exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("http://127.0.0.1:{port}/.framegate/ro");
    // Warm-up: first-touch allocations, the file pool's threads.
    message(&url, &files, &tree).await;
    message(&url, &files[..1], &tree).await;

    let measure = |n: usize, dump: u32| {
        let url = url.clone();
        let files = files[..n].to_vec();
        let tree = tree.clone();
        let cg_dir = cg_dir.clone();
        async move {
            callgrind_control(&["-z"], pid);
            callgrind_control(&["-i", "on"], pid);
            message(&url, &files, &tree).await;
            callgrind_control(&["-i", "off"], pid);
            callgrind_control(&["-d"], pid);
            let file = dump_numbered(&cg_dir, dump);
            (instructions(&file), file)
        }
    };
    let (many, many_file) = measure(count, 1).await;
    let (one, _) = measure(1, 2).await;
    let profile = top_functions(&many_file, 15);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();

    let per_get = many.saturating_sub(one) as f64 / (count - 1).max(1) as f64;
    let floor_per_file = floor_ir as f64 / count as f64;
    let body = format!(
        "## Cost per small `get` (instructions)\n\n\
         Written by `cargo run --release -p framegate-bench --bin cost`: the release server under callgrind \
         (user-space instructions, all threads; deterministic, unlike times on this shared machine), one message of \
         {count} `get`s of 1 KiB files against one of a single `get`, identity-encoded, answers read whole.\n\n\
         | measure | instructions | per `get` |\n|---|---|---|\n\
         | server, message of {count} `get`s | {many} | — |\n\
         | server, message of 1 `get` | {one} | — |\n\
         | server, per `get` ((I({count}) − I(1)) / {}) | — | {per_get:.0} |\n\
         | floor: open + fstat + read + close, one thread, user space | {floor_ir} | {floor_per_file:.0} |\n\n\
         The floor's wall time: {floor_ms:.2} ms for {count} page-cached files (median of 21 passes), \
         {:.1} µs a file; the kernel's share is not in any instruction count above.\n\n\
         The same server run normally, {messages} messages of {count} `get`s one after another: {cpu_per_message:.1} ms of \
         CPU time (user + system, all threads) per message, {:.1} µs per `get`, against the floor's {:.1}; its \
         threads switched context {switches_per_get:.2} times per `get` (`/proc/<pid>/task/*/status`): each \
         `get` is handed to a file-pool thread and its answer back to the async runtime.\n\n\
         Where the {count}-`get` message's instructions go (self cost, `callgrind_annotate`, top 15):\n\n\
         ```text\n{profile}```\n",
        count - 1,
        floor_ms * 1e3 / count as f64,
        cpu_per_message * 1e3 / count as f64,
        floor_ms * 1e3 / count as f64,
    );
    print!("{body}");
    sections::replace_section(
        &framegate_e2e::repo_root().join("BENCHMARKS.md"),
        "cost",
        &body,
    );
}
