//! Property tests of the codec: round trips, split-anywhere decoding, and
//! hostile bytes never panicking nor allocating past the frame limit.

use bytes::{Bytes, BytesMut};
use framegate_wire::codec::{FrameDecoder, decode_all, encode_all};
use framegate_wire::frame::*;
use framegate_wire::{Encoding, OutputMode, ServerConfig, ServerReactor};
use proptest::prelude::*;

fn arb_body() -> impl Strategy<Value = FrameBody> {
    let payload = prop::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::from);
    (0u8..8, 0u8..16, payload).prop_filter_map("defined flags", |(t, flags, payload)| {
        let ty = FrameType::from_nibble(t + 1)?;
        FrameBody::load(ty, flags & ty.defined_flags(), payload).ok()
    })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (any::<u16>(), any::<u8>(), 0u8..8, arb_body()).prop_map(|(r, s, sf, body)| Frame {
        request_id: RequestId(r),
        stream_id: StreamId(s),
        stream_flags: StreamFlags::from_bits(sf).unwrap(),
        body,
    })
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(frames in prop::collection::vec(arb_frame(), 0..20)) {
        let wire = encode_all(&frames).unwrap();
        prop_assert_eq!(decode_all(&wire, 65_535).unwrap(), frames);
    }

    #[test]
    fn decoding_split_anywhere_matches_whole(frames in prop::collection::vec(arb_frame(), 1..6), cut in any::<prop::sample::Index>()) {
        let wire = encode_all(&frames).unwrap();
        let whole = decode_all(&wire, 65_535).unwrap();
        let at = cut.index(wire.len() + 1);
        let mut dec = FrameDecoder::new(65_535);
        let mut buf = BytesMut::from(&wire[..at]);
        let mut got = Vec::new();
        while let Some(fr) = dec.decode(&mut buf).unwrap() { got.push(fr); }
        buf.extend_from_slice(&wire[at..]);
        while let Some(fr) = dec.decode_eof(&mut buf).unwrap() { got.push(fr); }
        prop_assert_eq!(got, whole);
    }

    #[test]
    fn decoding_byte_by_byte_matches_whole(frames in prop::collection::vec(arb_frame(), 1..4)) {
        let wire = encode_all(&frames).unwrap();
        let mut dec = FrameDecoder::new(65_535);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(fr) = dec.decode(&mut buf).unwrap() { got.push(fr); }
        }
        prop_assert!(dec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(input in prop::collection::vec(any::<u8>(), 0..2048), max in 0usize..70_000) {
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        // Feed in small pieces; capacity may only ever grow to hold one frame.
        for piece in input.chunks(7) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(fr)) => prop_assert!(fr.body.payload().len() <= max),
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            prop_assert!(buf.capacity() <= 2 * (HEADER_LEN + max) + 64, "capacity {} for max {}", buf.capacity(), max);
        }
        let _ = dec.decode_eof(&mut buf);
    }

    #[test]
    fn arbitrary_frames_never_panic_the_server_reactor(frames in prop::collection::vec(arb_frame(), 0..40), deferred in any::<bool>()) {
        let mode = if deferred { OutputMode::Deferred } else { OutputMode::Immediate };
        let mut r = ServerReactor::new(ServerConfig::default(), mode, Encoding::Identity);
        for fr in frames {
            let _ = r.handle_frame(fr);
            while r.poll_event().is_some() {}
            while r.poll_transmit().is_some() {}
        }
        r.handle_input_ended();
        while r.poll_event().is_some() {}
        while r.poll_transmit().is_some() {}
    }
}
