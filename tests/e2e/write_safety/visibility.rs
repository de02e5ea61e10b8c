//! No staging file in sight while uploads are in flight, and none left
//! behind when their clients give up.

use super::*;

/// An upload whose body is held back halfway.
struct HeldUpload {
    label: String,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    rest: Vec<Bytes>,
    batch: Batch,
    post: tokio::task::JoinHandle<Result<Bytes, String>>,
}

/// Starts `command path` with `data` on base `base` and hands over the
/// first half of its body.
async fn hold_upload(
    gw: &Gateway,
    base: &str,
    command: &str,
    path: &str,
    data: &[u8],
) -> HeldUpload {
    let mut batch = Batch::new();
    batch.add(
        command,
        &[("path", path.as_bytes())],
        Some(Bytes::copy_from_slice(data)),
    );
    let mut pieces = cut(&batch.take_body(), 64 * 1024);
    let rest = pieces.split_off(pieces.len() / 2);
    let (tx, body) = fed_body();
    let url = endpoint(gw, base, true);
    let post = tokio::spawn(async move {
        let http = message_client();
        post_message(&http, &url, TOKEN, body).await
    });
    for p in pieces {
        tx.send(p).await.unwrap();
    }
    HeldUpload {
        label: format!("{command} {base}/{path}"),
        tx,
        rest,
        batch,
        post,
    }
}

/// Names in a plain-HTTP JSON directory listing.
async fn plain_listing(
    http: &reqwest::Client,
    gw: &Gateway,
    dir: &str,
) -> Result<Vec<String>, String> {
    let resp = http
        .get(format!("{}{dir}", gw.url()))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(items
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect())
}

/// Every way of looking at the tree shows exactly the user's files.
async fn look_at_tree(
    gw: &Gateway,
    tree: &Path,
    user: &[&str],
    when: &str,
    failures: &mut Vec<String>,
) {
    let user_set: BTreeSet<&str> = user.iter().copied().collect();
    let others = strangers(tree, &|p| user_set.contains(p));
    if !others.is_empty() {
        failures.push(format!(
            "{when}: on disk, besides the user's files and .framegate/: {others:?}"
        ));
    }
    let old_style: Vec<String> = list_tree(tree)
        .into_iter()
        .filter(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with(OLD_STAGING_PREFIX))
        })
        .collect();
    if !old_style.is_empty() {
        failures.push(format!("{when}: old-style staging files: {old_style:?}"));
    }
    // What a listing of `dir` must show.
    let children = |dir: &str| -> Vec<&str> {
        let mut names: Vec<&str> = user
            .iter()
            .filter_map(|p| match dir {
                "" => (!p.contains('/')).then_some(*p),
                d => p
                    .strip_prefix(d)
                    .and_then(|r| r.strip_prefix('/'))
                    .filter(|r| !r.contains('/')),
            })
            .collect();
        names.sort_unstable();
        names
    };
    let dirs: Vec<&str> = std::iter::once("")
        .chain(user.iter().copied().filter(|p| tree.join(p).is_dir()))
        .collect();
    let files: Vec<&str> = user
        .iter()
        .copied()
        .filter(|p| tree.join(p).is_file())
        .collect();
    let http = message_client();
    let mut b = Batch::new();
    let mut expects = Vec::new();
    for d in &dirs {
        let names = children(d).into_iter().map(str::to_string).collect();
        let slot = b.add("list_dir", &[("path", d.as_bytes())], None);
        expects.push((slot, format!("list_dir {d:?}"), Expect::Names(names)));
    }
    let slot = b.add("iter_files_recursive", &[("path", b"")], None);
    let mut all: Vec<String> = files.iter().map(|n| n.to_string()).collect();
    all.sort_unstable();
    expects.push((slot, "iter_files_recursive".into(), Expect::Names(all)));
    let slot = b.add("list_dir", &[("path", b".framegate")], None);
    expects.push((slot, "list_dir .framegate".into(), Expect::AnyError));
    match send(&http, &endpoint(gw, "", false), &mut b).await {
        Ok(outcomes) => {
            for (slot, label, expect) in &expects {
                if let Err(e) = check(expect, &outcomes[*slot]) {
                    failures.push(format!("{when}: `{label}`: {e}"));
                }
            }
        }
        Err(e) => failures.push(format!("{when}: listing message failed: {e}")),
    }
    for d in &dirs {
        let url_dir = if d.is_empty() {
            "/".to_string()
        } else {
            format!("/{d}/")
        };
        let mut want = children(d);
        want.sort_unstable();
        match plain_listing(&http, gw, &url_dir).await {
            Ok(mut names) => {
                names.sort();
                if names != want {
                    failures.push(format!(
                        "{when}: plain GET {url_dir} lists {names:?}, not {want:?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{when}: plain GET {url_dir}: {e}")),
        }
    }
    // The private area is not served, whatever is in it.
    let private: Vec<String> = [
        "/.framegate/",
        "/.framegate/staging/",
        "/.framegate/journal/",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(others.iter().map(|p| format!("/{p}")))
    .chain(
        list_tree(tree)
            .into_iter()
            .filter(|p| p.starts_with(".framegate/"))
            .map(|p| format!("/{p}")),
    )
    .collect();
    for p in private {
        match http.get(format!("{}{p}", gw.url())).send().await {
            Ok(r) if r.status().is_client_error() => {}
            Ok(r) => failures.push(format!("{when}: plain GET {p} answers {}", r.status())),
            Err(e) => failures.push(format!("{when}: plain GET {p}: {e}")),
        }
    }
}

/// While uploads are in flight (bodies held back halfway), nothing of them
/// shows: not on disk next to the user's files, not in `list_dir`,
/// `iter_files_recursive` or plain-HTTP listings; the targets read old.
/// Afterwards the new files are there and staging is empty; an upload cut
/// off by its client leaves nothing behind.
#[test]
fn no_staging_in_sight_while_uploads_are_in_flight() {
    run(Duration::from_secs(180), async {
        let site = Site::new();
        site.write("top.txt", b"top\n");
        site.write("vis/a.txt", b"alpha\n");
        site.write("vis/sub/b.txt", b"beta\n");
        let user_before = ["top.txt", "vis", "vis/a.txt", "vis/sub", "vis/sub/b.txt"];
        let gw = site.gateway();
        let mut failures = Vec::new();
        let size = 4 << 20;
        let uploads = [
            ("", "put", "vis/sub/new.bin", 1),
            ("", "append", "vis/a.txt", 2),
            ("", "put", "top.bin", 3),
            ("vis/sub", "put", "nested.bin", 4),
            ("", "put", "top.txt", 5),
        ];
        let mut held = Vec::new();
        for (base, command, path, seed) in uploads {
            held.push(hold_upload(&gw, base, command, path, &noise(size, seed)).await);
        }
        // Wait until the server stores them somewhere (a file per upload,
        // wherever it is), at most 5 s.
        let files_on_disk = |tree: &Path| {
            list_tree(tree)
                .iter()
                .filter(|p| tree.join(p).is_file())
                .count()
        };
        let user_files = user_before
            .iter()
            .filter(|p| site.tree.join(p).is_file())
            .count();
        let deadline = Instant::now() + Duration::from_secs(5);
        while files_on_disk(&site.tree) < user_files + uploads.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!(
            "in flight: {} paths on disk besides the user's: {:?}",
            list_tree(&site.tree).len() - user_before.len(),
            strangers(&site.tree, &|p| user_before.contains(&p))
                .into_iter()
                .chain(
                    list_tree(&site.tree)
                        .into_iter()
                        .filter(|p| p.starts_with(".framegate"))
                )
                .collect::<BTreeSet<_>>()
        );
        look_at_tree(
            &gw,
            &site.tree,
            &user_before,
            "uploads in flight",
            &mut failures,
        )
        .await;
        let http = message_client();
        let mut b = Batch::new();
        let reads = [
            (
                b.add("get", &[("path", b"vis/a.txt")], None),
                "get vis/a.txt",
                Expect::Content(b"alpha\n".to_vec()),
            ),
            (
                b.add("get", &[("path", b"top.txt")], None),
                "get top.txt",
                Expect::Content(b"top\n".to_vec()),
            ),
            (
                b.add("has", &[("path", b"vis/sub/new.bin")], None),
                "has vis/sub/new.bin",
                Expect::Bool(false),
            ),
            (
                b.add("has", &[("path", b"vis/sub/nested.bin")], None),
                "has vis/sub/nested.bin",
                Expect::Bool(false),
            ),
            (
                b.add("has", &[("path", b"top.bin")], None),
                "has top.bin",
                Expect::Bool(false),
            ),
        ];
        match send(&http, &endpoint(&gw, "", false), &mut b).await {
            Ok(outcomes) => {
                for (slot, label, expect) in &reads {
                    if let Err(e) = check(expect, &outcomes[*slot]) {
                        failures.push(format!("uploads in flight: `{label}`: {e}"));
                    }
                }
            }
            Err(e) => failures.push(format!("uploads in flight: reads failed: {e}")),
        }
        for (p, want) in [
            ("/top.txt", Some(&b"top\n"[..])),
            ("/vis/a.txt", Some(&b"alpha\n"[..])),
            ("/vis/sub/new.bin", None),
            ("/top.bin", None),
        ] {
            match http.get(format!("{}{p}", gw.url())).send().await {
                Ok(r) => {
                    let status = r.status();
                    let body = r.bytes().await.unwrap_or_default();
                    let ok = match want {
                        Some(w) => status == 200 && body[..] == w[..],
                        None => status == 404,
                    };
                    if !ok {
                        failures.push(format!(
                            "uploads in flight: plain GET {p} answers {status} with {}",
                            summarize(&body)
                        ));
                    }
                }
                Err(e) => failures.push(format!("uploads in flight: plain GET {p}: {e}")),
            }
        }
        // Let them finish.
        for h in &mut held {
            for p in std::mem::take(&mut h.rest) {
                h.tx.send(p).await.unwrap();
            }
        }
        for (h, (_, command, _, _)) in held.into_iter().zip(uploads) {
            let HeldUpload {
                label,
                tx,
                mut batch,
                post,
                ..
            } = h;
            drop(tx);
            let want = if command == "append" {
                Expect::Uint(6)
            } else {
                Expect::Null
            };
            match post.await.unwrap() {
                Ok(bytes) => {
                    if let Err(e) = check(&want, &batch.decode(&bytes)[0]) {
                        failures.push(format!("`{label}`: {e}"));
                    }
                }
                Err(e) => failures.push(format!("`{label}`: {e}")),
            }
        }
        let expect_files = [
            ("vis/sub/new.bin", noise(size, 1)),
            ("vis/a.txt", [b"alpha\n".to_vec(), noise(size, 2)].concat()),
            ("top.bin", noise(size, 3)),
            ("vis/sub/nested.bin", noise(size, 4)),
            ("top.txt", noise(size, 5)),
        ];
        for (p, content) in &expect_files {
            if std::fs::read(site.tree.join(p)).ok().as_ref() != Some(content) {
                failures.push(format!("after the uploads: {p} does not hold its upload"));
            }
        }
        let user_after = [
            "top.bin",
            "top.txt",
            "vis",
            "vis/a.txt",
            "vis/sub",
            "vis/sub/b.txt",
            "vis/sub/nested.bin",
            "vis/sub/new.bin",
        ];
        let stray = leftovers(&site.tree);
        if !stray.is_empty() {
            failures.push(format!("after the uploads: staging leftovers {stray:?}"));
        }
        look_at_tree(
            &gw,
            &site.tree,
            &user_after,
            "after the uploads",
            &mut failures,
        )
        .await;

        // Uploads their clients give up on leave nothing behind.
        let cut_off = [
            hold_upload(&gw, "", "put", "vis/aborted.bin", &noise(size, 6)).await,
            hold_upload(&gw, "", "put", "top.txt", &noise(size, 7)).await,
            hold_upload(&gw, "", "append", "vis/sub/b.txt", &noise(size, 8)).await,
        ];
        tokio::time::sleep(Duration::from_millis(300)).await;
        for h in cut_off {
            h.post.abort();
            let _ = h.post.await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !leftovers(&site.tree).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stray = leftovers(&site.tree);
        if !stray.is_empty() {
            failures.push(format!(
                "10 s after clients cut their uploads: staging leftovers {stray:?}"
            ));
        }
        if site.tree.join("vis/aborted.bin").exists() {
            failures.push("a cut-off put created its target".into());
        }
        if std::fs::read(site.tree.join("top.txt")).ok() != Some(noise(size, 5)) {
            failures.push("a cut-off put changed its target".into());
        }
        if std::fs::read(site.tree.join("vis/sub/b.txt")).ok() != Some(b"beta\n".to_vec()) {
            failures.push("a cut-off append changed its target".into());
        }
        look_at_tree(
            &gw,
            &site.tree,
            &user_after,
            "after cut-off uploads",
            &mut failures,
        )
        .await;
        drop(gw);
        fail_report("staging in sight", &failures);
    });
}
