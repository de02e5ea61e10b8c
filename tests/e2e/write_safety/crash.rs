//! `kill -9` at a seeded random moment during a large `put`, a large
//! `append`, or a message of 4,000 renames; restart on the same tree.

use super::*;

/// When a trial kills the server.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KillAt {
    /// Before handing body piece `n` to the connection (mid-upload).
    Piece(usize),
    /// This long after the whole body was handed over (or at once after
    /// the answer, if it comes first).
    AfterBody(Duration),
    /// Not at all (calibration).
    Never,
}

/// Where a kill landed, as seen by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Landed {
    MidBody,
    AfterBodyBeforeAck,
    AfterAck,
}

struct Shot {
    landed: Landed,
    /// "piece 12/64" or "+35.2 ms after the body".
    when: String,
    /// The answers, if the whole response came (also if it came in just
    /// before the kill took effect: then the server had committed).
    answers: Option<Vec<Outcome>>,
    /// Handing the body over took this long.
    body: Duration,
    /// From the end of the body to the whole response (`Never` only).
    ack_after_body: Option<Duration>,
}

/// Sends `pieces` (the body of `batch`'s message) to `url`, `pace` apart,
/// killing `gw` with SIGKILL as `kill` says.
async fn fire(
    gw: &mut Gateway,
    url: &str,
    batch: &mut Batch,
    pieces: Vec<Bytes>,
    pace: Duration,
    kill: KillAt,
) -> Shot {
    let http = message_client();
    let (tx, body) = fed_body();
    let target = url.to_string();
    let mut post = tokio::spawn(async move { post_message(&http, &target, TOKEN, body).await });
    let n = pieces.len();
    let t0 = Instant::now();
    let mut killed = None;
    for (i, piece) in pieces.into_iter().enumerate() {
        if kill == KillAt::Piece(i) {
            gw.kill();
            killed = Some((Landed::MidBody, format!("before piece {i}/{n} of the body")));
            break;
        }
        tokio::time::timeout(Duration::from_secs(60), tx.send(piece))
            .await
            .expect("the server stopped reading the body for 60 s")
            .expect("the request body was dropped");
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    drop(tx);
    let body = t0.elapsed();
    let body_end = Instant::now();
    let mut done = None;
    if killed.is_none() {
        match kill {
            KillAt::AfterBody(delay) => {
                tokio::select! {
                    r = &mut post => done = Some(r),
                    () = tokio::time::sleep(delay) => {}
                }
                let after = body_end.elapsed();
                gw.kill();
                killed = Some(if done.is_some() {
                    (
                        Landed::AfterAck,
                        format!("+{:.1} ms after the body, after the answer", ms(after)),
                    )
                } else {
                    (
                        Landed::AfterBodyBeforeAck,
                        format!("+{:.1} ms after the body", ms(after)),
                    )
                });
            }
            KillAt::Never => {}
            KillAt::Piece(_) => unreachable!("piece index beyond the body"),
        }
    }
    let result = match done {
        Some(r) => r,
        None => tokio::time::timeout(Duration::from_secs(120), &mut post)
            .await
            .expect("no end of the response within 120 s"),
    };
    let ack_after_body = body_end.elapsed();
    let answers = match result.unwrap() {
        Ok(bytes) => {
            let answers = batch.decode(&bytes);
            (!answers.contains(&Outcome::Unanswered)).then_some(answers)
        }
        Err(_) => None,
    };
    let (mut landed, when) = killed.unwrap_or((Landed::AfterAck, "never".into()));
    if landed == Landed::AfterBodyBeforeAck && answers.is_some() {
        // The answer was on its way: the server had finished.
        landed = Landed::AfterAck;
    }
    Shot {
        landed,
        when,
        answers,
        body,
        ack_after_body: (kill == KillAt::Never).then_some(ack_after_body),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A kill plan: 40% of trials mid-body, the rest uniformly in `window`
/// after the body.
fn plan(rng: &mut Rng, pieces: usize, window: Duration) -> KillAt {
    if rng.unit() < 0.4 {
        KillAt::Piece(1 + rng.below(pieces as u64 - 1) as usize)
    } else {
        KillAt::AfterBody(window.mul_f64(rng.unit()))
    }
}

/// Tallies of one kind of crash trial.
#[derive(Default)]
struct Tally {
    trials: usize,
    landed: BTreeMap<Landed, usize>,
    outcomes: BTreeMap<String, usize>,
    with_leftovers: usize,
}

impl Tally {
    fn add(&mut self, landed: Landed, outcome: &str, leftovers: bool) {
        self.trials += 1;
        *self.landed.entry(landed).or_default() += 1;
        *self.outcomes.entry(outcome.to_string()).or_default() += 1;
        self.with_leftovers += usize::from(leftovers);
    }

    fn line(&self, kind: &str) -> String {
        let g = |l| self.landed.get(&l).copied().unwrap_or(0);
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        format!(
            "{kind}: {} trials, {} killed mid-body, {} after the body before the ack, {} after the ack; \
             after restart: {}; {} trial(s) left staging files",
            self.trials,
            g(Landed::MidBody),
            g(Landed::AfterBodyBeforeAck),
            g(Landed::AfterAck),
            outcomes.join(", "),
            self.with_leftovers
        )
    }
}

/// The seed of a crash test (printed, so a run can be replayed).
fn crash_rng(kind: &str, salt: u64) -> Rng {
    let seed = Rng::seed_from_env("FRAMEGATE_CRASH_SEED");
    println!("crash {kind}: seed {seed} (replay with FRAMEGATE_CRASH_SEED={seed})");
    Rng::new(seed ^ salt)
}

/// Checks common to every kind after a restart: no staging leftovers, and
/// nothing but user paths outside the private area. What it finds is
/// reported, then removed, so that each trial is judged on its own.
fn check_restarted_tree(
    tree: &Path,
    user: &dyn Fn(&str) -> bool,
    trial: &str,
    failures: &mut Vec<String>,
) -> bool {
    let stray = leftovers(tree);
    if !stray.is_empty() {
        failures.push(format!(
            "{trial}: staging leftovers after restart: {stray:?}"
        ));
    }
    let others: Vec<String> = strangers(tree, user)
        .into_iter()
        .filter(|p| !stray.contains(p))
        .collect();
    if !others.is_empty() {
        failures.push(format!(
            "{trial}: unexpected paths after restart: {others:?}"
        ));
    }
    for p in stray.iter().chain(&others) {
        let path = tree.join(p);
        let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
    }
    !stray.is_empty() || !others.is_empty()
}

const CRASH_OLD: usize = 1 << 20;
const CRASH_NEW: usize = 16 << 20;
const CRASH_PIECE: usize = 256 * 1024;

/// Old or new, describing anything else.
fn classify_put(content: &[u8], old: &[u8], new: &[u8]) -> String {
    if content == old {
        "old".into()
    } else if content == new {
        "new".into()
    } else {
        format!("partial ({} bytes)", content.len())
    }
}

fn classify_append(content: &[u8], old: &[u8], data: &[u8]) -> String {
    if content == old {
        "old".into()
    } else if content.len() == old.len() + data.len()
        && content[..old.len()] == old[..]
        && content[old.len()..] == data[..]
    {
        "old+all".into()
    } else if content.len() > old.len() && content.starts_with(old) {
        format!("partial (old+{} bytes)", content.len() - old.len())
    } else {
        format!("partial ({} bytes)", content.len())
    }
}

/// One large upload (`put` or `append`) per trial, killed at a random
/// moment; after the restart the target is old or whole-new.
async fn crash_uploads(command: &'static str, salt: u64) {
    let trials = knob("FRAMEGATE_CRASH_TRIALS", 3).max(1);
    let mut rng = crash_rng(command, salt);
    let site = Site::new();
    std::fs::create_dir_all(site.tree.join("crash")).unwrap();
    let mut gw = site.gateway();
    let url = endpoint(&gw, "", true);
    let message = |name: &str, data: &Bytes| {
        let mut b = Batch::new();
        b.add(command, &[("path", name.as_bytes())], Some(data.clone()));
        let body = b.take_body();
        (b, cut(&body, CRASH_PIECE))
    };
    // Calibration: the same operation, not killed.
    let mut windows = Vec::new();
    for i in 0..2 {
        let name = format!("crash/calibration-{i}");
        site.write(&name, &noise(CRASH_OLD, 1));
        let data = Bytes::from(noise(CRASH_NEW, 2));
        let (mut b, pieces) = message(&name, &data);
        let shot = fire(&mut gw, &url, &mut b, pieces, Duration::ZERO, KillAt::Never).await;
        let answers = shot.answers.expect("the calibration message is answered");
        assert!(
            !matches!(answers[0], Outcome::Err { .. }),
            "calibration {command}: {}",
            answers[0].describe()
        );
        let commit = shot.ack_after_body.unwrap();
        println!(
            "crash {command}: calibration: body of {} handed over in {:.1} ms, answer {:.1} ms later",
            mib(data.len() as u64),
            ms(shot.body),
            ms(commit)
        );
        windows.push(commit);
        std::fs::remove_file(site.tree.join(&name)).unwrap();
    }
    let window = windows
        .iter()
        .max()
        .unwrap()
        .mul_f64(1.5)
        .max(Duration::from_millis(20));
    println!(
        "crash {command}: kills after the body land uniformly in 0..{:.1} ms",
        ms(window)
    );
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    for t in 0..trials {
        let name = format!("crash/{command}-{t:02}");
        names.insert(name.clone());
        let old = noise(CRASH_OLD, 100 + t as u64);
        let data = noise(CRASH_NEW, 200 + t as u64);
        site.write(&name, &old);
        let expected_new = if command == "put" {
            data.clone()
        } else {
            [old.clone(), data.clone()].concat()
        };
        let (mut b, pieces) = message(&name, &Bytes::from(data.clone()));
        let kill = plan(&mut rng, pieces.len(), window);
        let shot = fire(&mut gw, &url, &mut b, pieces, Duration::ZERO, kill).await;
        let classify = |c: &[u8]| {
            if command == "put" {
                classify_put(c, &old, &data)
            } else {
                classify_append(c, &old, &data)
            }
        };
        let at_kill = classify(&std::fs::read(site.tree.join(&name)).unwrap_or_default());
        let at_kill_stray = leftovers(&site.tree).len();
        gw.restart();
        let after_bytes = std::fs::read(site.tree.join(&name)).unwrap_or_default();
        let after = classify(&after_bytes);
        let label = format!("{command} trial {t}");
        let acked = shot.answers.as_ref().map(|a| a[0].clone());
        println!(
            "  {label}: killed {} ({:?}); on disk at the kill: {at_kill}, {at_kill_stray} file(s) in staging or journals; \
             after restart: {after}; answer: {}",
            shot.when,
            shot.landed,
            acked.as_ref().map_or("none".into(), Outcome::describe)
        );
        if after.starts_with("partial") {
            failures.push(format!(
                "{label} (killed {}): target is {after} after restart",
                shot.when
            ));
        }
        match &acked {
            Some(Outcome::Err { .. } | Outcome::Unanswered) => {
                failures.push(format!("{label}: answered {}", acked.unwrap().describe()));
            }
            Some(answer) => {
                if after_bytes != expected_new {
                    failures.push(format!(
                        "{label}: acknowledged, but the target is {after} after restart"
                    ));
                }
                if command == "append"
                    && answer.cbor() != Some(Value::Integer((old.len() as u64).into()))
                {
                    failures.push(format!("{label}: append answered {}", answer.describe()));
                }
            }
            None => {}
        }
        let user = |p: &str| p == "crash" || names.contains(p);
        let dirty = check_restarted_tree(&site.tree, &user, &label, &mut failures);
        // The restarted server serves what is on disk.
        let http = message_client();
        match one(&http, &url, "stat", &[("path", name.as_bytes())], None).await {
            Ok(o) if check(&Expect::FileOfSize(after_bytes.len() as u64), &o).is_ok() => {}
            Ok(o) => failures.push(format!("{label}: stat after restart: {}", o.describe())),
            Err(e) => failures.push(format!("{label}: stat after restart: {e}")),
        }
        let outcome = if after.starts_with("partial") {
            "partial"
        } else if after == "old" {
            "old"
        } else {
            "new"
        };
        tally.add(shot.landed, outcome, dirty);
    }
    println!("{}", tally.line(command));
    drop(gw);
    fail_report(&format!("crash during {command}"), &failures);
}

const RENAMES: usize = 4000;
const RENAMES_PER_PIECE: usize = 40;

/// One message of 4,000 renames per trial, fed in pieces so the renames
/// run while the body arrives, killed at a random moment; after the
/// restart the renames applied are an in-order prefix.
async fn crash_renames() {
    let trials = knob("FRAMEGATE_CRASH_TRIALS", 3).max(1);
    let mut rng = crash_rng("renames", 0x7265_6e61);
    let site = Site::new();
    let mut gw = site.gateway();
    let url = endpoint(&gw, "", true);
    let pace = Duration::from_millis(2);
    let setup = |dir: &str, t: usize| {
        std::fs::create_dir_all(site.tree.join(dir)).unwrap();
        for i in 0..RENAMES {
            std::fs::write(
                site.tree.join(format!("{dir}/r{i:04}")),
                format!("{t}:{i}\n"),
            )
            .unwrap();
        }
    };
    let message = |dir: &str| {
        let mut b = Batch::new();
        let mut pieces = Vec::new();
        for i in 0..RENAMES {
            let from = format!("{dir}/r{i:04}");
            let to = format!("{dir}/s{i:04}");
            b.add(
                "rename",
                &[("from", from.as_bytes()), ("to", to.as_bytes())],
                None,
            );
            if (i + 1) % RENAMES_PER_PIECE == 0 {
                pieces.push(b.take_body());
            }
        }
        (b, pieces)
    };
    // Calibration.
    setup("calibration", 0);
    let (mut b, pieces) = message("calibration");
    let shot = fire(&mut gw, &url, &mut b, pieces, pace, KillAt::Never).await;
    let answers = shot.answers.expect("the calibration message is answered");
    assert!(
        answers.iter().all(|o| o.cbor() == Some(Value::Null)),
        "calibration renames all succeed"
    );
    let commit = shot.ack_after_body.unwrap();
    println!(
        "crash renames: calibration: {RENAMES} renames in {} pieces handed over in {:.1} ms, answers {:.1} ms later",
        RENAMES / RENAMES_PER_PIECE,
        ms(shot.body),
        ms(commit)
    );
    std::fs::remove_dir_all(site.tree.join("calibration")).unwrap();
    let window = commit.mul_f64(1.5).max(Duration::from_millis(20));
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut dirs = BTreeSet::new();
    for t in 0..trials {
        let dir = format!("ren-{t:02}");
        dirs.insert(dir.clone());
        setup(&dir, t);
        let (mut b, pieces) = message(&dir);
        let kill = plan(&mut rng, pieces.len(), window);
        let shot = fire(&mut gw, &url, &mut b, pieces, pace, kill).await;
        let applied = |tree: &Path| -> (Vec<usize>, Vec<String>) {
            let mut applied = Vec::new();
            let mut wrong = Vec::new();
            for i in 0..RENAMES {
                let want = format!("{t}:{i}\n").into_bytes();
                let r = std::fs::read(tree.join(format!("{dir}/r{i:04}"))).ok();
                let s = std::fs::read(tree.join(format!("{dir}/s{i:04}"))).ok();
                match (r, s) {
                    (Some(c), None) if c == want => {}
                    (None, Some(c)) if c == want => applied.push(i),
                    (r, s) => wrong.push(format!(
                        "r{i:04} {} / s{i:04} {}",
                        r.map_or("absent".into(), |c| summarize(&c)),
                        s.map_or("absent".into(), |c| summarize(&c))
                    )),
                }
            }
            (applied, wrong)
        };
        let (at_kill, _) = applied(&site.tree);
        gw.restart();
        let (after, wrong) = applied(&site.tree);
        let label = format!("renames trial {t}");
        let prefix = after.iter().enumerate().all(|(k, i)| k == *i);
        println!(
            "  {label}: killed {} ({:?}); renames applied at the kill: {}, after restart: {} ({})",
            shot.when,
            shot.landed,
            at_kill.len(),
            after.len(),
            if prefix { "a prefix" } else { "NOT a prefix" }
        );
        if !wrong.is_empty() {
            failures.push(format!(
                "{label}: {} files lost or changed, e.g. {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(3)]
            ));
        }
        if !prefix {
            let holes: Vec<usize> = (0..after.last().map_or(0, |l| l + 1))
                .filter(|i| after.binary_search(i).is_err())
                .take(5)
                .collect();
            failures.push(format!(
                "{label}: applied renames are not an in-order prefix: {} applied, up to #{:?}, \
                 not applied before that: {holes:?}",
                after.len(),
                after.last()
            ));
        }
        if let Some(answers) = &shot.answers {
            let bad: Vec<String> = answers
                .iter()
                .enumerate()
                .filter(|(_, o)| o.cbor() != Some(Value::Null))
                .map(|(i, o)| format!("#{i}: {}", o.describe()))
                .take(3)
                .collect();
            if !bad.is_empty() || after.len() != RENAMES {
                failures.push(format!(
                    "{label}: acknowledged, but {} renames applied; wrong answers: {bad:?}",
                    after.len()
                ));
            }
        }
        let user = |p: &str| {
            let top = p.split('/').next().unwrap_or("");
            dirs.contains(top)
        };
        let dirty = check_restarted_tree(&site.tree, &user, &label, &mut failures);
        let outcome = if !prefix || !wrong.is_empty() {
            "not a prefix".to_string()
        } else if after.is_empty() {
            "none applied".to_string()
        } else if after.len() == RENAMES {
            "all applied".to_string()
        } else {
            "a proper prefix applied".to_string()
        };
        tally.add(shot.landed, &outcome, dirty);
    }
    println!("{}", tally.line("renames"));
    drop(gw);
    fail_report("crash during renames", &failures);
}

/// `kill -9` during a large `put`: the target is the old file or the whole
/// new one, an acknowledged put survives, nothing is left in staging.
#[test]
fn crash_during_put() {
    let trials = knob("FRAMEGATE_CRASH_TRIALS", 3) as u64;
    run(
        Duration::from_secs(120 + trials * 30),
        crash_uploads("put", 0x7075_7400),
    );
}

/// `kill -9` during a large `append`: the target is old, or old plus the
/// whole appended data; an acknowledged append survives; journals are
/// replayed or dropped at start-up.
#[test]
fn crash_during_append() {
    let trials = knob("FRAMEGATE_CRASH_TRIALS", 3) as u64;
    run(
        Duration::from_secs(120 + trials * 30),
        crash_uploads("append", 0x6170_7000),
    );
}

/// `kill -9` during a message of 4,000 renames: the renames applied are an
/// in-order prefix of the message's.
#[test]
fn crash_during_renames() {
    let trials = knob("FRAMEGATE_CRASH_TRIALS", 3) as u64;
    run(Duration::from_secs(120 + trials * 30), crash_renames());
}
