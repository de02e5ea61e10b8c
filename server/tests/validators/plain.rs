//! Plain HTTP (§7.6) with validators from the opened file: `ETag` is the
//! quoted `stat` etag, `If-Range` never lets a range of a new version be
//! spliced onto an old one, conditional requests follow RFC 9110, and the
//! validators always describe the bytes sent.

use super::*;

/// Plain GET of `url` with extra headers (one client per test: building
/// one loads the system's root certificates).
async fn plain_get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn plain_resume_with_if_range_gets_the_rest_or_the_whole_new_file() {
    let site = Site::start().await;
    let old = pattern(100_000, 5);
    site.server.write("doc.txt", &old);
    let url = format!("{}/doc.txt", site.server.url);
    let c = http();
    let etag = format!("\"{}\"", site.etag("doc.txt").await);

    let whole = plain_get(&c, &url, &[]).await;
    assert_eq!(whole.status(), 200);
    assert_eq!(header(&whole, "etag"), etag, "the stat etag, quoted");
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    assert_eq!(header(&whole, "content-type"), "text/plain");
    assert_eq!(header(&whole, "content-length"), "100000");
    let modified = header(&whole, "last-modified");
    assert!(modified.ends_with("GMT"), "{modified}");
    let got = whole.headers().clone();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &old[..]);

    // HEAD: the same headers, no body.
    let head = c.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    for name in [
        "etag",
        "last-modified",
        "content-length",
        "content-type",
        "accept-ranges",
    ] {
        assert_eq!(head.headers().get(name), got.get(name), "{name}");
    }
    assert!(head.bytes().await.unwrap().is_empty());

    // Resuming the version we have: the rest of it.
    for validator in [etag.as_str(), modified.as_str()] {
        let rest = plain_get(
            &c,
            &url,
            &[("range", "bytes=60000-"), ("if-range", validator)],
        )
        .await;
        assert_eq!(rest.status(), 206, "If-Range: {validator}");
        assert_eq!(header(&rest, "content-range"), "bytes 60000-99999/100000");
        assert_eq!(header(&rest, "content-length"), "40000");
        assert_eq!(header(&rest, "etag"), etag);
        assert_eq!(rest.bytes().await.unwrap().as_ref(), &old[60_000..]);
    }
    let middle = plain_get(&c, &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(middle.status(), 206);
    assert_eq!(middle.bytes().await.unwrap().as_ref(), &old[10..20]);
    let unsatisfiable = plain_get(&c, &url, &[("range", "bytes=100000-")]).await;
    assert_eq!(unsatisfiable.status(), 416);
    assert_eq!(header(&unsatisfiable, "content-range"), "bytes */100000");

    // Replaced (and dated later): a stale If-Range gets the whole new file,
    // never its tail spliced onto the old head.
    let new = pattern(80_000, 6);
    replace(&site, "doc.txt", &new);
    set_mtime(
        &site,
        "doc.txt",
        SystemTime::now() + Duration::from_secs(10),
    );
    let new_etag = format!("\"{}\"", site.etag("doc.txt").await);
    assert_ne!(new_etag, etag);
    for validator in [etag.as_str(), modified.as_str(), "W/\"x\"", "garbage"] {
        let whole = plain_get(
            &c,
            &url,
            &[("range", "bytes=60000-"), ("if-range", validator)],
        )
        .await;
        assert_eq!(whole.status(), 200, "If-Range: {validator}");
        assert_eq!(header(&whole, "etag"), new_etag);
        assert_eq!(header(&whole, "content-length"), "80000");
        assert!(whole.headers().get("content-range").is_none());
        assert_eq!(whole.bytes().await.unwrap().as_ref(), &new[..]);
    }
    // If-Match: the old version fails, the current one and `*` pass.
    let stale = plain_get(&c, &url, &[("if-match", &etag)]).await;
    assert_eq!(stale.status(), 412);
    assert!(stale.bytes().await.unwrap().is_empty());
    for tags in [new_etag.as_str(), "*", &format!("\"nope\", {new_etag}")] {
        let fresh = plain_get(&c, &url, &[("if-match", tags), ("range", "bytes=0-9")]).await;
        assert_eq!(fresh.status(), 206, "If-Match: {tags}");
        assert_eq!(fresh.bytes().await.unwrap().as_ref(), &new[..10]);
    }
    // A weak tag never matches strongly.
    let weak = plain_get(&c, &url, &[("if-match", &format!("W/{new_etag}"))]).await;
    assert_eq!(weak.status(), 412);
}

#[tokio::test]
async fn plain_conditional_requests_follow_rfc_9110() {
    let site = Site::start().await;
    site.server.write("page.html", b"<p>hello</p>");
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    set_mtime(&site, "page.html", time);
    let url = format!("{}/page.html", site.server.url);
    let c = http();
    let etag = format!("\"{}\"", site.etag("page.html").await);
    let at = httpdate::fmt_http_date(time);
    let before = httpdate::fmt_http_date(time - Duration::from_secs(1));
    let after = httpdate::fmt_http_date(time + Duration::from_secs(1));

    let ok = plain_get(&c, &url, &[]).await;
    assert_eq!(header(&ok, "content-type"), "text/html");
    assert_eq!(header(&ok, "last-modified"), at);

    let cases: &[(&[(&str, &str)], u16)] = &[
        (&[("if-none-match", &etag)], 304),
        (&[("if-none-match", "*")], 304),
        (&[("if-none-match", &format!("W/{etag}"))], 304),
        (&[("if-none-match", "\"other\"")], 200),
        (&[("if-modified-since", &at)], 304),
        (&[("if-modified-since", &after)], 304),
        (&[("if-modified-since", &before)], 200),
        (&[("if-modified-since", "not a date")], 200),
        // If-None-Match wins over If-Modified-Since.
        (
            &[("if-none-match", "\"other\""), ("if-modified-since", &at)],
            200,
        ),
        (&[("if-unmodified-since", &at)], 200),
        (&[("if-unmodified-since", &before)], 412),
        // If-Match wins over If-Unmodified-Since.
        (
            &[("if-match", &etag), ("if-unmodified-since", &before)],
            200,
        ),
        (&[("if-match", "\"other\"")], 412),
        // 412 before 304.
        (&[("if-match", "\"other\""), ("if-none-match", &etag)], 412),
    ];
    for (headers, status) in cases {
        let resp = plain_get(&c, &url, headers).await;
        assert_eq!(resp.status().as_u16(), *status, "{headers:?}");
        if *status == 304 {
            assert_eq!(header(&resp, "etag"), etag);
            assert_eq!(header(&resp, "last-modified"), at);
        }
    }
}

#[tokio::test]
async fn plain_etag_and_bytes_always_describe_the_same_file() {
    // Two versions swapped in a tight loop (hard link + rename, so each
    // keeps its inode and tag): every answer's validator must be the one of
    // the bytes it carries, whichever version it got.
    let site = Arc::new(Site::start().await);
    let versions = [pattern(70_000, 7), pattern(90_000, 8)];
    site.server.write("a.src", &versions[0]);
    site.server.write("b.src", &versions[1]);
    let tags = [site.etag("a.src").await, site.etag("b.src").await];
    std::fs::hard_link(site.server.path("a.src"), site.server.path("race.bin")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || {
            let tmp = site.server.path("race.tmp");
            let target = site.server.path("race.bin");
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let src = site.server.path(["a.src", "b.src"][(swaps % 2) as usize]);
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(src, &tmp).unwrap();
                std::fs::rename(&tmp, &target).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let url = format!("{}/race.bin", site.server.url);
    let c = http();
    let version_of = |tag: &str| tags.iter().position(|t| t == tag);
    let mut seen = [0usize; 2];
    for _ in 0..300 {
        let resp = plain_get(&c, &url, &[]).await;
        let tag = header(&resp, "etag");
        let v = version_of(tag.trim_matches('"')).expect("a known version");
        assert_eq!(
            header(&resp, "content-length"),
            versions[v].len().to_string()
        );
        assert!(resp.bytes().await.unwrap() == versions[v][..], "plain GET");
        seen[v] += 1;
        // A resumed range of the version it names, or a refusal.
        let tail = plain_get(
            &c,
            &url,
            &[
                ("range", "bytes=65000-"),
                ("if-range", &format!("\"{}\"", tags[v])),
            ],
        )
        .await;
        let status = tail.status().as_u16();
        let w = version_of(header(&tail, "etag").trim_matches('"')).unwrap();
        let body = tail.bytes().await.unwrap();
        match status {
            206 => assert!(w == v && body == versions[v][65_000..], "spliced"),
            200 => assert!(w != v && body == versions[w][..], "whole other"),
            other => panic!("status {other}"),
        }
    }
    for _ in 0..3 {
        // Commands of one message run as the swapper swaps.
        let mut batch = Batch::new();
        for _ in 0..40 {
            batch.add("get", &[("path", b"race.bin")], None);
        }
        let (outcomes, frames, batch) = site.run(Binding::Http, batch).await;
        for (outcome, id) in outcomes.iter().zip(&batch.ids) {
            let item = announced(&frames, *id).unwrap().item.unwrap();
            let v = version_of(&item).expect("a known version");
            assert!(outcome.ok() == &versions[v][..], "smart get");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the swapper ran ({swaps} swaps)");
    assert!(
        seen.iter().all(|n| *n > 0),
        "both versions served: {seen:?}"
    );
}
