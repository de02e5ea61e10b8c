//! §6 ordering inside one message: a matrix of rows, each a write followed
//! by commands that depend on it, all queued behind an 8 MiB `put`.

use futures_util::StreamExt;

use super::*;

/// Size of the `put` every row waits behind.
const BIG: usize = 8 << 20;

/// One wire step of a row.
enum Step {
    /// A whole request.
    Req {
        cmd: &'static str,
        args: Vec<(&'static str, &'static str)>,
        data: Option<Vec<u8>>,
        expect: Expect,
    },
    /// Starts a request with data and sends `first` (not the last part):
    /// the request becomes complete only at its `Finish`, so it is ordered
    /// after everything completed in between.
    Begin {
        tag: &'static str,
        cmd: &'static str,
        args: Vec<(&'static str, &'static str)>,
        first: Vec<u8>,
    },
    /// Sends the rest of a begun request's data, completing it.
    Finish {
        tag: &'static str,
        rest: Vec<u8>,
        expect: Expect,
    },
}

fn req(
    cmd: &'static str,
    args: &[(&'static str, &'static str)],
    data: Option<&[u8]>,
    expect: Expect,
) -> Step {
    Step::Req {
        cmd,
        args: args.to_vec(),
        data: data.map(<[u8]>::to_vec),
        expect,
    }
}

fn path(p: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![("path", p)]
}

/// A `list_dir` answer.
fn names(names: &[&str]) -> Expect {
    Expect::Names(names.iter().map(|n| n.to_string()).collect())
}

fn file(content: &[u8]) -> Entry {
    Entry::File(content.to_vec())
}

/// A row of the ordering matrix: a base directory set up on disk, one
/// message (after the 8 MiB put), the tree the base must hold afterwards
/// (besides the big file).
struct Row {
    name: &'static str,
    setup: Vec<(&'static str, Entry)>,
    steps: Vec<Step>,
    after: Vec<(&'static str, Entry)>,
}

#[allow(clippy::too_many_lines)]
fn rows() -> Vec<Row> {
    use Expect::*;
    let old_large = noise(100_000, 7);
    let new_large = noise(100_000, 8);
    let mut new_large_zz = new_large.clone();
    new_large_zz.extend_from_slice(b"zz");
    vec![
        Row {
            name: "mkdir-put-get",
            setup: vec![],
            steps: vec![
                req("mkdir", &[("path", "d")], None, Null),
                req("put", &[("path", "d/x")], Some(b"X"), Null),
                req("get", &[("path", "d/x")], None, Content(b"X".to_vec())),
            ],
            after: vec![("d", Entry::Dir), ("d/x", file(b"X"))],
        },
        Row {
            name: "mkdir-append-append-get",
            setup: vec![],
            steps: vec![
                req("mkdir", &[("path", "d")], None, Null),
                req("append", &[("path", "d/x")], Some(b"abc"), Uint(0)),
                req("append", &[("path", "d/x")], Some(b"de"), Uint(3)),
                req("get", &[("path", "d/x")], None, Content(b"abcde".to_vec())),
            ],
            after: vec![("d", Entry::Dir), ("d/x", file(b"abcde"))],
        },
        Row {
            name: "mkdir-mkdir-put-nested",
            setup: vec![],
            steps: vec![
                req("mkdir", &[("path", "d")], None, Null),
                req("mkdir", &[("path", "d/e")], None, Null),
                req("put", &[("path", "d/e/x")], Some(b"X"), Null),
                req("list_dir", &[("path", "d")], None, names(&["e"])),
                req("get", &[("path", "d/e/x")], None, Content(b"X".to_vec())),
            ],
            after: vec![
                ("d", Entry::Dir),
                ("d/e", Entry::Dir),
                ("d/e/x", file(b"X")),
            ],
        },
        Row {
            name: "rmdir-put-fails",
            setup: vec![("d", Entry::Dir)],
            steps: vec![
                req("rmdir", &[("path", "d")], None, Null),
                req("put", &[("path", "d/x")], Some(b"X"), Code("no-such-file")),
                req("has", &[("path", "d")], None, Bool(false)),
            ],
            after: vec![],
        },
        Row {
            name: "rmdir-mkdir-put",
            setup: vec![("d", Entry::Dir)],
            steps: vec![
                req("rmdir", &[("path", "d")], None, Null),
                req("mkdir", &[("path", "d")], None, Null),
                req("put", &[("path", "d/x")], Some(b"X"), Null),
                req("list_dir", &[("path", "d")], None, names(&["x"])),
            ],
            after: vec![("d", Entry::Dir), ("d/x", file(b"X"))],
        },
        Row {
            name: "rename-dir-put-old-name-fails",
            setup: vec![("d", Entry::Dir), ("d/y", file(b"Y"))],
            steps: vec![
                req("rename", &[("from", "d"), ("to", "e")], None, Null),
                req("put", &[("path", "d/x")], Some(b"X"), Code("no-such-file")),
                req("list_dir", &[("path", "e")], None, names(&["y"])),
                req("has", &[("path", "d")], None, Bool(false)),
            ],
            after: vec![("e", Entry::Dir), ("e/y", file(b"Y"))],
        },
        Row {
            name: "rename-dir-put-new-name",
            setup: vec![("d", Entry::Dir), ("d/y", file(b"Y"))],
            steps: vec![
                req("rename", &[("from", "d"), ("to", "e")], None, Null),
                req("put", &[("path", "e/x")], Some(b"X"), Null),
                req("list_dir", &[("path", "e")], None, names(&["x", "y"])),
            ],
            after: vec![("e", Entry::Dir), ("e/x", file(b"X")), ("e/y", file(b"Y"))],
        },
        Row {
            name: "put-rename-get",
            setup: vec![],
            steps: vec![
                req("put", &path("a"), Some(b"A"), Null),
                req("rename", &[("from", "a"), ("to", "b")], None, Null),
                req("get", &path("b"), None, Content(b"A".to_vec())),
                req("has", &path("a"), None, Bool(false)),
            ],
            after: vec![("b", file(b"A"))],
        },
        Row {
            name: "rename-file-put-old-name",
            setup: vec![("a", file(b"A0"))],
            steps: vec![
                req("rename", &[("from", "a"), ("to", "b")], None, Null),
                req("put", &path("a"), Some(b"A1"), Null),
                req("get", &path("a"), None, Content(b"A1".to_vec())),
                req("get", &path("b"), None, Content(b"A0".to_vec())),
            ],
            after: vec![("a", file(b"A1")), ("b", file(b"A0"))],
        },
        Row {
            name: "read-rename-read",
            setup: vec![("f", file(b"old"))],
            steps: vec![
                req("has", &path("g"), None, Bool(false)),
                req("get", &path("f"), None, Content(b"old".to_vec())),
                req("rename", &[("from", "f"), ("to", "g")], None, Null),
                req("has", &path("f"), None, Bool(false)),
                req("get", &path("g"), None, Content(b"old".to_vec())),
            ],
            after: vec![("g", file(b"old"))],
        },
        Row {
            name: "delete-put-get",
            setup: vec![("f", file(b"old"))],
            steps: vec![
                req("delete", &path("f"), None, Null),
                req("put", &path("f"), Some(b"new"), Null),
                req("get", &path("f"), None, Content(b"new".to_vec())),
            ],
            after: vec![("f", file(b"new"))],
        },
        Row {
            name: "put-delete-has",
            setup: vec![],
            steps: vec![
                req("put", &path("f"), Some(b"new"), Null),
                req("delete", &path("f"), None, Null),
                req("has", &path("f"), None, Bool(false)),
                req("get", &path("f"), None, Code("no-such-file")),
            ],
            after: vec![],
        },
        Row {
            name: "delete-append",
            setup: vec![("f", file(b"old"))],
            steps: vec![
                req("delete", &path("f"), None, Null),
                req("append", &path("f"), Some(b"new"), Uint(0)),
                req("get", &path("f"), None, Content(b"new".to_vec())),
            ],
            after: vec![("f", file(b"new"))],
        },
        Row {
            name: "append-get-stat",
            setup: vec![("f", file(b"0123"))],
            steps: vec![
                req("append", &path("f"), Some(b"45"), Uint(4)),
                req("get", &path("f"), None, Content(b"012345".to_vec())),
                req("stat", &path("f"), None, FileOfSize(6)),
            ],
            after: vec![("f", file(b"012345"))],
        },
        Row {
            name: "put-append-append-get",
            setup: vec![],
            steps: vec![
                req("put", &path("f"), Some(b"abc"), Null),
                req("append", &path("f"), Some(b"de"), Uint(3)),
                req("append", &path("f"), Some(b"f"), Uint(5)),
                req("get", &path("f"), None, Content(b"abcdef".to_vec())),
            ],
            after: vec![("f", file(b"abcdef"))],
        },
        Row {
            name: "large-get-put-get-append-get",
            setup: vec![("f", Entry::File(old_large.clone()))],
            steps: vec![
                req("get", &path("f"), None, Content(old_large)),
                req("put", &path("f"), Some(&new_large), Null),
                req("get", &path("f"), None, Content(new_large.clone())),
                req("append", &path("f"), Some(b"zz"), Uint(100_000)),
                req("get", &path("f"), None, Content(new_large_zz.clone())),
            ],
            after: vec![("f", Entry::File(new_large_zz))],
        },
        Row {
            name: "rmdir-not-empty-then-empty",
            setup: vec![],
            steps: vec![
                req("mkdir", &path("d"), None, Null),
                req("put", &path("d/x"), Some(b"X"), Null),
                req("rmdir", &path("d"), None, Code("directory-not-empty")),
                req("delete", &path("d/x"), None, Null),
                req("rmdir", &path("d"), None, Null),
                req("has", &path("d"), None, Bool(false)),
            ],
            after: vec![],
        },
        Row {
            name: "interleaved-put-begun-before-mkdir",
            setup: vec![],
            steps: vec![
                Step::Begin {
                    tag: "p",
                    cmd: "put",
                    args: path("d/x"),
                    first: b"X1".to_vec(),
                },
                req("mkdir", &path("d"), None, Null),
                Step::Finish {
                    tag: "p",
                    rest: b"X2".to_vec(),
                    expect: Null,
                },
                req("get", &path("d/x"), None, Content(b"X1X2".to_vec())),
            ],
            after: vec![("d", Entry::Dir), ("d/x", file(b"X1X2"))],
        },
        Row {
            name: "interleaved-append-begun-before-mkdir",
            setup: vec![],
            steps: vec![
                Step::Begin {
                    tag: "a",
                    cmd: "append",
                    args: path("d/x"),
                    first: b"ab".to_vec(),
                },
                req("mkdir", &path("d"), None, Null),
                Step::Finish {
                    tag: "a",
                    rest: b"cd".to_vec(),
                    expect: Uint(0),
                },
                req("get", &path("d/x"), None, Content(b"abcd".to_vec())),
            ],
            after: vec![("d", Entry::Dir), ("d/x", file(b"abcd"))],
        },
        Row {
            name: "interleaved-put-begun-before-rename-dir",
            setup: vec![("d", Entry::Dir)],
            steps: vec![
                Step::Begin {
                    tag: "p",
                    cmd: "put",
                    args: path("d/x"),
                    first: b"X1".to_vec(),
                },
                req("rename", &[("from", "d"), ("to", "e")], None, Null),
                Step::Finish {
                    tag: "p",
                    rest: b"X2".to_vec(),
                    expect: Code("no-such-file"),
                },
                req("list_dir", &path("e"), None, names(&[])),
                req("has", &path("d"), None, Bool(false)),
            ],
            after: vec![("e", Entry::Dir)],
        },
        Row {
            name: "interleaved-put-begun-before-rmdir",
            setup: vec![("d", Entry::Dir)],
            steps: vec![
                Step::Begin {
                    tag: "p",
                    cmd: "put",
                    args: path("d/x"),
                    first: b"X1".to_vec(),
                },
                req("rmdir", &path("d"), None, Null),
                Step::Finish {
                    tag: "p",
                    rest: b"X2".to_vec(),
                    expect: Code("no-such-file"),
                },
                req("has", &path("d"), None, Bool(false)),
            ],
            after: vec![],
        },
    ]
}

/// Builds the message of `row` (after the big put); returns the batch and
/// the expected answer of every slot with a label.
fn row_message(row: &Row, big: &Bytes) -> (Batch, Vec<(usize, String, Expect)>) {
    let mut b = Batch::new();
    let mut expects = Vec::new();
    let s = b.add("put", &[("path", b"big")], Some(big.clone()));
    expects.push((s, "put big (8 MiB)".to_string(), Expect::Null));
    let s = b.add("stat", &[("path", b"big")], None);
    expects.push((s, "stat big".to_string(), Expect::FileOfSize(BIG as u64)));
    let mut begun: HashMap<&str, (usize, String)> = HashMap::new();
    let label = |cmd: &str, args: &[(&str, &str)]| {
        let a: Vec<String> = args.iter().map(|(_, v)| v.to_string()).collect();
        format!("{cmd} {}", a.join(" "))
    };
    for step in &row.steps {
        match step {
            Step::Req {
                cmd,
                args,
                data,
                expect,
            } => {
                let pairs: Vec<(&str, &[u8])> =
                    args.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
                let s = b.add(cmd, &pairs, data.as_ref().map(|d| Bytes::from(d.clone())));
                expects.push((s, label(cmd, args), expect.clone()));
            }
            Step::Begin {
                tag,
                cmd,
                args,
                first,
            } => {
                let pairs: Vec<(&str, &[u8])> =
                    args.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
                let s = b.start(cmd, &pairs);
                b.data(s, Bytes::from(first.clone()), false);
                begun.insert(tag, (s, format!("{} (completed later)", label(cmd, args))));
            }
            Step::Finish { tag, rest, expect } => {
                let (s, l) = begun.remove(tag).unwrap();
                b.data(s, Bytes::from(rest.clone()), true);
                expects.push((s, l, expect.clone()));
            }
        }
    }
    assert!(
        begun.is_empty(),
        "row {}: a begun request is never finished",
        row.name
    );
    (b, expects)
}

/// What one repetition of a row found wrong.
struct RepResult {
    row: usize,
    rep: usize,
    wrong_answers: Vec<String>,
    wrong_tree: Vec<String>,
    elapsed: Duration,
}

async fn run_rep(
    gw_url: String,
    tree: PathBuf,
    row: Arc<Row>,
    row_index: usize,
    rep: usize,
    big: Bytes,
) -> RepResult {
    let base = format!("order/{row_index:02}-{}/{rep:03}", row.name);
    let dir = tree.join(&base);
    std::fs::create_dir_all(&dir).unwrap();
    for (p, e) in &row.setup {
        match e {
            Entry::Dir => std::fs::create_dir_all(dir.join(p)).unwrap(),
            Entry::File(c) => std::fs::write(dir.join(p), c).unwrap(),
            Entry::Other => unreachable!(),
        }
    }
    let (mut batch, expects) = row_message(&row, &big);
    let url = format!("{gw_url}/{base}/.framegate/rw");
    let http = message_client();
    let started = Instant::now();
    let mut wrong_answers = Vec::new();
    match send(&http, &url, &mut batch).await {
        Ok(outcomes) => {
            for (slot, label, expect) in &expects {
                if let Err(e) = check(expect, &outcomes[*slot]) {
                    wrong_answers.push(format!("`{label}`: {e}"));
                }
            }
        }
        Err(e) => wrong_answers.push(format!("message failed: {e}")),
    }
    let elapsed = started.elapsed();
    let mut wrong_tree = Vec::new();
    let mut found = walk_tree(&dir);
    match found.remove("big") {
        Some(Entry::File(c)) if c[..] == big[..] => {}
        Some(Entry::File(c)) => wrong_tree.push(format!("big has {} wrong bytes", c.len())),
        other => wrong_tree.push(format!("big is {:?}", other.map(|_| "not a file"))),
    }
    let want: BTreeMap<String, Entry> = row
        .after
        .iter()
        .map(|(p, e)| (p.to_string(), e.clone()))
        .collect();
    for (p, e) in &want {
        match found.get(p) {
            Some(f) if f == e => {}
            Some(Entry::File(c)) => wrong_tree.push(format!("{p}: has {}", summarize(c))),
            Some(other) => wrong_tree.push(format!("{p}: is {other:?}")),
            None => wrong_tree.push(format!("{p}: missing")),
        }
    }
    for p in found.keys().filter(|p| !want.contains_key(*p)) {
        wrong_tree.push(format!("{p}: should not exist"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    RepResult {
        row: row_index,
        rep,
        wrong_answers,
        wrong_tree,
        elapsed,
    }
}

/// §6: every command of a message sees exactly the effects of the commands
/// completed before it, also when they all queue behind an 8 MiB upload and
/// when a request is completed after later ones.
#[test]
fn ordering_matrix_in_one_message() {
    let reps = knob("FRAMEGATE_ORDER_REPS", 100).max(1);
    let parallel = knob("FRAMEGATE_ORDER_PARALLEL", 2).max(1);
    let rows: Vec<Arc<Row>> = rows().into_iter().map(Arc::new).collect();
    // About 50 ms a message here; ten times that is the bound.
    let limit = Duration::from_secs(120 + (reps * rows.len()) as u64 / 2);
    run(limit, async move {
        let site = Site::new();
        let gw = site.gateway();
        let big = Bytes::from(noise(BIG, 42));
        let started = Instant::now();
        // Rows interleaved so each repetition meets a different neighbour.
        let jobs: Vec<(usize, usize)> = (0..reps)
            .flat_map(|rep| (0..rows.len()).map(move |row| (row, rep)))
            .collect();
        let results: Vec<RepResult> = futures_util::stream::iter(jobs)
            .map(|(row, rep)| {
                let f = run_rep(
                    gw.url(),
                    site.tree.clone(),
                    rows[row].clone(),
                    row,
                    rep,
                    big.clone(),
                );
                tokio::spawn(f)
            })
            .buffer_unordered(parallel)
            .map(|r| r.unwrap())
            .collect()
            .await;
        let total = started.elapsed();
        let mut failures = Vec::new();
        println!(
            "ordering matrix: {} rows x {reps} reps, {parallel} at once, {:.1} s",
            rows.len(),
            total.as_secs_f64()
        );
        println!(
            "{:<40} {:>5} {:>8} {:>13} {:>11} {:>9}",
            "row", "reps", "answers", "wrong answers", "wrong trees", "ms/msg"
        );
        for (i, row) in rows.iter().enumerate() {
            let mine: Vec<&RepResult> = results.iter().filter(|r| r.row == i).collect();
            let answers = mine.len() * (row_message(row, &Bytes::new()).1.len());
            let wrong_answers: usize = mine.iter().map(|r| r.wrong_answers.len()).sum();
            let wrong_trees = mine.iter().filter(|r| !r.wrong_tree.is_empty()).count();
            let ms = mine.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>() * 1000.0
                / mine.len().max(1) as f64;
            println!(
                "{:<40} {:>5} {:>8} {:>13} {:>11} {:>9.0}",
                row.name,
                mine.len(),
                answers,
                wrong_answers,
                wrong_trees,
                ms
            );
            let mut shown = 0;
            for r in &mine {
                if (r.wrong_answers.is_empty() && r.wrong_tree.is_empty()) || shown >= 3 {
                    continue;
                }
                shown += 1;
                failures.push(format!(
                    "{} rep {}: answers [{}] tree [{}]",
                    row.name,
                    r.rep,
                    r.wrong_answers.join("; "),
                    r.wrong_tree.join("; ")
                ));
            }
            if wrong_answers > 0 || wrong_trees > 0 {
                failures.push(format!(
                    "{}: {wrong_answers} wrong answer(s), {wrong_trees} wrong tree(s) in {} reps",
                    row.name,
                    mine.len()
                ));
            }
        }
        let stray = leftovers(&site.tree);
        if !stray.is_empty() {
            failures.push(format!("staging leftovers after all messages: {stray:?}"));
        }
        drop(gw);
        fail_report("ordering matrix", &failures);
    });
}
