//! `serve s3://BUCKET/PREFIX`: the object store's settings, as flags and
//! as the TOML file's `[s3]` table. Credentials come from the `AWS_*`
//! environment only (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, or the instance's role): never from a flag, which
//! other users of the machine could read in the process list.

use std::time::Duration;

use framegate_server::ObjectConfig;
use serde::Deserialize;

use crate::opt_duration;

/// Settings of `serve s3://BUCKET/PREFIX`.
#[derive(clap::Args, Debug, Default, Deserialize, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct StoreArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:3900 for a local Garage
    /// [default: AWS_ENDPOINT_URL, else AWS's own].
    #[arg(long = "s3-endpoint", value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1].
    #[arg(long = "s3-region", value_name = "NAME")]
    pub(crate) region: Option<String>,
    /// Path-style requests (endpoint/bucket/key), as Garage and MinIO want.
    #[arg(long = "s3-path-style")]
    #[serde(default)]
    pub(crate) path_style: bool,
    /// Allow a plain-HTTP endpoint; refused unless it is a loopback address.
    #[arg(long = "s3-allow-http")]
    #[serde(default)]
    pub(crate) allow_http: bool,
    /// Requests in flight to the store at once [default: 64].
    #[arg(long = "s3-max-requests", value_name = "N")]
    pub(crate) max_requests: Option<usize>,
    /// One request to the store, until its answer starts [default: 30s].
    #[arg(long = "s3-request-timeout", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) request_timeout: Option<Duration>,
    /// Connecting to the store [default: 5s].
    #[arg(long = "s3-connect-timeout", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    pub(crate) connect_timeout: Option<Duration>,
    /// Retries of a failed or throttled request [default: 3].
    #[arg(long = "s3-max-retries", value_name = "N")]
    pub(crate) max_retries: Option<usize>,
}

impl StoreArgs {
    /// Command-line values over file values.
    pub(crate) fn merge(self, file: StoreArgs) -> StoreArgs {
        StoreArgs {
            endpoint: self.endpoint.or(file.endpoint),
            region: self.region.or(file.region),
            path_style: self.path_style || file.path_style,
            allow_http: self.allow_http || file.allow_http,
            max_requests: self.max_requests.or(file.max_requests),
            request_timeout: self.request_timeout.or(file.request_timeout),
            connect_timeout: self.connect_timeout.or(file.connect_timeout),
            max_retries: self.max_retries.or(file.max_retries),
        }
    }

    /// The store's configuration for `url`; `staging` and `wait` bound the
    /// upload spools as `--max-staging-files` and the header-read timeout
    /// bound the local tree's staging files.
    pub(crate) fn config(
        &self,
        url: &str,
        staging: usize,
        wait: Duration,
    ) -> Result<ObjectConfig, String> {
        let mut config = ObjectConfig::from_url(url)?;
        config.endpoint = self
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        config.region = self.region.clone();
        config.path_style = self.path_style;
        config.allow_http = self.allow_http;
        if let Some(n) = self.max_requests {
            if n == 0 {
                return Err("--s3-max-requests must be at least 1".into());
            }
            config.max_requests = n;
        }
        if let Some(d) = self.request_timeout {
            config.request_timeout = d;
        }
        if let Some(d) = self.connect_timeout {
            config.connect_timeout = d;
        }
        if let Some(n) = self.max_retries {
            config.max_retries = n;
        }
        config.max_staging_files = staging;
        config.staging_wait = wait;
        Ok(config)
    }
}

/// Whether `dir` names an object store rather than a directory.
pub(crate) fn is_store_url(dir: &std::path::Path) -> bool {
    dir.to_str().is_some_and(|d| d.starts_with("s3://"))
}
