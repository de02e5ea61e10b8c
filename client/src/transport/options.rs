//! Client settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::smart::Hooks;

/// Default of [`Options::retry_deadline`].
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(60);

/// Client settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// A PEM CA certificate trusted in addition to the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Bearer token for writes (default: `FRAMEGATE_TOKEN`).
    pub token: Option<String>,
    /// Connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Longest silence while reading a response (default 120 s; the server
    /// sends keepalives every 15 s while commands run).
    pub read_timeout: Duration,
    /// Ask for zstd-compressed answers (default true).
    pub compress: bool,
    /// Speak only HTTP/1.1 (default false: HTTP/2 when TLS ALPN offers it).
    pub http1_only: bool,
    /// Text-output and progress callbacks.
    pub hooks: Hooks,
    /// How long a download keeps retrying a dropped or refused connection
    /// (with exponential backoff and jitter) before it fails (default 60 s).
    pub retry_deadline: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ca_cert: None,
            token: std::env::var("FRAMEGATE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            compress: true,
            http1_only: false,
            hooks: Hooks::default(),
            retry_deadline: DEFAULT_RETRY_DEADLINE,
        }
    }
}

impl Options {
    /// Builds the HTTP client these options describe.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION")));
        if self.http1_only {
            builder = builder.http1_only();
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Error::Usage(format!("cannot use CA certificate {}: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))
    }
}
