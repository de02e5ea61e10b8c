//! How a session reaches its server: TCP, an SSH child, or streams.

use std::fmt;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

pub(super) type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub(super) type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

/// How to reach a server.
pub enum Connector {
    /// `framegate://host:port`.
    Tcp(String),
    /// An SSH child: `program args... [-p port] [user@]host remote-command...`.
    Ssh(SshTarget),
    /// Already-open streams (a child process's pipes, tests).
    Streams(BoxRead, BoxWrite),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connector::Tcp(a) => write!(f, "Tcp({a})"),
            Connector::Ssh(t) => write!(f, "Ssh({t:?})"),
            Connector::Streams(..) => f.write_str("Streams"),
        }
    }
}

impl Connector {
    /// Streams from any reader and writer.
    pub fn streams(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
    ) -> Self {
        Connector::Streams(Box::pin(reader), Box::pin(writer))
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Connector::Tcp(a) => format!("framegate://{a}"),
            Connector::Ssh(t) => format!("framegate+ssh://{}", t.host),
            Connector::Streams(..) => "streams".into(),
        }
    }
}

/// An SSH destination and how to run ssh there.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `[user@]host`.
    pub host: String,
    /// Port, if not the default.
    pub port: Option<u16>,
    /// The ssh program and its options (`FRAMEGATE_SSH`, default `ssh`).
    pub ssh: Vec<String>,
    /// The remote command (`FRAMEGATE_REMOTE_COMMAND`, default
    /// `framegate-server serve --stdio /`).
    pub remote_command: Vec<String>,
}

impl SshTarget {
    /// A target with the ssh program and remote command from the environment.
    pub fn new(host: &str, port: Option<u16>) -> Self {
        let split = |var: &str, default: &str| -> Vec<String> {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        SshTarget {
            host: host.to_string(),
            port,
            ssh: split("FRAMEGATE_SSH", "ssh"),
            remote_command: split(
                "FRAMEGATE_REMOTE_COMMAND",
                "framegate-server serve --stdio /",
            ),
        }
    }
}
