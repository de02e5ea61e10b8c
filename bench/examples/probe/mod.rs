//! What the probes share: a gateway over a tree of their making, and the
//! CPU time of a process.

use std::path::Path;

use framegate_e2e::Gateway;

/// CPU time (user + system) of process `pid` (or `"self"`) so far, in ms.
pub(crate) fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 10.0
}

/// The environment variable `name` parsed, or `default` if unset or not
/// a `T`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A gateway (token `bench`, `extra` flags) serving a tree that `fill`
/// writes first; the directory lives as long as the returned guard.
pub(crate) fn serve(fill: impl FnOnce(&Path), extra: &[&str]) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    fill(&tree);
    let token = dir.path().join("token");
    std::fs::write(&token, "bench").unwrap();
    let gw = Gateway::start(&tree, &token, extra);
    (dir, gw)
}
