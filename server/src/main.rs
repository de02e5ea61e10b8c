//! `framegate-server`: serve a directory over framegate-in-HTTP.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use framegate_server::GraceExpired;
use framegate_server::{Gateway, GatewayConfig, Registry, serve};
use framegate_server::{serve_stdio, serve_tcp};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "framegate-server",
    version,
    about = "Serve a directory to framegate clients over HTTP"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve DIR (default: the current directory) over HTTP, and with
    /// --tcp or --stdio over the byte-stream protocol.
    ///
    /// Defaults are safe: read-only, the protocol's limits, listening on
    /// 127.0.0.1:8080 only. Every option can also be set in a TOML file
    /// given with --config (keys are the long option names, e.g.
    /// `listen = "0.0.0.0:8080"`, `keepalive-interval = "15s"`); options on
    /// the command line win.
    #[command(after_help = SIGNALS_HELP)]
    Serve(ServeArgs),
}

/// What `serve --help` says about signals and exit statuses.
const SIGNALS_HELP: &str = "\
Signals:
  SIGTERM, SIGINT, SIGHUP  stop gracefully: stop accepting connections, let
                           the messages in flight finish within
                           --shutdown-grace, then exit (0, or 3 if the grace
                           ran out and work in flight was cut). SIGHUP does
                           not reload anything; it stops like SIGTERM.
  a second one of these    stop at once, cutting what is in flight (exit 3).
  With --stdio, a stop ends an idle session (or one still waiting for its
  preamble) at once, else after the requests in flight. The idle timeout
  ends the session and the process too (exit 0).

Exit status:
  0  stopped cleanly (a signal and every message finished, or with --stdio
     the end of input or the idle timeout)
  1  could not start or failed (bad directory or option value, address in
     use, ...)
  2  bad command line, or unreadable or invalid --config file
  3  stopped by a signal, but work in flight was cut (grace period over, or
     a second signal)";

#[derive(clap::Args, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ServeArgs {
    /// Directory to serve.
    #[serde(rename = "dir")]
    dir: Option<PathBuf>,
    /// TOML file with the same settings.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Accept messages on the `rw` endpoint (writes). Off by default.
    #[arg(long)]
    #[serde(default)]
    allow_writes: bool,
    /// File holding the bearer token `rw` requires (compared in constant time).
    #[arg(long, value_name = "PATH")]
    write_token_file: Option<PathBuf>,
    /// Largest frame payload accepted [default: 65535].
    #[arg(long, value_name = "BYTES")]
    max_frame_size: Option<usize>,
    /// Requests receiving at once per message [default: 64].
    #[arg(long, value_name = "N")]
    max_receiving_requests: Option<usize>,
    /// Requests per message [default: 4096].
    #[arg(long, value_name = "N")]
    max_requests_per_message: Option<usize>,
    /// Arguments per request [default: 64].
    #[arg(long, value_name = "N")]
    max_arguments: Option<usize>,
    /// Bytes of arguments per request [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_argument_bytes: Option<usize>,
    /// Commands running at once per message [default: 16].
    #[arg(long, value_name = "N")]
    max_running_commands: Option<usize>,
    /// Bytes per message (request body) [default: 17179869184 = 16 GiB].
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<u64>,
    /// zstd-encoded client streams open at once per message or connection,
    /// each up to 8 MiB of decoder window [default: 2].
    #[arg(long, value_name = "N")]
    max_encoded_streams: Option<usize>,
    /// Send a keepalive frame after this long without output [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    keepalive_interval: Option<Duration>,
    /// Give up on a request body silent this long [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    body_read_timeout: Option<Duration>,
    /// Close an HTTP/1 connection whose request headers are not all in this
    /// long after it was opened or went idle (slowloris, idle keep-alive)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    header_read_timeout: Option<Duration>,
    /// Close an HTTP message whose client takes no answer bytes for this
    /// long (it stopped reading) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    send_timeout: Option<Duration>,
    /// On SIGTERM, SIGINT or SIGHUP, let messages in flight finish this long,
    /// then cut them and exit 3 [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    shutdown_grace: Option<Duration>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on ADDR at /metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Also serve the byte-stream protocol (framegate://) on ADDR
    /// [default when given without a value: 127.0.0.1:4159].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:4159")]
    tcp: Option<SocketAddr>,
    /// Serve no HTTP (with --tcp: byte streams only).
    #[arg(long)]
    #[serde(default)]
    no_http: bool,
    /// Serve one session on stdin/stdout, as started by sshd
    /// (`framegate+ssh://`); logs go to stderr, nothing else to stdout.
    #[arg(long, conflicts_with_all = ["tcp", "no_http", "listen", "metrics_listen"])]
    #[serde(skip)]
    stdio: bool,
    /// Close byte-stream connections silent this long [default: 300s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    idle_timeout: Option<Duration>,
    /// Cut (408) a request body arriving slower than this on average, after
    /// the body-read timeout's grace; 0: no rate [default: 1024].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    min_body_rate: Option<u64>,
    /// Close HTTP connections (either version) with no byte read or written
    /// this long [default: 120s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    connection_idle_timeout: Option<Duration>,
    /// Per message: commands running plus answers held open before further
    /// commands wait [default: 16].
    #[arg(long, value_name = "N")]
    message_open_answers: Option<usize>,
    /// Per message: answer bytes queued for sending before further commands
    /// wait [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    message_held_bytes: Option<usize>,
    /// Per server: commands running plus answers held open, over all
    /// messages (each may hold a file open) [default: a quarter of the
    /// descriptor limit left after 64, at most 4096].
    #[arg(long, value_name = "N")]
    open_answers: Option<usize>,
    /// Per server: connections served at once, HTTP and byte streams; more
    /// wait in the listen backlog [default: half the descriptor limit left
    /// after 64, at most 16384].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Per HTTP/2 connection: messages (streams) at once [default: 8].
    #[arg(long, value_name = "N")]
    http2_max_streams: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

impl ServeArgs {
    /// Command-line values over file values.
    fn merge(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            dir: self.dir.or(file.dir),
            config: self.config,
            listen: self.listen.or(file.listen),
            allow_writes: self.allow_writes || file.allow_writes,
            write_token_file: self.write_token_file.or(file.write_token_file),
            max_frame_size: self.max_frame_size.or(file.max_frame_size),
            max_receiving_requests: self.max_receiving_requests.or(file.max_receiving_requests),
            max_requests_per_message: self
                .max_requests_per_message
                .or(file.max_requests_per_message),
            max_arguments: self.max_arguments.or(file.max_arguments),
            max_argument_bytes: self.max_argument_bytes.or(file.max_argument_bytes),
            max_running_commands: self.max_running_commands.or(file.max_running_commands),
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_encoded_streams: self.max_encoded_streams.or(file.max_encoded_streams),
            keepalive_interval: self.keepalive_interval.or(file.keepalive_interval),
            body_read_timeout: self.body_read_timeout.or(file.body_read_timeout),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            send_timeout: self.send_timeout.or(file.send_timeout),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            log_format: self.log_format.or(file.log_format),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            tcp: self.tcp.or(file.tcp),
            no_http: self.no_http || file.no_http,
            stdio: self.stdio,
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            min_body_rate: self.min_body_rate.or(file.min_body_rate),
            connection_idle_timeout: self
                .connection_idle_timeout
                .or(file.connection_idle_timeout),
            message_open_answers: self.message_open_answers.or(file.message_open_answers),
            message_held_bytes: self.message_held_bytes.or(file.message_held_bytes),
            open_answers: self.open_answers.or(file.open_answers),
            max_connections: self.max_connections.or(file.max_connections),
            http2_max_streams: self.http2_max_streams.or(file.http2_max_streams),
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRAMEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn gateway_config(args: &ServeArgs) -> Result<GatewayConfig, String> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot serve {}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut config = GatewayConfig::new(dir);
    config.allow_writes = args.allow_writes;
    if let Some(path) = &args.write_token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the write token file {}: {e}", path.display()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(format!("the write token file {} is empty", path.display()));
        }
        config.write_token = Some(token);
    }
    let l = &mut config.limits;
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field { l.$field = v; } )* };
    }
    set!(
        max_frame_size,
        max_receiving_requests,
        max_requests_per_message,
        max_arguments,
        max_argument_bytes,
        max_running_commands,
        max_message_bytes,
        max_encoded_streams
    );
    if l.max_frame_size < 1024 || l.max_frame_size > framegate_wire::frame::MAX_LENGTH_FIELD {
        return Err("--max-frame-size must be between 1024 and 16777215".into());
    }
    l.answer_chunk_size = l.answer_chunk_size.min(l.max_frame_size);
    if let Some(d) = args.keepalive_interval {
        config.keepalive_interval = d;
    }
    if let Some(d) = args.body_read_timeout {
        config.body_read_timeout = d;
    }
    if let Some(d) = args.header_read_timeout {
        config.header_read_timeout = d;
    }
    if let Some(d) = args.send_timeout {
        config.send_timeout = d;
    }
    if let Some(d) = args.shutdown_grace {
        config.shutdown_grace = d;
    }
    if let Some(d) = args.idle_timeout {
        config.idle_timeout = d;
    }
    if let Some(d) = args.connection_idle_timeout {
        config.connection_idle_timeout = d;
    }
    if config.connection_idle_timeout <= config.keepalive_interval {
        return Err(
            "--connection-idle-timeout must be longer than --keepalive-interval \
             (a long-running message would look idle)"
                .into(),
        );
    }
    macro_rules! budget {
        ($($field:ident),*) => { $( if let Some(v) = args.$field {
            if v == 0 {
                return Err(format!("--{} must be at least 1", stringify!($field).replace('_', "-")));
            }
            config.$field = v;
        } )* };
    }
    budget!(
        message_open_answers,
        message_held_bytes,
        open_answers,
        max_connections,
        http2_max_streams
    );
    if let Some(rate) = args.min_body_rate {
        config.min_body_rate = rate;
    }
    Ok(config)
}

/// Why serving ended badly.
#[derive(Debug)]
enum Failure {
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
    let config = gateway_config(&args).map_err(Failure::Error)?;
    tracing::info!(
        fd_limit,
        max_connections = config.max_connections,
        open_answers = config.open_answers,
        "budgets"
    );
    if (config.max_connections + config.open_answers) as u64 + framegate_server::FD_RESERVE
        > fd_limit
    {
        tracing::warn!(
            fd_limit,
            "--max-connections plus --open-answers exceed the descriptor limit: \
             requests may fail with too many open files"
        );
    }
    let root = config.root.clone();
    let grace = config.shutdown_grace;
    let writes = if config.allow_writes {
        "read-write"
    } else {
        "read-only"
    };
    let gateway = Gateway::new(config, Registry::files())
        .map_err(|e| Failure::Error(format!("cannot open {}: {e}", root.display())))?;
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
            let listener = tokio::net::TcpListener::bind(addr)
                .await
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
        let listener = tokio::net::TcpListener::bind(listen)
            .await
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

fn main() -> ExitCode {
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
        Err(Failure::Cut(message)) => {
            eprintln!("framegate-server: {message}");
            ExitCode::from(EXIT_CUT)
        }
    }
}
