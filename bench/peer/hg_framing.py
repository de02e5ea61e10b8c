#!/usr/bin/env python3
"""The 1 KiB lines of framegate's `codec` bench, done with Mercurial's
wireprotoframing (the 2018 protocol's reference implementation).

Prints one JSON object: {line: median seconds per run}. Each line handles
100,000 frames of 1 KiB, as the Rust bench does.
"""
import io
import json
import statistics
import sys
import time

from mercurial import ui as uimod
from mercurial import wireprotoframing as w

FRAMES = 100_000
KIB = 1024
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def timed(fn):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


payload = b"a" * KIB


def encode():
    out = bytearray()
    for i in range(FRAMES):
        flags = w.FLAG_COMMAND_DATA_EOS if i + 1 == FRAMES else w.FLAG_COMMAND_DATA_CONTINUATION
        out += w.makeframe(1, 1, 0, w.FRAME_TYPE_COMMAND_DATA, flags, payload)
    return out


wire = bytes(encode())


def decode():
    fh = io.BytesIO(wire)
    n = 0
    while True:
        frame = w.readframe(fh)
        if frame is None:
            break
        n += len(frame.payload)
    assert n == FRAMES * KIB


def request_frames():
    # createcommandframes always cuts data into 32 KiB frames, so take only
    # its command frame and add 100,000 1 KiB data frames like the Rust bench.
    stream = w.outputstream(1)
    command = next(iter(w.createcommandframes(stream, 1, b"put", {}, datafh=io.BytesIO(b"x"))))
    frames = [w.readframe(io.BytesIO(bytes(command)))]
    for i in range(FRAMES):
        flags = w.FLAG_COMMAND_DATA_EOS if i + 1 == FRAMES else w.FLAG_COMMAND_DATA_CONTINUATION
        raw = w.makeframe(1, 1, 0, w.FRAME_TYPE_COMMAND_DATA, flags, payload)
        frames.append(w.readframe(io.BytesIO(bytes(raw))))
    return frames


frames = request_frames()
ui = uimod.ui()


def reactor():
    r = w.serverreactor(ui, deferoutput=True)
    for frame in frames:
        action, meta = r.onframerecv(frame)
        if action == b"error":
            raise SystemExit("reactor error: %r" % (meta,))
    # The whole request must have been consumed as one command with its data.
    assert action == b"runcommand", action
    data = meta[b"data"]
    assert len(data if isinstance(data, bytes) else data.getvalue()) == FRAMES * KIB


results = {
    "1kib/encode_100k": timed(encode),
    "1kib/decode_100k": timed(decode),
    "1kib/server_reactor_100k_data_frames": timed(reactor),
}
json.dump(results, sys.stdout)
print()
