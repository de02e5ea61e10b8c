//! The command line of `framegate-server` (the binary's, not the
//! library's): options, the `--config` file, and the gateway configuration
//! they make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use framegate_server::GatewayConfig;
use serde::Deserialize;

use crate::opt_duration;

#[derive(Parser, Debug)]
#[command(
    name = "framegate-server",
    version,
    about = "Serve a directory to framegate clients over HTTP"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
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
pub(crate) const SIGNALS_HELP: &str = "\
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
pub(crate) struct ServeArgs {
    /// Directory to serve, or `s3://BUCKET/PREFIX` to serve an object
    /// store (settings: the `--s3-*` flags; credentials: `AWS_*`).
    #[serde(rename = "dir")]
    pub(crate) dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(default)]
    pub(crate) s3: crate::store_args::StoreArgs,
    /// TOML file with the same settings.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Accept messages on the `rw` endpoint (writes). Off by default.
    #[arg(long)]
    #[serde(default)]
    pub(crate) allow_writes: bool,
    /// File holding the bearer token `rw` requires (compared in constant
    /// time). Needs --allow-writes.
    #[arg(long, value_name = "PATH")]
    pub(crate) write_token_file: Option<PathBuf>,
    /// With --allow-writes and no --write-token-file, accept writes from
    /// anyone on a non-loopback address (e.g. behind a proxy that
    /// authenticates). Without it such a server refuses to start.
    #[arg(long)]
    #[serde(default)]
    pub(crate) allow_unauthenticated_writes: bool,
    /// Offer only these commands (comma-separated; `hello` is always
    /// offered); others are left out of `hello` and answered
    /// `command-refused`. In TOML: a list.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) allow_commands: Option<Vec<String>>,
    /// Refuse these commands (comma-separated), e.g.
    /// `iter_files_recursive,tree` on a public mirror; added to the TOML
    /// file's list. Plain HTTP follows `get` (files) and `list_dir`
    /// (listings).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    #[serde(default)]
    pub(crate) deny_commands: Vec<String>,
    /// Largest frame payload accepted [default: 65535].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_frame_size: Option<usize>,
    /// Requests receiving at once per message [default: 64].
    #[arg(long, value_name = "N")]
    pub(crate) max_receiving_requests: Option<usize>,
    /// Requests per HTTP message; on a byte stream, requests active at once
    /// before the server stops reading until answers went out [default: 4096].
    #[arg(long, value_name = "N")]
    pub(crate) max_requests_per_message: Option<usize>,
    /// Arguments per request [default: 64].
    #[arg(long, value_name = "N")]
    pub(crate) max_arguments: Option<usize>,
    /// Bytes of arguments per request [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_argument_bytes: Option<usize>,
    /// Bytes of arguments held by the requests of a message (or byte-stream
    /// connection) not yet answered [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_unanswered_argument_bytes: Option<usize>,
    /// Commands running at once per message [default: 16].
    #[arg(long, value_name = "N")]
    pub(crate) max_running_commands: Option<usize>,
    /// Bytes per message (request body) [default: 17179869184 = 16 GiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_message_bytes: Option<u64>,
    /// zstd-encoded client streams open at once per message or connection,
    /// each up to 8 MiB of decoder window [default: 2].
    #[arg(long, value_name = "N")]
    pub(crate) max_encoded_streams: Option<usize>,
    /// Per server: zstd-encoded client streams being decoded at once, over
    /// all messages and connections (each up to 8 MiB of decoder window);
    /// one more ends its message with `too-many-requests` [default: 16].
    #[arg(long, value_name = "N")]
    pub(crate) max_decoding_streams: Option<usize>,
    /// Per server: bytes of arguments held by requests not yet answered,
    /// over all messages and connections; more is `too-large`
    /// [default: 67108864 = 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_held_argument_bytes: Option<usize>,
    /// Per server: requests held (received, not yet answered and sent)
    /// beyond the first 64 of each message or session, over all of them;
    /// more is `too-many-requests` [default: 196608, about 130 MiB].
    #[arg(long, value_name = "N")]
    pub(crate) max_held_requests: Option<usize>,
    /// Send a keepalive frame after this long without output [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) keepalive_interval: Option<Duration>,
    /// Longest an answer over HTTP waits for more answers of its message
    /// to go out in the same chunk, while the message's commands still run
    /// (fewer, larger chunks for batches of small commands; 0s: none)
    /// [default: 1ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) coalesce_wait: Option<Duration>,
    /// Give up on a request body silent this long [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) body_read_timeout: Option<Duration>,
    /// Close an HTTP/1 connection whose request headers are not all in this
    /// long after it was opened or went idle (slowloris, idle keep-alive)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) header_read_timeout: Option<Duration>,
    /// Close an HTTP message whose client takes no answer bytes for this
    /// long (it stopped reading) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) send_timeout: Option<Duration>,
    /// On SIGTERM, SIGINT or SIGHUP, let messages in flight finish this long,
    /// then cut them and exit 3 [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) shutdown_grace: Option<Duration>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on ADDR at /metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Also serve the byte-stream protocol (framegate://): `--tcp` on
    /// 127.0.0.1:4159, `--tcp=ADDR` on ADDR (the `=` is required, so that
    /// `--tcp DIR` serves DIR).
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "127.0.0.1:4159"
    )]
    pub(crate) tcp: Option<SocketAddr>,
    /// Serve no HTTP (with --tcp: byte streams only).
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_http: bool,
    /// Serve one session on stdin/stdout, as started by sshd
    /// (`framegate+ssh://`); logs go to stderr, nothing else to stdout.
    #[arg(long, conflicts_with_all = ["tcp", "no_http", "listen", "metrics_listen"])]
    #[serde(skip)]
    pub(crate) stdio: bool,
    /// Close byte-stream connections silent this long [default: 300s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) idle_timeout: Option<Duration>,
    /// Cut (408) a request body arriving slower than this on average, after
    /// the body-read timeout's grace; 0: no rate [default: 1024].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub(crate) min_body_rate: Option<u64>,
    /// Close HTTP connections (either version) with no byte read or written
    /// this long [default: 120s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) connection_idle_timeout: Option<Duration>,
    /// Per message: commands running plus answers held open before further
    /// commands wait [default: 16].
    #[arg(long, value_name = "N")]
    pub(crate) message_open_answers: Option<usize>,
    /// Per message: answer bytes queued for sending before further commands
    /// wait [default: 2097152].
    #[arg(long, value_name = "BYTES")]
    pub(crate) message_held_bytes: Option<usize>,
    /// Per server: answer bytes on their way to clients beyond one chunk
    /// per message; past it, messages send one chunk at a time [default:
    /// 67108864].
    #[arg(long, value_name = "BYTES")]
    pub(crate) output_buffer: Option<usize>,
    /// Per server: request data queued for uploads and not yet staged;
    /// past it, messages sending more wait [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_queued_upload_bytes: Option<usize>,
    /// Per server: bytes of plain directory listings read and not yet
    /// sent; a listing that does not fit is answered 503 with Retry-After
    /// [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub(crate) listing_memory: Option<usize>,
    /// Per server: bytes that connections, messages, zstd decoders, held
    /// requests and arguments, the output buffer, listings, queued upload
    /// data and compressors may hold together, each at its worst-case cost.
    /// Connections and messages reserve theirs at start (and this sets the
    /// defaults of --max-connections and --max-messages); the others draw
    /// on the rest, each keeping its own cap too, and act as at their cap
    /// when it is spent [default: 201326592 = 192 MiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) memory_budget: Option<usize>,
    /// Per server: commands running plus answers held open, over all
    /// messages (each may hold a file open) [default: a quarter of the
    /// descriptor limit left after 64, at most 4096].
    #[arg(long, value_name = "N")]
    pub(crate) open_answers: Option<usize>,
    /// Per server: uploads staging at once (a staging file each); more wait
    /// [default: a sixteenth of the descriptor limit left after 64, at
    /// least 64, at most 1024].
    #[arg(long, value_name = "N")]
    pub(crate) max_staging_files: Option<usize>,
    /// Per server: connections served at once, HTTP and byte streams; more
    /// wait in the listen backlog [default: a third of the descriptor limit left
    /// after 64, at most 4096, and at most what a quarter of --memory-budget
    /// covers at 192 KiB each: 256 at the default].
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Per server: messages in flight (HTTP messages and byte-stream
    /// sessions); more wait before their body is read [default: a third of
    /// the descriptor limit left after 64, at most 1024, and at most what an
    /// eighth of --memory-budget covers at 112 KiB each: 219 at the default].
    #[arg(long, value_name = "N")]
    pub(crate) max_messages: Option<usize>,
    /// Per HTTP/2 connection: messages (streams) at once [default: 8].
    #[arg(long, value_name = "N")]
    pub(crate) http2_max_streams: Option<usize>,
    /// Per server: messages answered compressed at once (a compressor is
    /// about 2.5 MiB); others are answered unencoded; 0: never compress
    /// [default: 32].
    #[arg(long, value_name = "N")]
    pub(crate) max_compressing_messages: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    /// The operator's command policy.
    pub(crate) fn command_policy(&self) -> framegate_server::CommandPolicy {
        framegate_server::CommandPolicy {
            allow: self.allow_commands.clone(),
            deny: self.deny_commands.clone(),
        }
    }

    /// Command-line values over file values.
    pub(crate) fn merge(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            dir: self.dir.or(file.dir),
            s3: self.s3.merge(file.s3),
            config: self.config,
            listen: self.listen.or(file.listen),
            allow_writes: self.allow_writes || file.allow_writes,
            write_token_file: self.write_token_file.or(file.write_token_file),
            allow_unauthenticated_writes: self.allow_unauthenticated_writes
                || file.allow_unauthenticated_writes,
            allow_commands: self.allow_commands.or(file.allow_commands),
            // Refusals add up: a command line cannot reopen what the file
            // refuses.
            deny_commands: file
                .deny_commands
                .into_iter()
                .chain(self.deny_commands)
                .collect(),
            max_frame_size: self.max_frame_size.or(file.max_frame_size),
            max_receiving_requests: self.max_receiving_requests.or(file.max_receiving_requests),
            max_requests_per_message: self
                .max_requests_per_message
                .or(file.max_requests_per_message),
            max_arguments: self.max_arguments.or(file.max_arguments),
            max_argument_bytes: self.max_argument_bytes.or(file.max_argument_bytes),
            max_unanswered_argument_bytes: self
                .max_unanswered_argument_bytes
                .or(file.max_unanswered_argument_bytes),
            max_running_commands: self.max_running_commands.or(file.max_running_commands),
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_encoded_streams: self.max_encoded_streams.or(file.max_encoded_streams),
            max_decoding_streams: self.max_decoding_streams.or(file.max_decoding_streams),
            max_held_argument_bytes: self
                .max_held_argument_bytes
                .or(file.max_held_argument_bytes),
            max_held_requests: self.max_held_requests.or(file.max_held_requests),
            keepalive_interval: self.keepalive_interval.or(file.keepalive_interval),
            coalesce_wait: self.coalesce_wait.or(file.coalesce_wait),
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
            output_buffer: self.output_buffer.or(file.output_buffer),
            max_queued_upload_bytes: self
                .max_queued_upload_bytes
                .or(file.max_queued_upload_bytes),
            listing_memory: self.listing_memory.or(file.listing_memory),
            memory_budget: self.memory_budget.or(file.memory_budget),
            open_answers: self.open_answers.or(file.open_answers),
            max_staging_files: self.max_staging_files.or(file.max_staging_files),
            max_connections: self.max_connections.or(file.max_connections),
            max_messages: self.max_messages.or(file.max_messages),
            http2_max_streams: self.http2_max_streams.or(file.http2_max_streams),
            max_compressing_messages: self
                .max_compressing_messages
                .or(file.max_compressing_messages),
        }
    }
}

pub(crate) fn gateway_config(args: &ServeArgs) -> Result<GatewayConfig, String> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let dir = if crate::store_args::is_store_url(&dir) {
        dir
    } else {
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot serve {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        dir
    };
    let mut config = GatewayConfig::new(dir);
    config.allow_writes = args.allow_writes;
    if args.write_token_file.is_some() && !args.allow_writes {
        return Err(
            "--write-token-file needs --allow-writes (without it the server is read-only and \
             the token would guard nothing)"
                .into(),
        );
    }
    if args.allow_writes && args.write_token_file.is_none() && !args.stdio {
        // Over stdio (under sshd) the SSH login is the authentication.
        let open: Vec<SocketAddr> = [
            (!args.no_http).then(|| {
                args.listen
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
            }),
            args.tcp,
        ]
        .into_iter()
        .flatten()
        .filter(|a| !a.ip().is_loopback())
        .collect();
        if let Some(addr) = open.first() {
            if !args.allow_unauthenticated_writes {
                return Err(format!(
                    "--allow-writes without --write-token-file on {addr} lets anyone who can \
                     connect write: add --write-token-file FILE, or \
                     --allow-unauthenticated-writes if something in front authenticates"
                ));
            }
            tracing::warn!(%addr, "writes allowed without a token on a non-loopback address");
        } else {
            tracing::warn!(
                "writes allowed without a token: anyone who can connect to this machine's \
                 loopback can write (add --write-token-file FILE)"
            );
        }
    }
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
        max_unanswered_argument_bytes,
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
    if let Some(d) = args.coalesce_wait {
        if d > Duration::from_millis(100) {
            return Err("--coalesce-wait must be at most 100ms".into());
        }
        config.coalesce_wait = d;
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
    // First: it sets the defaults of --max-connections and --max-messages.
    if let Some(bytes) = args.memory_budget {
        if bytes < framegate_server::MIN_MEMORY_BUDGET {
            return Err(format!(
                "--memory-budget must be at least {}",
                framegate_server::MIN_MEMORY_BUDGET
            ));
        }
        config = config.with_memory_budget(bytes);
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
        output_buffer,
        max_queued_upload_bytes,
        listing_memory,
        open_answers,
        max_staging_files,
        max_connections,
        max_messages,
        http2_max_streams,
        max_decoding_streams,
        max_held_argument_bytes,
        max_held_requests
    );
    if let Some(n) = args.max_compressing_messages {
        config.max_compressing_messages = n;
    }
    if let Some(rate) = args.min_body_rate {
        config.min_body_rate = rate;
    }
    Ok(config)
}
