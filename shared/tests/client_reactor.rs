//! Client reactor tests: server misbehaviour is detected, events are typed.

use bytes::Bytes;
use framegate_wire::client::PeerMisbehaved;
use framegate_wire::frame::*;
use framegate_wire::{Arguments, ClientEvent, ClientReactor, ErrorCode, ErrorPayload};

fn f(req: u16, sflags: StreamFlags, body: FrameBody) -> Frame {
    Frame {
        request_id: RequestId(req),
        stream_id: StreamId(2),
        stream_flags: sflags,
        body,
    }
}
fn resp(req: u16, sflags: StreamFlags, flags: BytesResponseFlags, p: &'static str) -> Frame {
    f(
        req,
        sflags,
        FrameBody::BytesResponse(BytesResponse {
            flags,
            payload: Bytes::from_static(p.as_bytes()),
        }),
    )
}
const B: StreamFlags = StreamFlags::BEGIN;
const N: StreamFlags = StreamFlags::empty();
const EOS: BytesResponseFlags = BytesResponseFlags::EOS;
const CONT: BytesResponseFlags = BytesResponseFlags::CONTINUATION;

fn client_with(n: usize) -> (ClientReactor, Vec<RequestId>) {
    let mut c = ClientReactor::default();
    let ids = (0..n)
        .map(|_| c.request("get", &Arguments::new(), None).unwrap())
        .collect();
    while c.poll_transmit().is_some() {}
    (c, ids)
}

fn events(c: &mut ClientReactor) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn request_ids_are_odd_and_skip_active_ones() {
    let (_, ids) = client_with(3);
    assert_eq!(ids, vec![RequestId(1), RequestId(3), RequestId(5)]);
}

#[test]
fn request_ids_wrap_and_reuse_finished_ones() {
    let (mut c, _) = client_with(0);
    let mut first = None;
    for i in 0..32_768u32 {
        let id = c.request("x", &Arguments::new(), None).unwrap();
        if i == 0 {
            first = Some(id);
        }
    }
    assert!(
        c.request("x", &Arguments::new(), None).is_err(),
        "all odd ids in use"
    );
    let first = first.unwrap();
    c.handle_frame(resp(first.0, B, EOS, "")).unwrap();
    assert_eq!(c.request("x", &Arguments::new(), None).unwrap(), first);
}

#[test]
fn answer_pieces_and_end_are_reported() {
    let (mut c, ids) = client_with(1);
    c.handle_frame(resp(1, B, CONT, "ab")).unwrap();
    c.handle_frame(resp(1, N, EOS, "c")).unwrap();
    assert_eq!(
        events(&mut c),
        vec![
            ClientEvent::Data {
                request_id: ids[0],
                data: "ab".into()
            },
            ClientEvent::Data {
                request_id: ids[0],
                data: "c".into()
            },
            ClientEvent::End { request_id: ids[0] },
        ]
    );
    assert_eq!(c.active_requests(), 0);
}

#[test]
fn frame_for_unknown_request_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    assert_eq!(
        c.handle_frame(resp(3, B, EOS, "x")),
        Err(PeerMisbehaved::UnknownRequest(RequestId(3)))
    );
    assert!(c.is_errored());
    assert_eq!(
        c.handle_frame(resp(1, N, EOS, "x")),
        Err(PeerMisbehaved::Errored)
    );
}

#[test]
fn data_after_eos_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    c.handle_frame(resp(1, B, EOS, "x")).unwrap();
    assert_eq!(
        c.handle_frame(resp(1, N, EOS, "y")),
        Err(PeerMisbehaved::AfterEnd(RequestId(1)))
    );
}

#[test]
fn client_frame_type_from_server_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    let body = FrameBody::CommandName(CommandName::new("x", CommandNameFlags::EOS));
    assert_eq!(
        c.handle_frame(f(1, B, body)),
        Err(PeerMisbehaved::ClientFrameType(FrameType::CommandName))
    );
}

#[test]
fn bytes_response_needs_exactly_one_flag() {
    let (mut c, _) = client_with(1);
    assert!(matches!(
        c.handle_frame(resp(1, B, EOS | CONT, "x")),
        Err(PeerMisbehaved::BadFlags { .. })
    ));
}

#[test]
fn server_on_odd_stream_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    let mut frame = resp(1, B, EOS, "x");
    frame.stream_id = StreamId(1);
    let err = c.handle_frame(frame).unwrap_err();
    assert!(matches!(err, PeerMisbehaved::Protocol(p) if p.code == ErrorCode::BAD_STREAM));
}

#[test]
fn malformed_error_payload_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    let body = FrameBody::ErrorResponse(ErrorResponse {
        flags: ErrorResponseFlags::APPLICATION,
        payload: Bytes::from_static(b"\xff"),
    });
    assert!(matches!(
        c.handle_frame(f(1, B, body)),
        Err(PeerMisbehaved::Payload(_))
    ));
}

#[test]
fn errors_are_typed_and_unknown_codes_kept() {
    let (mut c, ids) = client_with(2);
    let app = ErrorResponse::new(
        ErrorKind::Application,
        &ErrorPayload::new(ErrorCode::NO_SUCH_FILE, "no such file: a"),
    );
    let future = ErrorResponse::new(
        ErrorKind::Application,
        &ErrorPayload::new(ErrorCode::new("quota-exceeded"), "full"),
    );
    c.handle_frame(resp(1, B, CONT, "partial")).unwrap();
    c.handle_frame(f(1, N, FrameBody::ErrorResponse(app)))
        .unwrap();
    c.handle_frame(f(3, N, FrameBody::ErrorResponse(future)))
        .unwrap();
    let evs = events(&mut c);
    assert!(
        matches!(&evs[1], ClientEvent::Failed { request_id, kind: ErrorKind::Application, error } if *request_id == ids[0] && error.code == ErrorCode::NO_SUCH_FILE)
    );
    assert!(
        matches!(&evs[2], ClientEvent::Failed { error, .. } if error.code.as_str() == "quota-exceeded")
    );
}

#[test]
fn connection_error_then_end_reports_unanswered() {
    let (mut c, ids) = client_with(2);
    c.handle_frame(resp(1, B, EOS, "ok")).unwrap();
    let err = ErrorResponse::new(
        ErrorKind::Protocol,
        &ErrorPayload::new(ErrorCode::BAD_STREAM, "x"),
    );
    c.handle_frame(f(0, N, FrameBody::ErrorResponse(err)))
        .unwrap();
    c.handle_input_ended();
    let evs = events(&mut c);
    assert!(
        matches!(&evs[2], ClientEvent::ConnectionError { kind: ErrorKind::Protocol, error } if error.code == ErrorCode::BAD_STREAM)
    );
    assert_eq!(evs[3], ClientEvent::Unanswered { request_id: ids[1] });
    assert_eq!(c.active_requests(), 0);
}

#[test]
fn non_error_frame_with_request_id_zero_is_misbehaviour() {
    let (mut c, _) = client_with(1);
    assert_eq!(
        c.handle_frame(resp(0, B, EOS, "x")),
        Err(PeerMisbehaved::UnknownRequest(RequestId(0)))
    );
}

#[test]
fn data_can_still_be_sent_after_an_early_answer() {
    let mut c = ClientReactor::default();
    let id = c.start_request("put", &Arguments::new(), true).unwrap();
    c.send_data(id, &b"abc"[..], false).unwrap();
    while c.poll_transmit().is_some() {}
    let err = ErrorResponse::new(
        ErrorKind::Application,
        &ErrorPayload::new(ErrorCode::READ_ONLY, "ro"),
    );
    c.handle_frame(f(id.0, B, FrameBody::ErrorResponse(err)))
        .unwrap();
    assert_eq!(c.active_requests(), 1, "still sending");
    c.send_data(id, &b""[..], true).unwrap();
    assert_eq!(c.active_requests(), 0);
    assert!(c.send_data(id, &b"x"[..], true).is_err());
}
