//! The command line: options, subcommands and the exit-code table.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub(crate) const EXIT_CODES: &str = "\
Exit codes (one per layer of error):
  0  success
  1  the command failed on the server, or needs a framegate server and the
     server is a plain one (e.g. no such file, read-only, file changed)
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
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
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
    /// Tell whether URL is served by framegate (smart) or plain HTTP.
    Probe { url: String },
    /// List a directory.
    Ls {
        /// The directory's URL.
        url: String,
        /// Long form: kind, size, mtime (UTC) and name.
        #[arg(short = 'l', long)]
        long: bool,
    },
    /// Write a file to stdout.
    Cat { url: String },
    /// Download a file: into `.NAME.framegate-partial` beside DEST, renamed
    /// over DEST when complete (a failure leaves DEST as it was); a dropped
    /// connection is retried until --retry-deadline, continuing while the
    /// server has the same version of the file.
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
    Put {
        /// The local file, or `-` for standard input.
        src: PathBuf,
        /// The remote file's URL, or a directory's (ending in `/`: the
        /// file keeps its name).
        url: String,
    },
    /// Show a file's kind, size, mtime and mode.
    Stat { url: String },
    /// Create a directory.
    Mkdir {
        /// The new directory's URL.
        url: String,
        /// Create missing parents too; an existing directory is fine.
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Rename within one tree: TO is a path relative to URL's directory, or a URL under it.
    Mv {
        /// The file or directory to move.
        url: String,
        /// Where to: a URL on the same server, or a path relative to URL's
        /// directory (`../other/name` included).
        to: String,
    },
    /// Delete a file (with --dir an empty directory, with -r a directory
    /// and everything below it).
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
    /// Download a whole tree into DIR, in batches; skips files with the
    /// same size and mtime; a file that fails is named and skipped (exit 8).
    Mirror {
        /// The tree's URL (a directory).
        url: String,
        /// The local directory.
        dir: PathBuf,
        /// Only say what would be downloaded (one line per file).
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}
