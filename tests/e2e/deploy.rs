//! deploy/ as an operator uses it: every placeholder of the nginx site is
//! documented with an example, the site with those examples passes
//! `nginx -t`, the unit's command line runs as two instances the way its
//! comment says, and the Docker files match what the image serves.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use framegate_e2e::{Tls, free_port, nginx_binary, repo_root, server_binary};

/// `{{NAME}}` → the first example of deploy/README.md's placeholder table.
fn documented_placeholders() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md")).unwrap();
    let mut out = BTreeMap::new();
    for row in readme
        .lines()
        .filter(|l| l.trim_start().starts_with("| `{{"))
    {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, example) = (cells[1], cells[3]);
        let examples: Vec<&str> = example.split('`').skip(1).step_by(2).collect();
        for (i, name) in names.split('`').skip(1).step_by(2).enumerate() {
            let value = examples.get(i).or(examples.first()).unwrap();
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

fn placeholders_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").unwrap() + start + 2;
        found.push(rest[start..end].to_string());
        rest = &rest[end..];
    }
    found
}

#[test]
fn every_placeholder_is_documented_and_the_site_passes_nginx_t() {
    let documented = documented_placeholders();
    let deploy = repo_root().join("deploy/nginx");
    let site = std::fs::read_to_string(deploy.join("framegate.conf")).unwrap();
    let used = placeholders_in(&site);
    assert!(!used.is_empty());
    for p in &used {
        assert!(
            documented.contains_key(p),
            "{p} is not in deploy/README.md's table"
        );
    }
    // The plain fallback under /static/ hides dotfiles (nginx's autoindex
    // lists none): the table says so where the operator fills in its root.
    let readme = std::fs::read_to_string(repo_root().join("deploy/README.md")).unwrap();
    assert!(readme.contains("dotfiles are not served there"));
    // The documented examples, except the files nginx -t opens (made here).
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::generate(dir.path());
    let proxy = dir.path().join("framegate-proxy.conf");
    std::fs::copy(deploy.join("framegate-proxy.conf"), &proxy).unwrap();
    let mut values = documented.clone();
    values.insert("{{CERT}}".into(), tls.cert.display().to_string());
    values.insert("{{KEY}}".into(), tls.key.display().to_string());
    values.insert("{{PROXY_PARAMS}}".into(), proxy.display().to_string());
    let mut rendered = site.clone();
    for (name, value) in &values {
        rendered = rendered.replace(name, value);
    }
    assert!(!rendered.contains("{{"), "{rendered}");
    assert!(
        rendered.contains("listen 443 ssl http2"),
        "the documented example: {rendered}"
    );
    let site_path = dir.path().join("site.conf");
    std::fs::write(&site_path, rendered).unwrap();
    let d = dir.path().display();
    let main = format!(
        "error_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{}}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         include {};\n}}\n",
        site_path.display()
    );
    std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
    let out = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t: {err}");
    assert!(err.contains("test is successful"), "{err}");
    // A broken copy fails: the check can fail.
    std::fs::write(&site_path, site.replacen("server {", "server {{", 1)).unwrap();
    let out = Command::new(nginx_binary())
        .args(["-t", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The unit's `ExecStart`, with its tree and binary for this test.
fn exec_start(tree: &std::path::Path) -> Vec<String> {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/framegate-server.service"))
        .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    line.split_whitespace()
        .map(|w| match w {
            "/usr/local/bin/framegate-server" => server_binary().display().to_string(),
            "${FRAMEGATE_TREE}" => tree.display().to_string(),
            w => w.to_string(),
        })
        .collect()
}

fn spawn(argv: &[String]) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The body of a 200 to `GET http://127.0.0.1:{port}{path}`, once the
/// server answers (plain std: no HTTP client needed).
fn wait_ok(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200")
                && let Some((_, body)) = out.split_once("\r\n\r\n")
            {
                return body.to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{port}{path} never answered 200");
}

/// Two instances from the unit's command line, the second with both ports
/// changed as the unit's comment says; with only `--listen` changed the
/// second cannot start (its metrics port is the first's), which is why the
/// comment names both.
#[test]
fn two_instances_run_from_the_units_command_line_as_its_comment_says() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f.txt"), "served").unwrap();
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/framegate-server.service"))
        .unwrap();
    assert!(unit.contains("--listen 127.0.0.1:8081, --metrics-listen 127.0.0.1:9181"));
    assert!(unit.contains("LimitNOFILE="), "a descriptor limit");
    assert!(
        unit.contains("StateDirectory=framegate")
            && unit.contains("FRAMEGATE_TREE=/var/lib/framegate"),
        "the tree is the dynamic user's state directory"
    );
    let base = exec_start(tree.path());
    let (http1, metrics1, http2, metrics2) = (free_port(), free_port(), free_port(), free_port());
    let port = |argv: &[String], from: &str, to: u16| -> Vec<String> {
        argv.iter()
            .map(|w| w.replace(from, &format!("127.0.0.1:{to}")))
            .collect()
    };
    // The documented ports, moved to free ones for the test.
    let first = port(
        &port(&base, "127.0.0.1:8080", http1),
        "127.0.0.1:9180",
        metrics1,
    );
    let second_doc = port(&base, "127.0.0.1:8080", 8081);
    let second_doc = port(&second_doc, "127.0.0.1:9180", 9181);
    let second = port(
        &port(&second_doc, "127.0.0.1:8081", http2),
        "127.0.0.1:9181",
        metrics2,
    );
    let mut one = spawn(&first);
    let mut two = spawn(&second);
    for (http, metrics) in [(http1, metrics1), (http2, metrics2)] {
        assert_eq!(wait_ok(http, "/f.txt"), "served");
        let m = wait_ok(metrics, "/metrics");
        assert!(m.contains("framegate_"), "{m}");
    }
    // Only --listen changed: the metrics port clashes, exit 1 with a
    // message naming it.
    let clash = port(&first, &format!("127.0.0.1:{http1}"), free_port());
    let out = Command::new(&clash[0]).args(&clash[1..]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen for metrics"),
        "{out:?}"
    );
    for child in [&mut one, &mut two] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert_eq!(child.wait().unwrap().code(), Some(0), "a clean stop");
    }
}

/// The image's build context leaves out target/ and .git/; it exposes the
/// port its entrypoint listens on, and 4159 only with `--tcp`.
#[test]
fn docker_files_match_what_the_image_serves() {
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    for needed in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), "{needed}");
    }
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let entry = dockerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .unwrap();
    for expose in dockerfile.lines().filter_map(|l| l.strip_prefix("EXPOSE ")) {
        for port in expose.split_whitespace() {
            let served = entry.contains(&format!("0.0.0.0:{port}\""))
                || (port == "4159" && entry.contains("--tcp"));
            assert!(served, "EXPOSE {port} but the entrypoint is {entry}");
        }
    }
    assert!(!entry.contains("--allow-writes"), "read-only by default");
}

/// The README's set-up block builds both binaries in one build and serves a
/// directory the repository ships; every relative link in README.md,
/// deploy/README.md and docs/*.md names a file that exists.
#[test]
fn readme_set_up_and_links_name_real_things() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let builds: Vec<&str> = block
        .lines()
        .filter(|l| l.starts_with("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "one build: {block}");
    assert!(
        builds[0].contains("-p framegate-server") && builds[0].contains("-p framegate-client"),
        "{block}"
    );
    let serve = block
        .lines()
        .find_map(|l| l.split_once(" serve ").map(|(_, dir)| dir.trim()))
        .unwrap_or_else(|| panic!("a serve command: {block}"));
    assert!(
        root.join(serve).is_dir(),
        "serves {serve}, which the repository has"
    );
    let mut docs = vec![root.join("README.md"), root.join("deploy/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap().split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = doc.parent().unwrap().join(target);
            assert!(
                path.exists(),
                "{}: link to {target} leads nowhere",
                doc.display()
            );
        }
    }
}
