//! Test harness: a real gateway on a loopback port, and a small framegate
//! client built from the core crate's request encoder and client reactor.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use framegate_server::{Gateway, GatewayConfig, Registry, ServeHandle, serve};
use framegate_wire::{
    Arguments, ClientEvent, ClientReactor, ErrorCode, ErrorKind, FrameDecoder, HelloPayload,
    MEDIA_TYPE, RequestId,
};

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub handle: Option<ServeHandle>,
    pub gateway: Arc<Gateway>,
}

impl TestServer {
    pub async fn start(configure: impl FnOnce(&mut GatewayConfig)) -> TestServer {
        Self::start_with(Registry::files(), configure).await
    }

    pub async fn start_with(
        registry: Registry,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = GatewayConfig::new(dir.path());
        configure(&mut config);
        let gateway = Gateway::new(config, registry).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = serve(gateway.clone(), listener, None).await.unwrap();
        let url = format!("http://{}", handle.local_addr);
        TestServer {
            dir,
            url,
            handle: Some(handle),
            gateway,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn ro(&self) -> String {
        format!("{}/.framegate/ro", self.url)
    }

    pub fn rw(&self) -> String {
        format!("{}/.framegate/rw", self.url)
    }

    /// Staged uploads: files in the private staging area, and files whose
    /// names start with the old upload prefix anywhere in the tree.
    pub fn stray_files(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                let path = e.path();
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(".framegate-upload-")
                {
                    out.push(path.clone());
                }
                if e.file_type().unwrap().is_dir() {
                    walk(&path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        let staging = self.dir.path().join(".framegate/staging");
        if let Ok(entries) = std::fs::read_dir(staging) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
        out
    }
}

/// What a request got.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Bytes),
    Err(ErrorKind, ErrorCode, String),
    Unanswered,
}

impl Outcome {
    pub fn ok(&self) -> &Bytes {
        match self {
            Outcome::Ok(b) => b,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Outcome::Err(_, code, _) => code.as_str(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub fn cbor<T: serde::de::DeserializeOwned>(&self) -> T {
        ciborium::from_reader(&self.ok()[..]).unwrap()
    }
}

/// A batch of requests in one message.
#[derive(Default)]
pub struct Batch {
    pub client: ClientReactor,
    pub ids: Vec<RequestId>,
}

pub fn args(pairs: &[(&str, &[u8])]) -> Arguments {
    let mut a = Arguments::new();
    for (k, v) in pairs {
        a.insert(k, Bytes::copy_from_slice(v)).unwrap();
    }
    a
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    pub fn add(&mut self, name: &str, pairs: &[(&str, &[u8])], data: Option<&[u8]>) -> usize {
        let id = self
            .client
            .request(name, &args(pairs), data.map(Bytes::copy_from_slice))
            .unwrap();
        self.ids.push(id);
        self.ids.len() - 1
    }

    pub fn body(&mut self) -> Bytes {
        let mut buf = BytesMut::new();
        self.client.write_transmit(&mut buf);
        buf.freeze()
    }

    /// Posts the batch; returns the outcomes in request order plus all events.
    pub async fn send(mut self, url: &str) -> (Vec<Outcome>, Vec<ClientEvent>) {
        let body = self.body();
        let resp = post(url, body, &[]).await;
        assert_eq!(resp.status(), 200, "status for {url}");
        assert_eq!(resp.headers()["content-type"], MEDIA_TYPE);
        let bytes = resp.bytes().await.unwrap();
        self.decode(&bytes)
    }

    pub fn decode(&mut self, bytes: &[u8]) -> (Vec<Outcome>, Vec<ClientEvent>) {
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::from(bytes);
        while let Some(frame) = dec.decode_eof(&mut buf).unwrap() {
            self.client.handle_frame(frame).unwrap();
        }
        self.client.handle_input_ended();
        let mut data: std::collections::HashMap<RequestId, BytesMut> = Default::default();
        let mut outcome: std::collections::HashMap<RequestId, Outcome> = Default::default();
        let mut events = Vec::new();
        while let Some(ev) = self.client.poll_event() {
            match &ev {
                ClientEvent::Data {
                    request_id,
                    data: d,
                } => data.entry(*request_id).or_default().extend_from_slice(d),
                ClientEvent::End { request_id } => {
                    outcome.insert(
                        *request_id,
                        Outcome::Ok(data.remove(request_id).unwrap_or_default().freeze()),
                    );
                }
                ClientEvent::Failed {
                    request_id,
                    kind,
                    error,
                } => {
                    outcome.insert(
                        *request_id,
                        Outcome::Err(*kind, error.code.clone(), error.message.clone()),
                    );
                }
                ClientEvent::Unanswered { request_id } => {
                    outcome.insert(*request_id, Outcome::Unanswered);
                }
                _ => {}
            }
            events.push(ev);
        }
        let outcomes = self
            .ids
            .iter()
            .map(|id| outcome.remove(id).unwrap_or(Outcome::Unanswered))
            .collect();
        (outcomes, events)
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn post(url: &str, body: Bytes, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = http()
        .post(url)
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Runs one command alone.
pub async fn one(url: &str, name: &str, pairs: &[(&str, &[u8])], data: Option<&[u8]>) -> Outcome {
    let mut b = Batch::new();
    b.add(name, pairs, data);
    b.send(url).await.0.remove(0)
}

pub fn hello_of(o: &Outcome) -> HelloPayload {
    HelloPayload::decode(o.ok()).unwrap()
}

/// Sends a request over a raw socket, path verbatim (no URL normalization);
/// returns the status and the whole response text.
pub async fn raw_request(
    base_url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
