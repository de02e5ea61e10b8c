//! Running one framegate message: many requests out, their answers in.

use bytes::{Bytes, BytesMut};
use framegate_wire::{Arguments, ClientEvent, ClientReactor, HelloPayload, TextAtom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Misbehavior, Refusal, Result, TransportError};
use crate::gathered::Gathered;
pub(crate) use crate::hooks::Validator;
pub use crate::hooks::{Hooks, ProgressHook, TextHook};
use crate::http::HttpMedium;

/// Bytes of request frames gathered before they go to the body.
const WRITE_CHUNK: usize = 64 * 1024;

/// Longest answer to a probe's `hello` read (a `hello` is well under 1 KiB).
pub const MAX_PROBE_ANSWER: usize = 1 << 20;

/// Size of reads from a request data source.
const SOURCE_READ: usize = 256 * 1024;

/// Where a request's data comes from.
pub(crate) enum Source<'a> {
    None,
    Bytes(Bytes),
    Reader(&'a mut (dyn AsyncRead + Unpin + Send)),
}

/// Where a request's answer goes.
pub(crate) enum Sink<'a> {
    Memory,
    Writer {
        out: &'a mut (dyn AsyncWrite + Unpin + Send),
        written: u64,
        /// The version of the file the answer comes from, if the server
        /// announced it (a `progress` frame before a large file answer).
        validator: Option<Validator>,
        /// Called when it is announced, before any byte of the answer.
        on_validator: Option<&'a (dyn Fn(&Validator) + Sync)>,
    },
}

pub(crate) struct Request<'a> {
    pub(crate) name: String,
    pub(crate) args: Arguments,
    pub(crate) source: Source<'a>,
    pub(crate) sink: Sink<'a>,
}

impl Request<'_> {
    pub(crate) fn new(name: &str, args: Arguments, data: Option<Bytes>) -> Request<'static> {
        Request {
            name: name.to_string(),
            args,
            source: data.map_or(Source::None, Source::Bytes),
            sink: Sink::Memory,
        }
    }
}

/// Outcome of one message: per request, the answer (in memory, or the count
/// written to its writer) or its error.
pub(crate) type Answers = Vec<Result<Bytes>>;

/// Sends `requests` as one message and collects every answer.
pub(crate) async fn run_message(
    medium: &HttpMedium,
    writable: bool,
    requests: &mut [Request<'_>],
    hooks: &Hooks,
) -> Result<Answers> {
    let mut reactor = ClientReactor::default();
    reactor.limit_payload(medium.peer_max_frame());
    if requests
        .iter()
        .all(|r| !matches!(r.source, Source::Reader(_)))
    {
        // Everything is in memory: one body with a Content-Length.
        let mut body = BytesMut::new();
        let mut ids = Vec::with_capacity(requests.len());
        for req in requests.iter() {
            let data = match &req.source {
                Source::Bytes(b) => Some(b.clone()),
                _ => None,
            };
            let id = reactor
                .request(&req.name, &req.args, data)
                .map_err(|e| Error::Usage(format!("cannot send {}: {e}", req.name)))?;
            ids.push(id);
            reactor.write_transmit(&mut body);
        }
        let reader = medium.send_message(writable, body.freeze()).await?;
        return read_answers(reactor, reader, ids, requests, hooks, None)
            .await
            .map(|(answers, _)| answers);
    }
    let mut writer = medium.start_message(writable);
    let mut buf = BytesMut::new();
    let mut ids = Vec::with_capacity(requests.len());
    let mut write_failed = false;
    for req in requests.iter_mut() {
        let has_data = !matches!(req.source, Source::None);
        let id = reactor
            .start_request(&req.name, &req.args, has_data)
            .map_err(|e| Error::Usage(format!("cannot send {}: {e}", req.name)))?;
        ids.push(id);
        match &mut req.source {
            Source::None => {}
            Source::Bytes(bytes) => {
                reactor
                    .send_data(id, bytes.clone(), true)
                    .map_err(|e| Error::Usage(e.to_string()))?;
            }
            Source::Reader(reader) => {
                let mut chunk = BytesMut::with_capacity(SOURCE_READ);
                loop {
                    chunk.reserve(SOURCE_READ);
                    let n = reader.read_buf(&mut chunk).await?;
                    let last = n == 0;
                    reactor
                        .send_data(id, chunk.split().freeze(), last)
                        .map_err(|e| Error::Usage(e.to_string()))?;
                    reactor.write_transmit(&mut buf);
                    if buf.len() >= WRITE_CHUNK && !write_failed {
                        write_failed = writer.write(buf.split().freeze()).await.is_err();
                    }
                    if last || write_failed {
                        break;
                    }
                }
            }
        }
        reactor.write_transmit(&mut buf);
        if buf.len() >= WRITE_CHUNK && !write_failed {
            write_failed = writer.write(buf.split().freeze()).await.is_err();
        }
    }
    if !buf.is_empty() && !write_failed {
        let _ = writer.write(buf.split().freeze()).await;
    }
    let reader = writer.finish().await?;
    read_answers(reactor, reader, ids, requests, hooks, None)
        .await
        .map(|(answers, _)| answers)
}

/// Reads a message's answers into the requests' sinks.
async fn read_answers(
    mut reactor: ClientReactor,
    mut reader: crate::http::MessageReader,
    ids: Vec<framegate_wire::RequestId>,
    requests: &mut [Request<'_>],
    hooks: &Hooks,
    hello: Option<framegate_wire::RequestId>,
) -> Result<(Answers, Option<Result<Bytes>>)> {
    let url = reader.url().to_string();
    let mut hello_data = BytesMut::new();
    let mut hello_answer = None;
    let index: std::collections::HashMap<_, _> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut memory: Vec<Gathered> = requests.iter().map(|_| Gathered::default()).collect();
    let mut answers: Vec<Option<Result<Bytes>>> = requests.iter().map(|_| None).collect();
    let mut connection_error: Option<Error> = None;
    let mut ended = false;
    while !ended {
        match reader.next_frame().await? {
            Some(frame) => reactor.handle_frame(frame).map_err(|source| {
                Error::Misbehaved(Misbehavior::Protocol {
                    url: url.clone(),
                    source,
                })
            })?,
            None => {
                reactor.handle_input_ended();
                ended = true;
            }
        }
        while let Some(event) = reactor.poll_event() {
            if let Some(id) = hello
                && let Some(answer) = hello_event(&event, id, &mut hello_data)
            {
                hello_answer = answer;
                continue;
            }
            match event {
                ClientEvent::Data { request_id, data } => {
                    let Some(&i) = index.get(&request_id) else {
                        continue;
                    };
                    match requests.get_mut(i).map(|r| &mut r.sink) {
                        Some(Sink::Writer { out, written, .. }) => {
                            out.write_all(&data).await?;
                            *written += data.len() as u64;
                        }
                        _ => {
                            if let Some(m) = memory.get_mut(i) {
                                m.push(data);
                            }
                        }
                    }
                }
                ClientEvent::End { request_id } => {
                    let Some(&i) = index.get(&request_id) else {
                        continue;
                    };
                    if let Some(Sink::Writer { out, .. }) = requests.get_mut(i).map(|r| &mut r.sink)
                    {
                        out.flush().await?;
                    }
                    let bytes = memory.get_mut(i).map(Gathered::take).unwrap_or_default();
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(Ok(bytes));
                    }
                }
                ClientEvent::Failed {
                    request_id,
                    kind,
                    error,
                } => {
                    let Some(&i) = index.get(&request_id) else {
                        continue;
                    };
                    let err = Error::from_failure(kind, error);
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(Err(err));
                    }
                }
                ClientEvent::ConnectionError { error, .. } => {
                    connection_error = Some(Error::Refused(Refusal::Protocol {
                        code: error.code,
                        message: error.message,
                    }));
                }
                ClientEvent::TextOutput { atoms, .. } => {
                    if let Some(hook) = &hooks.on_text {
                        hook(&atoms.iter().map(TextAtom::render).collect::<String>());
                    }
                }
                ClientEvent::Progress {
                    request_id,
                    progress,
                } => {
                    if let Some(Sink::Writer {
                        validator,
                        on_validator,
                        ..
                    }) = index
                        .get(&request_id)
                        .and_then(|&i| requests.get_mut(i))
                        .map(|r| &mut r.sink)
                        && let Some(v) = Validator::from_progress(&progress)
                    {
                        if let Some(hook) = on_validator {
                            hook(&v);
                        }
                        *validator = Some(v);
                    }
                    if let Some(hook) = &hooks.on_progress {
                        hook(&progress);
                    }
                }
                ClientEvent::Unanswered { .. } => {}
                _ => {}
            }
        }
    }
    let answers = answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(match &connection_error {
                    Some(Error::Refused(Refusal::Protocol { code, message })) => {
                        Error::Refused(Refusal::Protocol {
                            code: code.clone(),
                            message: message.clone(),
                        })
                    }
                    _ => Error::Transport(TransportError::Unanswered { url: url.clone() }),
                })
            })
        })
        .collect();
    Ok((answers, hello_answer))
}

/// An event of the `hello` folded into a first message: `None` if it is
/// not one; `Some(answer)` (the answer once complete) if it is.
fn hello_event(
    event: &ClientEvent,
    id: framegate_wire::RequestId,
    data: &mut BytesMut,
) -> Option<Option<Result<Bytes>>> {
    match event {
        ClientEvent::Data {
            request_id,
            data: d,
        } if *request_id == id => {
            data.extend_from_slice(d);
            Some(None)
        }
        ClientEvent::End { request_id } if *request_id == id => {
            Some(Some(Ok(data.split().freeze())))
        }
        ClientEvent::Failed {
            request_id, error, ..
        } if *request_id == id => Some(Some(Err(Error::Refused(Refusal::Protocol {
            code: error.code.clone(),
            message: error.message.clone(),
        })))),
        _ => None,
    }
}

/// A first message to a base not probed yet: `hello` and the read
/// `requests` in one POST to `ro` (§7.4's probe folded into it). `None` if
/// no framegate server answered (the caller falls back to plain HTTP; a
/// catch-all server is an error); else the server's `hello` and the
/// requests' answers.
pub(crate) async fn run_cold(
    medium: &HttpMedium,
    requests: &mut [Request<'_>],
    hooks: &Hooks,
) -> Result<Option<(HelloPayload, Answers)>> {
    let mut reactor = ClientReactor::default();
    let mut body = BytesMut::new();
    let hello = reactor
        .request("hello", &Arguments::new(), None)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut ids = Vec::with_capacity(requests.len());
    for req in requests.iter() {
        let data = match &req.source {
            Source::Bytes(b) => Some(b.clone()),
            Source::Reader(_) => {
                return Err(Error::Usage("a first message carries reads only".into()));
            }
            Source::None => None,
        };
        ids.push(
            reactor
                .request(&req.name, &req.args, data)
                .map_err(|e| Error::Usage(format!("cannot send {}: {e}", req.name)))?,
        );
    }
    reactor.write_transmit(&mut body);
    let reader = match medium.send_probing(body.freeze()).await? {
        Ok(reader) => reader,
        Err((status, reason)) => {
            if status == 200 && crate::plain::catch_all(medium).await {
                return Err(Error::Refused(Refusal::CatchAll {
                    url: medium.base().to_string(),
                }));
            }
            tracing::debug!(%reason, "no framegate server; using plain HTTP");
            return Ok(None);
        }
    };
    let url = reader.url().to_string();
    let (answers, hello_answer) =
        read_answers(reactor, reader, ids, requests, hooks, Some(hello)).await?;
    let bytes = match hello_answer {
        Some(answer) => answer?,
        None => return Err(Error::Transport(TransportError::Unanswered { url })),
    };
    let hello = HelloPayload::decode(&bytes).map_err(|e| {
        Error::Misbehaved(Misbehavior::Protocol {
            url,
            source: e.into(),
        })
    })?;
    Ok(Some((hello, answers)))
}

/// The probe of §7.4: `hello` to `B/.framegate/ro`.
pub(crate) enum Probe {
    Smart(HelloPayload),
    NotSmart(String),
}

pub(crate) async fn probe(medium: &HttpMedium) -> Result<Probe> {
    let url = medium.endpoint(false);
    let mut reactor = ClientReactor::default();
    let id = reactor
        .request("hello", &Arguments::new(), None)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut body = BytesMut::new();
    reactor.write_transmit(&mut body);
    let resp = medium
        .authorize(medium.client().post(&url))
        .header(reqwest::header::CONTENT_TYPE, framegate_wire::MEDIA_TYPE)
        .header(reqwest::header::ACCEPT, framegate_wire::MEDIA_TYPE)
        .body(body.freeze())
        .send()
        .await
        .map_err(|e| Error::from_reqwest(&url, e))?;
    let status = resp.status().as_u16();
    if status == 401 || status == 407 {
        return Err(medium.credentials_error(&resp, url));
    }
    match crate::http::judge_head(&resp) {
        crate::http::HeadVerdict::Framegate => {}
        crate::http::HeadVerdict::Refused(reason) => {
            return Err(crate::http::refusal_error(resp, &url, &reason).await);
        }
        crate::http::HeadVerdict::NotFramegate(reason) => {
            if resp.status() == reqwest::StatusCode::OK && crate::plain::catch_all(medium).await {
                return Err(Error::Refused(Refusal::CatchAll {
                    url: medium.base().to_string(),
                }));
            }
            return Ok(Probe::NotSmart(reason));
        }
        crate::http::HeadVerdict::Failed => {
            return Err(crate::http::status_error(resp, url).await);
        }
    }
    // From here the server claims to be framegate: anything wrong is a hard
    // error. A `hello` answer is small: a longer body is not one (and is
    // not read whole).
    let bytes = crate::http::read_at_most(resp, MAX_PROBE_ANSWER)
        .await
        .map_err(|e| Error::lost(url.clone(), e))?
        .map_err(|_| {
            Error::Misbehaved(Misbehavior::Malformed {
                what: "the hello answer".into(),
                reason: format!("longer than {MAX_PROBE_ANSWER} bytes"),
            })
        })?;
    let mis = |source| {
        Error::Misbehaved(Misbehavior::Protocol {
            url: url.clone(),
            source,
        })
    };
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = framegate_wire::FrameDecoder::default();
    let mut answer = BytesMut::new();
    let mut done = false;
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(frame)) => reactor.handle_frame(frame).map_err(mis)?,
            Ok(None) => break,
            Err(e) => return Err(mis(e.into())),
        }
        while let Some(ev) = reactor.poll_event() {
            match ev {
                ClientEvent::Data { data, .. } => answer.extend_from_slice(&data),
                ClientEvent::End { request_id } if request_id == id => done = true,
                ClientEvent::Failed { error, .. } | ClientEvent::ConnectionError { error, .. } => {
                    return Err(Error::Refused(Refusal::Protocol {
                        code: error.code,
                        message: error.message,
                    }));
                }
                _ => {}
            }
        }
    }
    if !done {
        return Err(Error::Misbehaved(Misbehavior::Protocol {
            url,
            source: framegate_wire::PeerMisbehaved::Protocol(framegate_wire::ProtocolError::new(
                framegate_wire::ErrorCode::INCOMPLETE_REQUEST,
                "the hello answer is missing",
            )),
        }));
    }
    HelloPayload::decode(&answer)
        .map(Probe::Smart)
        .map_err(|e| mis(e.into()))
}
