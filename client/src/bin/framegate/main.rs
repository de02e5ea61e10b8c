//! `framegate`: the command-line client.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use framegate_client::{
    DownloadOptions, Error, Hooks, Layer, Options, StatAnswer, Transport, partial_path,
};

mod args;
mod files;
mod mirror;
mod netrc;
mod progress;

use args::{Cli, Cmd, EXIT_BROKEN_PIPE, EXIT_PARTLY};
use files::{Counted, mkdir_parents, move_paths, printable, remove_tree, verify_copy};
use mirror::{Filter, MirrorArgs, Mirrored, local_error, mirror};
use progress::{PROGRESS_POLL, bar, spinner, watch_file};
use serde_json::json;
use tokio::io::AsyncWriteExt;

struct Ctx {
    json: bool,
    quiet: bool,
    /// `--progress` (true) or `--no-progress` (false); else by the terminal.
    progress: Option<bool>,
    options: Options,
}

/// Splits a file URL into its directory URL and the file name.
fn split_url(url: &str) -> Result<(String, String), Error> {
    let no_file = || Error::InvalidUrl(format!("{url} names no file"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(url.into()))?;
    // Where the path starts: the first `/` after the host.
    let path_start = scheme.len() + 3 + rest.find('/').ok_or_else(no_file)?;
    let trimmed = url.trim_end_matches('/');
    let slash = trimmed
        .rfind('/')
        .filter(|&i| i >= path_start)
        .ok_or_else(no_file)?;
    let (dir, name) = (&trimmed[..=slash], &trimmed[slash + 1..]);
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .into_owned();
    Ok((dir.to_string(), name))
}

fn stat_json(s: &StatAnswer) -> serde_json::Value {
    json!({ "kind": s.kind, "size": s.size, "mtime": s.mtime, "mode": format!("{:o}", s.mode) })
}

/// Opens `url` without a probe of its own: the first message carries
/// `hello` with its reads (one round trip), writes probe first.
async fn open(ctx: &Ctx, url: &str) -> Result<Transport, Error> {
    Transport::open_lazy(url, ctx.options.clone()).await
}

async fn run(cli: Cli) -> Result<u8, Error> {
    let mut options = Options::default();
    options.token = match &cli.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| local_error(path, e))?;
            let token = text.lines().next().unwrap_or_default().trim().to_string();
            if token.is_empty() {
                return Err(Error::Usage(format!(
                    "the token file {} is empty",
                    path.display()
                )));
            }
            Some(token)
        }
        None => cli.token.clone().filter(|t| !t.is_empty()),
    };
    if options.token.is_none()
        && let Some(host) = cli.command.url().and_then(|u| url::Url::parse(u).ok())
        && let Some(host) = host.host_str()
        && let Some(netrc) = netrc::netrc_path()
    {
        options.token = netrc::token_for(&netrc, host, cli.quiet);
    }
    if cli.insecure {
        eprintln!(
            "framegate: warning: --insecure: the server's certificate is not checked; \
             anyone on the path can read and change this transfer"
        );
        options.insecure = true;
    }
    options.ca_cert = cli.ca_cert.clone();
    options.compress = !cli.no_compress;
    options.connect_timeout = cli.connect_timeout;
    options.read_timeout = cli.read_timeout;
    options.retry_deadline = cli.retry_deadline;
    // The server's text output goes to stderr, unless asked for quiet or
    // machine-readable output.
    let text: Option<framegate_client::smart::TextHook> = if cli.quiet || cli.json {
        None
    } else {
        // The server's words: shown, but no control sequence of theirs
        // reaches the terminal (lines stay lines).
        Some(Arc::new(|text: &str| {
            eprint!("{}", files::printable_text(text, false))
        }))
    };
    options.hooks = Hooks {
        on_text: text,
        on_progress: None,
    };
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
        progress: match (cli.progress, cli.no_progress) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        options,
    };
    match cli.command {
        Cmd::Probe { url } => {
            let t = Transport::open(&url, ctx.options.clone()).await?;
            // A byte stream serves the server's root: its URL's directory
            // is checked here (over HTTP the server refuses a missing one).
            if (url.starts_with("framegate://") || url.starts_with("framegate+ssh://"))
                && t.base_url().path() != "/"
            {
                let no_dir = || Error::Remote {
                    code: framegate_client::ErrorCode::NO_SUCH_FILE,
                    message: format!("no such directory: {}", t.base_url()),
                };
                match t.stat("").await {
                    Ok(s) if s.kind == framegate_client::FileKind::Dir => {}
                    Ok(_) => return Err(no_dir()),
                    Err(e) if e.is(&framegate_client::ErrorCode::NO_SUCH_FILE) => {
                        return Err(no_dir());
                    }
                    Err(e) => return Err(e),
                }
            }
            // Whether writes would be taken: over HTTP the `ro` endpoint's
            // `hello` says no by definition, so `rw` is asked (with the
            // token, if any); a byte stream's `hello` carried the token.
            let stream = url.starts_with("framegate://") || url.starts_with("framegate+ssh://");
            let (writable, why) = match t.hello() {
                None => (false, "plain HTTP".to_string()),
                Some(h) if stream => (h.writable, String::new()),
                Some(_) => match t.call("hello", Default::default(), None, true).await {
                    Ok(bytes) => match framegate_wire::HelloPayload::decode(&bytes) {
                        Ok(h) => (h.writable, String::new()),
                        Err(e) => (false, e.to_string()),
                    },
                    Err(Error::Refused(framegate_client::Refusal::Credentials {
                        detail, ..
                    })) => (false, detail),
                    Err(e) => (false, e.to_string()),
                },
            };
            let out = match t.hello() {
                Some(h) => json!({
                    "url": t.base_url().as_str(), "smart": true, "server": h.server, "protocol": h.protocol,
                    "commands": h.commands, "encodings": h.encodings, "writable": writable,
                    "max_frame_size": h.max_frame_size,
                }),
                None => json!({ "url": t.base_url().as_str(), "smart": false }),
            };
            if ctx.json {
                println!("{out}");
            } else if let Some(h) = t.hello() {
                // Everything the server names is shown escaped.
                let shown = |text: &str| files::printable_text(text, true);
                println!("{}: framegate server {}", t.base_url(), shown(&h.server));
                println!("  commands:  {}", shown(&h.commands.join(" ")));
                println!("  encodings: {}", shown(&h.encodings.join(", ")));
                match (writable, why.is_empty()) {
                    (true, _) => println!("  writable:  yes"),
                    (false, true) => println!("  writable:  no"),
                    (false, false) => println!("  writable:  no ({})", shown(&why)),
                }
            } else {
                println!(
                    "{}: plain HTTP (no framegate server); reads only",
                    t.base_url()
                );
            }
        }
        Cmd::Ls { url, long } => {
            let t = open(&ctx, &url).await?;
            let names = t.list_dir("").await?;
            if !long {
                if ctx.json {
                    println!("{}", json!(names));
                } else {
                    for n in names {
                        println!("{}", printable(&n));
                    }
                }
                return Ok(0);
            }
            // One batch of `stat`s for the whole listing.
            let mut batch = t.batch();
            let slots: Vec<_> = names.iter().map(|n| batch.stat(n)).collect();
            let mut results = batch.send().await?;
            let mut rows = Vec::new();
            for (n, slot) in names.iter().zip(slots) {
                rows.push((n, results.take(slot)?));
            }
            if ctx.json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|(n, s)| {
                        let mut v = stat_json(s);
                        v["name"] = json!(n);
                        v
                    })
                    .collect();
                println!("{}", json!(rows));
            } else {
                for (n, s) in rows {
                    let when = humantime::format_rfc3339_seconds(files::shown_time(s.mtime));
                    println!(
                        "{:<4} {:>12} {when} {}",
                        format!("{:?}", s.kind).to_lowercase(),
                        s.size,
                        printable(n)
                    );
                }
            }
        }
        Cmd::Cat { url } => {
            let (dir, name) = split_url(&url)?;
            let t = open(&ctx, &dir).await?;
            let mut stdout = tokio::io::stdout();
            t.get_into(&name, &mut stdout).await?;
            stdout.flush().await?;
        }
        Cmd::Get {
            url,
            dest,
            output,
            remote_name: _,
            r#continue,
            verify,
        } => {
            let (dir, name) = split_url(&url)?;
            let dest = output.or(dest);
            if dest.as_deref() == Some(Path::new("-")) {
                // Standard output: streamed, no partial file to continue.
                let t = Transport::open_lazy(&dir, ctx.options.clone()).await?;
                let mut stdout = tokio::io::stdout();
                t.get_into(&name, &mut stdout).await?;
                stdout.flush().await?;
                return Ok(0);
            }
            let dest =
                dest.unwrap_or_else(|| PathBuf::from(name.rsplit('/').next().unwrap_or(&name)));
            let dest = if dest.is_dir() {
                dest.join(name.rsplit('/').next().unwrap_or(&name))
            } else {
                dest
            };
            // No `stat` first (one message for the file): the server
            // names a large file's size in a progress report before its
            // bytes, and the bar takes its length from there.
            let pb = bar(&ctx, None, &name);
            let mut options = ctx.options.clone();
            let sized = pb.clone();
            options.hooks.on_progress =
                Some(Arc::new(move |p: &framegate_wire::ProgressPayload| {
                    if p.topic == "get" && p.pos == 0 {
                        sized.set_length(p.total);
                    }
                }));
            let t = Transport::open_lazy(&dir, options).await?;
            let watcher = watch_file(pb.clone(), partial_path(&dest));
            let how = DownloadOptions::default().resume(r#continue);
            let result = t.download_with(&name, &dest, &how).await;
            watcher.abort();
            pb.finish_and_clear();
            let n = result?;
            if verify {
                verify_copy(&t, &name, &dest).await?;
            }
            if ctx.json {
                println!("{}", json!({ "path": name, "dest": dest, "bytes": n }));
            } else if !ctx.quiet {
                eprintln!("{name}: {n} bytes -> {}", dest.display());
            }
        }
        Cmd::Put { src, url } => {
            let stdin = src.as_os_str() == "-";
            // A directory URL: the file keeps its name there.
            let url = if url.ends_with('/') {
                let base = src
                    .file_name()
                    .filter(|_| !stdin)
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{url} is a directory: name the remote file (standard input has no name)"
                        ))
                    })?;
                format!(
                    "{url}{}",
                    percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC)
                )
            } else {
                url
            };
            let (dir, name) = split_url(&url)?;
            let t = open(&ctx, &dir).await?;
            let (mut reader, len): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) =
                if stdin {
                    (Box::new(tokio::io::stdin()), None)
                } else {
                    let file = tokio::fs::File::open(&src)
                        .await
                        .map_err(|e| local_error(&src, e))?;
                    let meta = file.metadata().await.map_err(|e| local_error(&src, e))?;
                    if meta.is_dir() {
                        return Err(local_error(
                            &src,
                            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
                        ));
                    }
                    (Box::new(file), Some(meta.len()))
                };
            let pb = bar(&ctx, len, &name);
            let mut counted = Counted {
                inner: pb.wrap_async_read(&mut reader),
                n: 0,
            };
            let result = t.put_from(&name, &mut counted, None).await;
            pb.finish_and_clear();
            result?;
            let len = counted.n;
            if ctx.json {
                println!("{}", json!({ "path": name, "bytes": len }));
            } else if !ctx.quiet {
                eprintln!("{} -> {url}: {len} bytes", src.display());
            }
        }
        Cmd::Stat { url } => {
            let (dir, name) = split_url(&url)?;
            let t = open(&ctx, &dir).await?;
            let s = t.stat(&name).await?;
            if ctx.json {
                println!("{}", stat_json(&s));
            } else {
                let kind = printable(s.kind.as_str());
                let when = files::shown_time(s.mtime);
                println!(
                    "{}: {kind}, {} bytes, mode {:o}, modified {}",
                    printable(&name),
                    s.size,
                    s.mode,
                    httpdate::fmt_http_date(when)
                );
            }
        }
        Cmd::Mkdir { url, parents } => {
            let (dir, name) = split_url(&url)?;
            if parents {
                mkdir_parents(&ctx, &url).await?;
            } else {
                open(&ctx, &dir).await?.mkdir(&name, None).await?;
            }
            if ctx.json {
                println!("{}", json!({ "created": name }));
            }
        }
        Cmd::Mv { url, to } => {
            let (base, from, to) = move_paths(&url, &to)?;
            open(&ctx, &base).await?.rename(&from, &to).await?;
            if ctx.json {
                println!("{}", json!({ "from": from, "to": to }));
            }
        }
        Cmd::Rm {
            url,
            dir: is_dir,
            recursive,
        } => {
            let (dir, name) = split_url(&url)?;
            let t = open(&ctx, &dir).await?;
            if recursive {
                remove_tree(&t, &name).await?;
            } else if is_dir {
                t.rmdir(&name).await?
            } else {
                t.delete(&name).await?
            }
            if ctx.json {
                println!("{}", json!({ "removed": name }));
            }
        }
        Cmd::Call {
            url,
            name,
            args,
            write,
        } => {
            let mut arguments = framegate_wire::Arguments::new();
            for kv in &args {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Error::Usage(format!("{kv:?}: arguments are key=value")))?;
                arguments
                    .insert(k, v.to_string())
                    .map_err(|e| Error::Usage(format!("{kv:?}: {e}")))?;
            }
            let t = open(&ctx, &url).await?;
            let answer = t.call(&name, arguments, None, write).await?;
            // A CBOR answer is shown as JSON with --json or on a terminal
            // (raw CBOR would be noise there); bytes otherwise, as sent.
            let as_json = (ctx.json || std::io::stdout().is_terminal())
                .then(|| ciborium::from_reader::<serde_json::Value, _>(&answer[..]).ok())
                .flatten();
            match as_json {
                Some(value) => println!("{value}"),
                // Text that is not CBOR: a JSON string.
                None if ctx.json => match std::str::from_utf8(&answer) {
                    Ok(text) => println!("{}", json!(text)),
                    Err(_) => {
                        return Err(Error::Usage(format!(
                            "the {name} answer is neither CBOR nor text: leave out --json to get its bytes"
                        )));
                    }
                },
                None => {
                    let mut stdout = tokio::io::stdout();
                    stdout.write_all(&answer).await?;
                    stdout.flush().await?;
                }
            }
        }
        Cmd::Mirror {
            url,
            dir,
            dry_run,
            delete,
            exclude,
            checksum,
        } => {
            let args = MirrorArgs {
                dry_run,
                delete,
                checksum,
                filter: Filter::new(&exclude)?,
            };
            if let Mirrored::Partly = mirror(&ctx, &url, &dir, &args).await? {
                return Ok(EXIT_PARTLY);
            }
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "framegate",
                &mut std::io::stdout(),
            );
        }
    }
    Ok(0)
}

/// An error with its chain of causes, each once (a cause the message
/// already quotes is not repeated).
pub(crate) fn describe(err: &Error) -> String {
    files::printable_text(&describe_raw(err), true)
}

/// [`describe`] as the words came (for JSON, which escapes them itself).
fn describe_raw(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    message
}

/// The exit code of an error: its layer (see [`args::EXIT_CODES`]).
fn exit_code(err: &Error) -> u8 {
    match err.layer() {
        Layer::Remote => 1,
        Layer::Usage => 2,
        Layer::Transport => 3,
        Layer::Refused => 4,
        Layer::Misbehaved => 5,
        Layer::Local => 6,
        _ => 7,
    }
}

/// The client's own log on stderr: `-v` info, `-vv` debug, or the filter
/// in FRAMEGATE_LOG; nothing otherwise.
fn init_logging(verbose: u8) {
    let filter = match (std::env::var("FRAMEGATE_LOG"), verbose) {
        (Ok(f), _) => f,
        (Err(_), 0) => return,
        (Err(_), 1) => "framegate_client=info,framegate=info".into(),
        (Err(_), _) => "framegate_client=debug,framegate=debug".into(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let json = cli.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("framegate: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // Standard output closed early (`| head`): stop quietly, as a
            // program killed by SIGPIPE would.
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(err) => {
            let raw = describe_raw(&err);
            let mut message = files::printable_text(&raw, true);
            if message.contains("CaUsedAsEndEntity") {
                message.push_str(
                    "\nframegate: the server's certificate is a CA certificate (what \
                     `openssl req -x509` makes): TLS clients refuse it as a server's own. \
                     Sign a server certificate with it (deploy/README.md, \"Certificates\")",
                );
            }
            let code = exit_code(&err);
            if json {
                // One object on stdout, as the command's output would be.
                println!(
                    "{}",
                    json!({ "error": {
                        "layer": format!("{:?}", err.layer()).to_lowercase(),
                        "code": err.code().map(ToString::to_string),
                        "exit": code,
                        "message": raw,
                    }})
                );
            } else {
                eprintln!("framegate: {message}");
            }
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_directory_and_file() {
        assert_eq!(
            split_url("http://h:1/a/b.txt").unwrap(),
            ("http://h:1/a/".into(), "b.txt".into())
        );
        assert_eq!(
            split_url("https://h/x%20y").unwrap(),
            ("https://h/".into(), "x y".into())
        );
        assert!(split_url("http://h/").is_err());
        assert!(split_url("http://h").is_err());
        assert!(split_url("nonsense").is_err());
    }
}
