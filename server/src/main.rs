//! `framegate-server`: serve a directory over framegate-in-HTTP.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use framegate_server::GraceExpired;
use framegate_server::{Gateway, Registry, serve};
use framegate_server::{serve_stdio, serve_tcp};
use tokio_util::sync::CancellationToken;

mod cli;
mod opt_duration;
mod store_args;

use cli::{Cli, Cmd, LogFormat, ServeArgs, gateway_config};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRAMEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: not in files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Why serving ended badly.
#[derive(Debug)]
enum Failure {
    /// The options do not make a server that may start: exit 2.
    Usage(String),
    /// Could not start, or broke: exit 1.
    Error(String),
    /// Stopped by a signal, but work in flight was cut: exit 3.
    Cut(String),
}

impl Failure {
    fn from_io(e: io::Error) -> Failure {
        match GraceExpired::find(&e) {
            Some(expired) => Failure::Cut(expired.to_string()),
            None => Failure::Error(e.to_string()),
        }
    }
}

/// Exit status when a stop had to cut work in flight.
const EXIT_CUT: u8 = 3;

/// How long, once serving is over, blocking work (file reads and writes on
/// the pool) gets to end before the process exits anyway.
const RUNTIME_DRAIN: Duration = Duration::from_secs(1);

async fn run(args: ServeArgs) -> Result<(), Failure> {
    // Before the defaults are sized from it.
    let fd_limit = framegate_server::raise_fd_limit();
    let config = gateway_config(&args).map_err(Failure::Usage)?;
    tracing::info!(
        fd_limit,
        max_connections = config.max_connections,
        max_messages = config.max_messages,
        open_answers = config.open_answers,
        "budgets"
    );
    let wanted = (config.max_connections
        + config.max_messages
        + config.open_answers
        + config.max_staging_files) as u64
        + framegate_server::FD_RESERVE;
    if wanted > fd_limit {
        tracing::warn!(
            fd_limit,
            wanted,
            "--max-connections, --max-messages and --open-answers exceed the descriptor \
             limit: requests may fail with too many open files"
        );
    }
    let root = config.root.clone();
    let grace = config.shutdown_grace;
    let writes = if config.allow_writes {
        "read-write"
    } else {
        "read-only"
    };
    let mut registry = Registry::files();
    registry
        .apply(&args.command_policy())
        .map_err(|e| Failure::Usage(format!("--allow-commands/--deny-commands: {e}")))?;
    let gateway = if store_args::is_store_url(&root) {
        let url = root.to_string_lossy().into_owned();
        let store = args
            .s3
            .config(&url, config.max_staging_files, config.header_read_timeout)
            .map_err(Failure::Usage)?;
        let storage = framegate_server::ObjectStorage::open(&store, config.allow_writes)
            .await
            .map_err(|e| Failure::Error(format!("cannot serve {url}: {e}")))?;
        Gateway::with_storage(config, registry, std::sync::Arc::new(storage))
    } else {
        Gateway::new(config, registry)
            .map_err(|e| Failure::Error(format!("cannot open {}: {e}", root.display())))?
    };
    // Handlers are installed before anything is served: a signal never
    // meets the default action (which would kill the process mid-answer).
    let mut signals =
        Signals::new().map_err(|e| Failure::Error(format!("cannot handle signals: {e}")))?;
    let stop = CancellationToken::new();
    let cut_now = CancellationToken::new();
    {
        let stop = stop.clone();
        let cut_now = cut_now.clone();
        tokio::spawn(async move {
            let signal = signals.next().await;
            tracing::info!(
                signal,
                grace_secs = grace.as_secs_f64(),
                "stopping: no new connections; finishing messages in flight"
            );
            stop.cancel();
            let signal = signals.next().await;
            tracing::warn!(signal, "second signal: stopping at once");
            cut_now.cancel();
        });
    }
    let served = serve_until_stopped(&args, gateway, root, writes, stop);
    tokio::select! {
        result = served => result,
        _ = cut_now.cancelled() => Err(Failure::Cut(
            "stopped at once by a second signal; work in flight cut".into(),
        )),
    }
}

/// Serves until `stop` and the graceful end of what was in flight.
async fn serve_until_stopped(
    args: &ServeArgs,
    gateway: std::sync::Arc<Gateway>,
    root: PathBuf,
    writes: &str,
    stop: CancellationToken,
) -> Result<(), Failure> {
    if args.stdio {
        // Nothing but frames may reach stdout.
        return serve_stdio(gateway, stop).await.map_err(Failure::from_io);
    }
    if args.no_http && args.tcp.is_none() {
        return Err(Failure::Error("--no-http needs --tcp".into()));
    }
    let tcp_task = match args.tcp {
        Some(addr) => {
            let listener = framegate_server::listen(addr)
                .map_err(|e| Failure::Error(format!("cannot listen on {addr}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| Failure::Error(e.to_string()))?;
            println!(
                "framegate-server: serving {} ({writes}) at framegate://{local}/",
                root.display()
            );
            Some(tokio::spawn(serve_tcp(
                gateway.clone(),
                listener,
                stop.clone(),
            )))
        }
        None => None,
    };
    let mut results = Vec::new();
    if !args.no_http {
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let listener = framegate_server::listen(listen)
            .map_err(|e| Failure::Error(format!("cannot listen on {listen}: {e}")))?;
        let metrics = match args.metrics_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::Error(format!("cannot listen for metrics on {addr}: {e}"))
            })?),
            None => None,
        };
        let handle = serve(gateway, listener, metrics)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        println!(
            "framegate-server: serving {} ({writes}) at http://{}/",
            root.display(),
            handle.local_addr
        );
        if let Some(addr) = handle.metrics_addr {
            println!("framegate-server: metrics at http://{addr}/metrics");
        }
        let token = handle.stop_token();
        let http_stop = stop.clone();
        tokio::spawn(async move {
            http_stop.cancelled().await;
            token.cancel();
        });
        results.push(handle.wait().await.map_err(Failure::from_io));
    }
    if let Some(task) = tcp_task {
        results.push(match task.await {
            Ok(result) => result.map_err(Failure::from_io),
            Err(e) => Err(Failure::Error(e.to_string())),
        });
    }
    // An error wins over a cut; two cuts are reported together.
    let mut cut = Vec::new();
    for result in results {
        match result {
            Ok(()) => {}
            Err(Failure::Error(e)) => return Err(Failure::Error(e)),
            Err(Failure::Usage(e)) => return Err(Failure::Usage(e)),
            Err(Failure::Cut(c)) => cut.push(c),
        }
    }
    if cut.is_empty() {
        Ok(())
    } else {
        Err(Failure::Cut(cut.join("; ")))
    }
}

/// The stop signals: SIGTERM, SIGINT and SIGHUP (none of them is fatal to
/// the process once these handlers are installed).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next one; returns its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Heaps glibc's malloc may keep (`MALLOC_ARENA_MAX`): by default it gives
/// threads heaps of their own, up to 8 per core, and keeps what is freed
/// on each mapped, so the file pool's threads building listings and
/// answers leave memory behind that no budget sees (32 HTTP/2 connections
/// × 8 never-read messages of 4 `list_dir`s of 100,000 names: 312 MiB
/// peak, 277 MiB after the clients left; with 2 heaps, 195 MiB; jemalloc
/// did worse, 330 MiB).
const MALLOC_ARENAS: &str = "2";

/// glibc reads `MALLOC_ARENA_MAX` only as the process starts, so unless the
/// environment sets it the server sets it and executes itself again (the
/// same process id, arguments and descriptors). Returns only if that
/// failed, and the server goes on with glibc's default.
fn bound_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("MALLOC_ARENA_MAX", MALLOC_ARENAS)
        .exec();
    eprintln!(
        "framegate-server: could not re-execute with MALLOC_ARENA_MAX={MALLOC_ARENAS}: {err}"
    );
}

fn main() -> ExitCode {
    bound_malloc_arenas();
    let cli = Cli::parse();
    let Cmd::Serve(args) = cli.command;
    let args = match &args.config {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("framegate-server: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match toml::from_str::<ServeArgs>(&text) {
                Ok(file) => args.merge(file),
                Err(e) => {
                    eprintln!("framegate-server: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        None => args,
    };
    init_logging(args.log_format.unwrap_or(LogFormat::Text));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("framegate-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdio = args.stdio;
    let result = runtime.block_on(run(args));
    if stdio {
        // tokio reads stdin on a blocking thread that stays in read(2) until
        // the peer closes stdin: do not wait for it.
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(RUNTIME_DRAIN);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("framegate-server: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("framegate-server: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Cut(message)) => {
            eprintln!("framegate-server: {message}");
            ExitCode::from(EXIT_CUT)
        }
    }
}
