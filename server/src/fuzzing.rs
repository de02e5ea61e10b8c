//! Entry points for the server's fuzz targets in `fuzz/` and their
//! stable-toolchain smoke test (`tests/fuzz_smoke.rs`). Each takes
//! untrusted input, must never panic, and checks invariants; a failed check
//! panics, which is how a fuzz target reports.
//!
//! * [`clean_path`]: the lexical path rules of the served tree.
//! * [`drive_message`]: arbitrary bytes as the body of a message, through
//!   the whole HTTP binding (router, header checks, driver, commands,
//!   storage) and through the byte-stream binding — in process.
//! * [`drive_ops`]: the same with a well-formed (or nearly) message of real
//!   commands, so that commands run, and every answer is read by a client
//!   reactor.
//!
//! The message targets share one gateway per process, over a temporary
//! tree seeded with a few files, a directory and two symbolic links leading
//! out of it; the tree keeps what earlier runs wrote (it is reseeded now and
//! then). After every run the surroundings of the tree are checked: a write
//! that escaped it fails the run.

// Failing an invariant is how a fuzz target reports; that is the point here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashSet;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use framegate_wire::codec::decode_all;
use framegate_wire::frame::{DEFAULT_MAX_FRAME_SIZE, Frame, Side};
use framegate_wire::fuzzing::{COMMANDS, MessageScript, Outcome};
use framegate_wire::http_binding::{ACCEPT_ENCODING_HEADER, Endpoint};
use framegate_wire::preamble::OK_LINE;
use framegate_wire::{Encoding, ErrorCode, FrameDecoder, HelloPayload, MEDIA_TYPE, RequestId};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::stream::{WritePolicy, serve_connection};
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX};

/// Longest a message may take, in process, before the run fails as a hang.
const HANG: Duration = Duration::from_secs(30);

/// Cleans arbitrary bytes as a command path. What is accepted is relative,
/// made of normal, non-empty components only — no `..`, root or prefix, no
/// reserved name — and is exactly the lexical resolution of the input;
/// cleaning it again gives it back. What a plain lexical reading finds
/// harmless is accepted.
pub fn clean_path(raw: &[u8]) {
    let cleaned = crate::tree::clean_path(raw);
    let expected = resolve(raw);
    let path = match (cleaned, expected) {
        (Ok(path), Some(parts)) => {
            let got: Vec<&str> = path
                .components()
                .filter(|c| *c != Component::CurDir)
                .map(|c| c.as_os_str().to_str().unwrap_or("\u{fffd}"))
                .collect();
            assert_eq!(got, parts, "{raw:?} cleaned to {path:?}");
            path
        }
        (Err(err), None) => {
            assert!(
                err.code == ErrorCode::INVALID_PATH || err.code == ErrorCode::PATH_OUTSIDE_BASE,
                "{raw:?} refused with {:?}",
                err.code
            );
            return;
        }
        (Ok(path), None) => panic!("{raw:?} accepted as {path:?}"),
        (Err(err), Some(parts)) => panic!("{raw:?} ({parts:?}) refused: {}", err.message),
    };
    assert!(path.is_relative());
    if path == Path::new(".") {
        return;
    }
    for component in path.components() {
        let Component::Normal(name) = component else {
            panic!("{path:?} has the component {component:?}");
        };
        let name = name.to_str().expect("a cleaned path is UTF-8");
        assert!(!name.is_empty() && name != "." && name != "..");
        assert!(!name.contains(['/', '\0']));
        assert_ne!(name, RESERVED_COMPONENT);
        assert!(!name.starts_with(TEMP_PREFIX));
    }
    let text = path.to_str().expect("a cleaned path is UTF-8");
    assert_eq!(
        crate::tree::clean_path(text.as_bytes()).ok(),
        Some(path.clone())
    );
}

/// The lexical reading of a command path that [`clean_path`] checks
/// against: `/`-separated UTF-8 without NUL, not absolute, `.` and empty
/// parts dropped, `..` going up but never above the base, no reserved name
/// anywhere (not even one a later `..` leaves).
fn resolve(raw: &[u8]) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.contains('\0') || text.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p if p == RESERVED_COMPONENT || p.starts_with(TEMP_PREFIX) => return None,
            p => parts.push(p),
        }
    }
    Some(parts)
}

/// Arbitrary bytes as a whole message: posted to the `rw` endpoint (the
/// answer encoding chosen by the input's length), and sent on a byte stream
/// after a good preamble. Either way the message is answered: 200 with the
/// media type for the POST (its body is in memory, so no timeout applies),
/// `framegate/1 ok` on the stream; the answer is whole frames that a server
/// sends, for no request id but 0 and those the message used; and nothing
/// left the served tree.
pub fn drive_message(data: &[u8]) {
    let encoding = if data.len() % 2 == 1 {
        Encoding::Zstd8Mb
    } else {
        Encoding::Identity
    };
    let body = Bytes::copy_from_slice(data);
    let used = request_ids(data);
    harness::run(|gateway| async move {
        let (status, answer) =
            post(&gateway, Endpoint::ReadWrite, "", encoding, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer)
        );
        check_frames(&answer, &used);
        let mut input = b"framegate/1\n".to_vec();
        input.extend_from_slice(&body);
        let answer = stream(&gateway, input).await;
        check_frames(&answer, &used);
    });
}

/// A [`MessageScript`] as a message, posted and sent on a byte stream,
/// its answers read by the client reactor that encoded it (see
/// `EncodedMessage::check_answer`: a well-formed message within the
/// gateway's limits has every request answered). `knobs`: bit 0 asks for
/// zstd answers, bits 1–3 equal to `001` post to `ro` (else `rw`), bit 4
/// posts below the base `/sub`. On `ro` no write command succeeds.
/// Returns what each request got over HTTP (nothing if the base was gone).
pub fn drive_ops(script: &MessageScript) -> Vec<Outcome> {
    let encoding = if script.knobs & 1 == 1 {
        Encoding::Zstd8Mb
    } else {
        Encoding::Identity
    };
    let endpoint = Endpoint::for_writes(script.knobs & 0x0e != 0x02);
    let base = if script.knobs & 0x10 != 0 { "/sub" } else { "" };
    let script = script.clone();
    let mut got = Vec::new();
    let got_ref = &mut got;
    harness::run(|gateway| async move {
        let limits = gateway.config.limits.clone();
        let message = script.encode();
        let names = message.commands().to_vec();
        let (status, answer) = post(&gateway, endpoint, base, encoding, message.body.clone()).await;
        // An earlier run may have removed or replaced the base directory.
        let gone = status == StatusCode::NOT_FOUND && !base.is_empty();
        assert!(
            status == StatusCode::OK || gone,
            "{status}: {}",
            String::from_utf8_lossy(&answer)
        );
        let outcomes = if gone {
            Vec::new()
        } else {
            message.check_answer(&answer, &limits)
        };
        if !endpoint.allows_writes() {
            for (name, outcome) in names.iter().zip(&outcomes) {
                let writes = ["put", "append", "mkdir", "rename", "delete", "rmdir"];
                assert!(
                    !(writes.contains(name) && matches!(outcome, Outcome::Answered(_))),
                    "{name} succeeded on the ro endpoint"
                );
            }
        }
        for (name, outcome) in names.iter().zip(&outcomes) {
            if let Outcome::Answered(bytes) = outcome {
                assert!(
                    COMMANDS.contains(name) && *name != "no_such_command",
                    "{name} ran"
                );
                match *name {
                    // A CBOR boolean.
                    "has" => assert!(bytes[..] == [0xf4] || bytes[..] == [0xf5], "{bytes:?}"),
                    "hello" => assert!(HelloPayload::decode(bytes).is_ok(), "{bytes:?}"),
                    _ => {}
                }
            }
        }

        let message = script.encode();
        let mut input = framegate_wire::preamble::client_line(&[encoding]).into_bytes();
        input.extend_from_slice(&message.body);
        let answer = stream(&gateway, input).await;
        message.check_answer(&answer, &limits);
        *got_ref = outcomes;
    });
    got
}

/// Request ids of the frames a message's bytes decode to (up to the first
/// error): the only ones, besides 0, a server may answer.
fn request_ids(data: &[u8]) -> HashSet<RequestId> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::from(data);
    let mut ids = HashSet::from([RequestId::CONNECTION]);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        ids.insert(frame.request_id);
    }
    ids
}

/// The answer is whole frames of server types on server streams, for the
/// connection or requests of the message.
fn check_frames(answer: &[u8], used: &HashSet<RequestId>) {
    let frames: Vec<Frame> = match decode_all(answer, DEFAULT_MAX_FRAME_SIZE) {
        Ok(frames) => frames,
        Err(err) => panic!("the answer is not whole frames: {err}"),
    };
    for frame in frames {
        assert!(
            frame.body.frame_type().is_sent_by(Side::Server),
            "{frame:?}"
        );
        assert!(frame.stream_id.is_sent_by(Side::Server), "{frame:?}");
        assert!(
            used.contains(&frame.request_id),
            "{frame:?} answers no request"
        );
    }
}

/// Posts `body` to `{base}/.framegate/{endpoint}` through the router, in
/// process; returns the status and the whole response body.
async fn post(
    gateway: &Arc<crate::Gateway>,
    endpoint: Endpoint,
    base: &str,
    encoding: Encoding,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let request = Request::post(format!("{base}/{}", endpoint.path()))
        .header(header::CONTENT_TYPE, MEDIA_TYPE)
        .header(header::ACCEPT, MEDIA_TYPE)
        .header(ACCEPT_ENCODING_HEADER, encoding.name())
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .expect("a valid request");
    let exchange = async {
        let response = crate::http::router(gateway)
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        if status == StatusCode::OK {
            let content_type = response.headers().get(header::CONTENT_TYPE);
            assert_eq!(content_type.and_then(|v| v.to_str().ok()), Some(MEDIA_TYPE));
        }
        let body = response.into_body().collect().await;
        (status, body.expect("the response body is whole").to_bytes())
    };
    match tokio::time::timeout(HANG, exchange).await {
        Ok(answer) => answer,
        Err(_) => panic!("the POST took over {HANG:?}"),
    }
}

/// Runs a byte-stream session over an in-memory pipe: writes `input`,
/// closes the sending side, reads everything. The session must end, well,
/// after `framegate/1 ok`; returns what followed it.
async fn stream(gateway: &Arc<crate::Gateway>, input: Vec<u8>) -> Bytes {
    let (client, server) = tokio::io::duplex(64 << 10);
    let (server_read, server_write) = tokio::io::split(server);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let session = serve_connection(
        gateway.clone(),
        server_read,
        server_write,
        WritePolicy::TrustLogin,
        CancellationToken::new(),
    );
    let send = async move {
        // The session may stop reading (a protocol error): then this fails.
        let _ = client_write.write_all(&input).await;
        let _ = client_write.shutdown().await;
    };
    let receive = async move {
        let mut out = Vec::new();
        client_read.read_to_end(&mut out).await.map(|_| out)
    };
    let exchange = async { tokio::join!(session, send, receive) };
    let (ended, (), received) = match tokio::time::timeout(HANG, exchange).await {
        Ok(done) => done,
        Err(_) => panic!("the byte-stream session took over {HANG:?}"),
    };
    assert!(ended.is_ok(), "the session failed: {ended:?}");
    let received = received.expect("the pipe reads to its end");
    let Some(rest) = received.strip_prefix(OK_LINE.as_bytes()) else {
        panic!("no ok line: {:?}", String::from_utf8_lossy(&received));
    };
    Bytes::copy_from_slice(rest)
}
