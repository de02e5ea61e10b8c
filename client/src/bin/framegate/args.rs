//! The command line: options, subcommands and the exit-code table.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub(crate) const EXIT_CODES: &str = "\
URLs:
  http://HOST/DIR/, https://...    a framegate gateway, or any web server
                                   (plain HTTP: reads only)
  framegate+http(s)://...          a framegate gateway only (no fallback)
  framegate://HOST:PORT/DIR        the byte-stream protocol over TCP
  framegate+ssh://[USER@]HOST/DIR  over SSH (runs `framegate-server serve
                                   --stdio` there)

Environment:
  FRAMEGATE_TOKEN           bearer token for writes (as --token)
  FRAMEGATE_SSH             the ssh program and its options [default: ssh]
  FRAMEGATE_REMOTE_COMMAND  what framegate+ssh:// runs on the server
                            [default: framegate-server serve --stdio /]
  FRAMEGATE_LOG             log filter for -v (e.g. framegate_client=debug)
  NETRC                     the netrc file [default: ~/.netrc]: without
                            --token/--token-file/FRAMEGATE_TOKEN, a token
                            is the `password` of the host's `machine` entry
                            (`default` is not used)

Examples:
  framegate probe https://mirror.example/pub/
  framegate get https://mirror.example/pub/big.iso -c
  framegate cat https://mirror.example/pub/README | less
  framegate ls -l https://mirror.example/pub/
  framegate mirror https://mirror.example/pub/ ./pub --delete --exclude '*.tmp'
  framegate put --token-file ~/.fg-token report.pdf https://files.example/in/

Exit codes (one per layer of error):
  0  success
  1  the command failed on the server, or needs a framegate server and the
     server is a plain one (e.g. no such file, a read-only server, file
     changed, a command the server's policy refuses)
  2  usage: bad arguments or URL
  3  transport: cannot connect (DNS, refused, TLS, SSH) or the connection was lost
  4  refused: an HTTP status, credentials needed (401/407), a request over the
     server's limits, no framegate server where one is required, or a catch-all
     server (captive portal)
  5  the server broke the framegate protocol
  6  a local file could not be read or written
  7  a session used in the wrong state (a bug: please report it)
  8  mirror: some files failed (each named as it failed); the rest was mirrored
141  standard output was closed early (e.g. `| head`); nothing is printed";

/// Exit code of a mirror some of whose files failed (rsync's 23).
pub(crate) const EXIT_PARTLY: u8 = 8;

/// Exit code when standard output closed early (128 + SIGPIPE).
pub(crate) const EXIT_BROKEN_PIPE: u8 = 141;

#[derive(Parser, Debug)]
#[command(name = "framegate", version, about = "Read and write files through a framegate gateway, or any web server", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress, no summaries, no server text on stderr (errors only).
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
    /// Show progress even when stderr is not a terminal (then as one plain
    /// line a second) or with -q/--json.
    #[arg(long, global = true, overrides_with = "no_progress")]
    pub(crate) progress: bool,
    /// Never show progress.
    #[arg(long, global = true, overrides_with = "progress")]
    pub(crate) no_progress: bool,
    /// Log what the client does on stderr (-v: each request and retry;
    /// -vv: every step). FRAMEGATE_LOG takes a filter instead.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Bearer token for writes (visible to other users in `ps`: prefer
    /// --token-file or FRAMEGATE_TOKEN).
    #[arg(long, global = true, env = "FRAMEGATE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Read the bearer token from FILE (its first line).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "token")]
    pub(crate) token_file: Option<PathBuf>,
    /// Do not check the server's TLS certificate (a warning is printed:
    /// anyone on the path can read and change what is sent).
    #[arg(long, short = 'k', global = true)]
    pub(crate) insecure: bool,
    /// Extra CA certificate (PEM) to trust, besides the system roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Do not ask for zstd-compressed answers.
    #[arg(long, global = true)]
    pub(crate) no_compress: bool,
    /// Connect timeout.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// Longest silence while reading an answer.
    #[arg(long, global = true, default_value = "120s", value_parser = humantime::parse_duration)]
    pub(crate) read_timeout: Duration,
    /// How long a download retries dropped connections (with backoff).
    #[arg(long, global = true, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) retry_deadline: Duration,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Tell whether URL is served by framegate (smart) or plain HTTP, what
    /// it offers, and whether it takes writes (with the token given).
    #[command(
        after_help = "Example:\n  framegate probe https://mirror.example/pub/\n  framegate --json probe framegate+ssh://host/srv/data"
    )]
    Probe {
        /// A directory's URL.
        url: String,
    },
    /// List a directory.
    #[command(after_help = "Example:\n  framegate ls -l https://mirror.example/pub/")]
    Ls {
        /// The directory's URL.
        url: String,
        /// Long form: kind, size, mtime (UTC) and name.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Write a file to stdout.
    #[command(after_help = "Example:\n  framegate cat https://mirror.example/pub/README | less")]
    Cat {
        /// The file's URL.
        url: String,
    },
    /// Download a file: into `.NAME.framegate-partial` beside DEST, renamed
    /// over DEST when complete (a failure leaves DEST as it was); a dropped
    /// connection is retried until --retry-deadline, continuing while the
    /// server has the same version of the file.
    #[command(
        after_help = "Examples:\n  framegate get https://mirror.example/pub/big.iso\n  framegate get -c --verify https://mirror.example/pub/big.iso -o /data/big.iso\n  framegate get https://mirror.example/pub/list.txt -o - | wc -l"
    )]
    Get {
        /// The file's URL.
        url: String,
        /// Where to write it: a file, a directory (the file keeps its
        /// name), or `-` for stdout [default: the file's name here].
        dest: Option<PathBuf>,
        /// Where to write it (as DEST, curl's habit); `-o -` is stdout.
        #[arg(
            short = 'o',
            long = "output",
            value_name = "FILE",
            conflicts_with = "dest"
        )]
        output: Option<PathBuf>,
        /// Save under the file's own name in the current directory (the
        /// default without DEST or -o; curl's -O).
        #[arg(short = 'O', long = "remote-name", conflicts_with_all = ["dest", "output"])]
        remote_name: bool,
        /// Continue from the partial file an earlier run left, if the
        /// server still has the same version (else start over).
        #[arg(long, short = 'c')]
        r#continue: bool,
        /// Check the copy against the server's SHA-256 of the file
        /// (framegate servers only).
        #[arg(long)]
        verify: bool,
    },
    /// Upload a file (atomic replace).
    #[command(
        after_help = "Examples:\n  framegate put --token-file ~/.fg-token report.pdf https://files.example/in/\n  tar c dir | framegate put - https://files.example/in/dir.tar"
    )]
    Put {
        /// The local file, or `-` for standard input.
        src: PathBuf,
        /// The remote file's URL, or a directory's (ending in `/`: the
        /// file keeps its name).
        url: String,
    },
    /// Show a file's kind, size, mtime and mode.
    #[command(after_help = "Example:\n  framegate --json stat https://mirror.example/pub/big.iso")]
    Stat {
        /// The file's (or directory's) URL.
        url: String,
    },
    /// Create a directory.
    #[command(after_help = "Example:\n  framegate mkdir -p https://files.example/in/2026/11/")]
    Mkdir {
        /// The new directory's URL.
        url: String,
        /// Create missing parents too; an existing directory is fine.
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Rename on one server: TO is a URL there, or a path relative to
    /// URL's directory.
    #[command(
        after_help = "Examples:\n  framegate mv https://files.example/in/a.txt b.txt\n  framegate mv https://files.example/in/a.txt ../done/a.txt"
    )]
    Mv {
        /// The file or directory to move.
        url: String,
        /// Where to: a URL on the same server, or a path relative to URL's
        /// directory (`../other/name` included).
        to: String,
    },
    /// Delete a file (with --dir an empty directory, with -r a directory
    /// and everything below it).
    #[command(
        after_help = "Examples:\n  framegate rm https://files.example/in/a.txt\n  framegate rm -r https://files.example/in/old/"
    )]
    Rm {
        /// What to delete.
        url: String,
        /// Remove an empty directory instead.
        #[arg(long)]
        dir: bool,
        /// Remove a directory and everything below it.
        #[arg(short = 'r', long, conflicts_with = "dir")]
        recursive: bool,
    },
    /// Call a command the server offers (its own, beyond the file
    /// commands): `call URL NAME key=value ...`; the answer goes to stdout.
    #[command(
        after_help = "Examples:\n  framegate call https://files.example/ digest path=big.iso\n  framegate call --write https://app.example/ reindex scope=all"
    )]
    Call {
        /// The directory URL the command runs against.
        url: String,
        /// The command's name.
        name: String,
        /// Arguments, as key=value.
        args: Vec<String>,
        /// Send it to the read-write endpoint (a command that writes).
        #[arg(long)]
        write: bool,
    },
    /// Download a whole tree into DIR, in batches: files with their modes
    /// and mtimes, empty directories, and links that stay inside the tree
    /// (others are skipped with a warning and counted); files with the same
    /// size and mtime are skipped; a file that fails is named and skipped
    /// (exit 8).
    #[command(
        after_help = "Examples:\n  framegate mirror https://mirror.example/pub/ ./pub\n  framegate mirror -n --delete https://mirror.example/pub/ ./pub   # what would change\n  framegate mirror --checksum --exclude '*.tmp' --exclude /build https://mirror.example/pub/ ./pub"
    )]
    Mirror {
        /// The tree's URL (a directory).
        url: String,
        /// The local directory.
        dir: PathBuf,
        /// Only say what would be downloaded and deleted (one line each).
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Delete local files and directories the server does not have
        /// (excluded ones are kept).
        #[arg(long)]
        delete: bool,
        /// Leave out PATTERN (repeatable): without `/` a name at any depth
        /// (`*.tmp`), with `/` a path from the top (`/build`, `docs/*/old`);
        /// a trailing `/` matches directories only (`cache/`); `*` stays
        /// within a name, `**` crosses `/`.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Compare files of the same size by content (the server's
        /// SHA-256), not by mtime (framegate servers only).
        #[arg(short = 'c', long)]
        checksum: bool,
    },
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  framegate completions bash > ~/.local/share/bash-completion/completions/framegate"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Cmd {
    /// The (first) URL the command works on.
    pub(crate) fn url(&self) -> Option<&str> {
        match self {
            Cmd::Probe { url }
            | Cmd::Ls { url, .. }
            | Cmd::Cat { url }
            | Cmd::Get { url, .. }
            | Cmd::Put { url, .. }
            | Cmd::Stat { url }
            | Cmd::Mkdir { url, .. }
            | Cmd::Mv { url, .. }
            | Cmd::Rm { url, .. }
            | Cmd::Call { url, .. }
            | Cmd::Mirror { url, .. } => Some(url),
            Cmd::Completions { .. } => None,
        }
    }
}
