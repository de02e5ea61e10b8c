//! End-to-end gateway bench (not a timed test): the real `framegate-server`
//! binary on loopback, measured from a reqwest client.
//!
//! * a batch of 1,000 `get`s of 1 KiB files in one POST (median of runs);
//! * a 1 GiB `get` and a 1 GiB `put`: throughput and the server's peak RSS
//!   (VmHWM, reset before each phase), which must stay under 64 MiB;
//! * the cost of a crash-atomic 1 MiB `append` to that 1 GiB file, beside a
//!   1 MiB `put` (same message shape, no journal) and the floor (this
//!   process writing 1 MiB and `fdatasync`ing it directly), medians and
//!   spreads of interleaved runs.
//!
//! `cargo bench -p framegate-server --bench gateway` (set
//! `FRAMEGATE_BENCH_GIB=0.25` for a quicker run).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use framegate_wire::{Arguments, ClientEvent, ClientReactor, FrameDecoder, MEDIA_TYPE};
use futures_util::StreamExt;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_framegate-server"))
        .args([
            "serve",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-writes",
        ])
        .env("FRAMEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Owned by the guard from here on: killed and waited for on every path.
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not start");
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

async fn post_and_count(
    client: &reqwest::Client,
    url: &str,
    body: reqwest::Body,
    reactor: &mut ClientReactor,
) -> u64 {
    let resp = client
        .post(url)
        .header("content-type", MEDIA_TYPE)
        .header("accept", MEDIA_TYPE)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::default();
    let mut answer_bytes = 0u64;
    let mut ends = 0;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(frame) = dec.decode(&mut buf).unwrap() {
            reactor.handle_frame(frame).unwrap();
        }
        while let Some(ev) = reactor.poll_event() {
            match ev {
                ClientEvent::Data { data, .. } => answer_bytes += data.len() as u64,
                ClientEvent::End { .. } => ends += 1,
                ClientEvent::Failed { error, .. } => panic!("{error:?}"),
                _ => {}
            }
        }
    }
    assert!(ends > 0);
    answer_bytes
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let gib: f64 = std::env::var("FRAMEGATE_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let big_len = (gib * (1u64 << 30) as f64) as u64;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        std::fs::write(
            dir.path().join(format!("f{i:04}")),
            vec![(i % 251) as u8; 1024],
        )
        .unwrap();
    }
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.bin")).unwrap());
        let block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for _ in 0..(big_len >> 20) {
            f.write_all(&block).unwrap();
        }
    }
    let server = start(dir.path());
    let pid = server.child.id();
    let client = reqwest::Client::builder().build().unwrap();
    let ro = format!("{}/.framegate/ro", server.url);
    let rw = format!("{}/.framegate/rw", server.url);

    // 1,000 gets of 1 KiB in one POST.
    let mut times = Vec::new();
    for _ in 0..15 {
        let mut reactor = ClientReactor::default();
        for i in 0..1000 {
            let args = Arguments::new().with("path", format!("f{i:04}")).unwrap();
            reactor.request("get", &args, None).unwrap();
        }
        let mut body = BytesMut::new();
        reactor.write_transmit(&mut body);
        let started = Instant::now();
        let got = post_and_count(&client, &ro, body.freeze().into(), &mut reactor).await;
        times.push(started.elapsed().as_secs_f64());
        assert_eq!(got, 1000 * 1024);
    }
    let batch = median(times);
    println!(
        "batch of 1,000 x 1 KiB gets in one POST: median {:.2} ms ({:.0} files/s)",
        batch * 1e3,
        1000.0 / batch
    );

    // 1 GiB get.
    reset_peak(pid);
    let mut reactor = ClientReactor::default();
    reactor
        .request(
            "get",
            &Arguments::new().with("path", "big.bin").unwrap(),
            None,
        )
        .unwrap();
    let mut body = BytesMut::new();
    reactor.write_transmit(&mut body);
    let started = Instant::now();
    let got = post_and_count(&client, &ro, body.freeze().into(), &mut reactor).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got, big_len);
    println!(
        "get of {:.2} GiB: {:.0} MiB/s, server peak RSS {:.1} MiB",
        gib,
        big_len as f64 / secs / (1 << 20) as f64,
        peak_rss_mib(pid)
    );

    // 1 GiB put, generated and framed on the fly.
    reset_peak(pid);
    let mut reactor = ClientReactor::default();
    let id = reactor
        .start_request(
            "put",
            &Arguments::new().with("path", "upload.bin").unwrap(),
            true,
        )
        .unwrap();
    let mut head = BytesMut::new();
    reactor.write_transmit(&mut head);
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let chunks = big_len >> 20;
    let frames = futures_util::stream::iter(0..=chunks).map(move |i| {
        // Frames are cut on the fly, so the upload is never in memory whole.
        let mut out = BytesMut::new();
        if i == 0 {
            out.extend_from_slice(&head);
        }
        if i < chunks {
            encode_data(id, chunk.clone(), false, &mut out);
        } else {
            encode_data(id, Bytes::new(), true, &mut out);
        }
        Ok::<Bytes, std::io::Error>(out.freeze())
    });
    let started = Instant::now();
    post_and_count(
        &client,
        &rw,
        reqwest::Body::wrap_stream(frames),
        &mut reactor,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        std::fs::metadata(dir.path().join("upload.bin"))
            .unwrap()
            .len(),
        big_len
    );
    println!(
        "put of {:.2} GiB: {:.0} MiB/s, server peak RSS {:.1} MiB",
        gib,
        big_len as f64 / secs / (1 << 20) as f64,
        peak_rss_mib(pid)
    );

    // Cost of a crash-atomic append (journal: one small file written and
    // synced, the data synced, the journal removed and its directory
    // synced) next to a put of the same size and the bare floor.
    let mib = Bytes::from(vec![0xa5u8; 1 << 20]);
    let floor_path = dir.path().join("floor.bin");
    let runs = 15;
    let results = interleaved(runs, 3, |op| {
        let (client, rw, mib, floor_path) = (&client, &rw, mib.clone(), &floor_path);
        async move {
            match op {
                0 => {
                    let (body, mut reactor) = write_message("append", "upload.bin", mib);
                    post_and_count(client, rw, body.into(), &mut reactor).await;
                }
                1 => {
                    let (body, mut reactor) = write_message("put", "small.bin", mib);
                    post_and_count(client, rw, body.into(), &mut reactor).await;
                }
                _ => {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(false)
                        .open(floor_path)
                        .unwrap();
                    let len = f.metadata().unwrap().len();
                    f.write_all_at(&mib, len).unwrap();
                    f.sync_data().unwrap();
                }
            }
        }
    })
    .await;
    assert_eq!(
        std::fs::metadata(dir.path().join("upload.bin"))
            .unwrap()
            .len(),
        big_len + runs as u64 * (1 << 20)
    );
    let [append, put, floor] = [results[0], results[1], results[2]];
    println!(
        "1 MiB append to a {gib:.2} GiB file: median {:.2} ms (min {:.2}, max {:.2}); \
         1 MiB put: {:.2} ms ({:.2}-{:.2}); floor (pwrite + fdatasync, no HTTP): {:.2} ms ({:.2}-{:.2}); \
         append/put {:.2}x, append/floor {:.2}x ({runs} interleaved runs each)",
        append.0,
        append.1,
        append.2,
        put.0,
        put.1,
        put.2,
        floor.0,
        floor.1,
        floor.2,
        append.0 / put.0,
        append.0 / floor.0,
    );
}

/// One message with one write command carrying `data`.
fn write_message(command: &str, path: &'static str, data: Bytes) -> (Bytes, ClientReactor) {
    let mut reactor = ClientReactor::default();
    let id = reactor
        .start_request(command, &Arguments::new().with("path", path).unwrap(), true)
        .unwrap();
    let mut out = BytesMut::new();
    reactor.write_transmit(&mut out);
    encode_data(id, data, true, &mut out);
    (out.freeze(), reactor)
}

/// Runs each of `ops` `runs` times, interleaved; returns per-op
/// (median, min, max) in milliseconds.
async fn interleaved<F, Fut>(runs: usize, ops: usize, mut op: F) -> Vec<(f64, f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = vec![Vec::new(); ops];
    for _ in 0..runs {
        for (i, t) in times.iter_mut().enumerate() {
            let started = Instant::now();
            op(i).await;
            t.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|t| {
            let min = t.iter().cloned().fold(f64::MAX, f64::min);
            let max = t.iter().cloned().fold(0.0, f64::max);
            (median(t), min, max)
        })
        .collect()
}

/// Data frames for `data` on the (already begun) client stream 1.
fn encode_data(id: framegate_wire::RequestId, mut data: Bytes, last: bool, out: &mut BytesMut) {
    use framegate_wire::frame::*;
    loop {
        let piece = data.split_to(data.len().min(32_768));
        let eos = last && data.is_empty();
        let frame = Frame {
            request_id: id,
            stream_id: StreamId(1),
            stream_flags: StreamFlags::empty(),
            body: FrameBody::CommandData(CommandData {
                flags: if eos {
                    CommandDataFlags::EOS
                } else {
                    CommandDataFlags::CONTINUATION
                },
                payload: piece,
            }),
        };
        frame.encode(out).unwrap();
        if data.is_empty() {
            break;
        }
    }
}
