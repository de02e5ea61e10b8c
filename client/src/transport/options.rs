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
    /// Do not check the server's TLS certificate (default false; the CLI's
    /// `--insecure` warns).
    pub insecure: bool,
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
            insecure: false,
        }
    }
}

pub use crate::http::MAX_REDIRECTS;

impl Options {
    /// The HTTP client these options describe: built once per process and
    /// set of options, then shared (a client loads the system's root
    /// certificates when built, ~3 ms, and keeps a pool of connections
    /// that transports to the same server then share).
    pub fn http_client(&self) -> Result<reqwest::Client> {
        type Key = (Duration, Duration, bool, bool, Option<Vec<u8>>);
        static CLIENTS: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<Key, reqwest::Client>>,
        > = std::sync::OnceLock::new();
        let pem = match &self.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| Error::Local {
                path: path.clone(),
                source: e,
            })?),
            None => None,
        };
        let key = (
            self.connect_timeout,
            self.read_timeout,
            self.http1_only,
            self.insecure,
            pem.clone(),
        );
        let clients = CLIENTS.get_or_init(Default::default);
        if let Some(client) = clients.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(client);
        }
        let mut builder = reqwest::Client::builder()
            // Redirects are followed within the request's origin only:
            // credentials never reach another host (plain GETs follow a
            // redirect to another origin themselves, without them).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION")));
        if self.http1_only {
            builder = builder.http1_only();
        }
        if self.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let (Some(path), Some(pem)) = (&self.ca_cert, &pem) {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
                Error::Usage(format!("cannot use CA certificate {}: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        if let Ok(mut c) = clients.lock() {
            c.insert(key, client.clone());
        }
        Ok(client)
    }
}
