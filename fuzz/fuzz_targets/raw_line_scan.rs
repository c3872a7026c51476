//! A raw serial line (DL/T 645 or CJ/T 188 behind a serial server) as the hub reads it: bytes
//! arriving in pieces of any size, the protocol's scanner run over the receive buffer after
//! each piece, what it skips dropped, the buffer cut back when it grows past its cap (as
//! `modbus::raw::RawLink::receive` does), and then a real frame from the meter.
//!
//! Input: protocol, piece size, then the line's bytes before the meter's answer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkhub::modbus::raw::Scan;
use parkhub::{cjt188, dlt645};

/// `RawLink`'s buffer cap.
const MAX_BUFFER: usize = 1024;
const WAKE: u8 = 0xFE;

struct Found {
    /// Where the frame's bytes (after its wake-ups) start and end in the whole stream.
    at: std::ops::Range<usize>,
    bytes: Vec<u8>,
}

/// Feeds `stream` in pieces of `piece` bytes through `scan`, like the line does; returns the
/// frames found, each with where it sat in the stream.
fn read_line<F>(
    stream: &[u8],
    piece: usize,
    scan: impl Fn(&[u8]) -> Scan<F>,
    bytes_of: impl Fn(&F) -> Vec<u8>,
    most_pending: usize,
) -> Vec<Found> {
    let mut buf: Vec<u8> = Vec::new();
    // Stream offset of buf[0].
    let mut base = 0;
    let mut found = Vec::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match scan(&buf) {
                Scan::Frame { frame, consumed } => {
                    assert!(consumed >= 1 && consumed <= buf.len());
                    let bytes = bytes_of(&frame);
                    // What was consumed is wake-ups, then exactly this frame.
                    assert!(consumed >= bytes.len());
                    let (wake, rest) = buf[..consumed].split_at(consumed - bytes.len());
                    assert_eq!(rest, &bytes[..]);
                    assert!(wake.iter().all(|b| *b == WAKE), "{wake:02X?}");
                    found.push(Found {
                        at: base + wake.len()..base + consumed,
                        bytes,
                    });
                    buf.drain(..consumed);
                    base += consumed;
                }
                Scan::Skip { len, .. } => {
                    assert!(len >= 1 && len <= buf.len(), "{len} of {}", buf.len());
                    buf.drain(..len);
                    base += len;
                }
                Scan::NeedMore => break,
            }
        }
        // What waits for more is one unfinished frame and the wake-ups before it.
        let pending = buf.iter().skip_while(|b| **b == WAKE).count();
        assert!(
            pending <= most_pending,
            "{pending} bytes pending: {buf:02X?}"
        );
        if buf.len() >= MAX_BUFFER {
            let excess = buf.len() - MAX_BUFFER / 2;
            buf.drain(..excess);
            base += excess;
        }
    }
    found
}

fn check<F>(
    noise: &[u8],
    piece: usize,
    answer: &[u8],
    scan: impl Fn(&[u8]) -> Scan<F> + Copy,
    bytes_of: impl Fn(&F) -> Vec<u8> + Copy,
    most_pending: usize,
) {
    let _ = read_line(noise, piece, scan, bytes_of, most_pending);
    let mut stream = noise.to_vec();
    stream.extend_from_slice(answer);
    let found = read_line(&stream, piece, scan, bytes_of, most_pending);
    // The answer is found, unless the noise held a frame start whose (valid) frame took the
    // answer's bytes into its own.
    let start = stream.len() - answer.len() + answer.iter().take_while(|b| **b == WAKE).count();
    let whole = start..stream.len();
    let ok = found
        .iter()
        .any(|f| f.at == whole && f.bytes == stream[whole.clone()])
        || found
            .iter()
            .any(|f| f.at.start < whole.start && f.at.end > whole.start);
    assert!(
        ok,
        "the answer at {whole:?} is lost; found {:?}",
        found.iter().map(|f| f.at.clone()).collect::<Vec<_>>()
    );
}

fuzz_target!(|data: &[u8]| {
    let [protocol, piece, noise @ ..] = data else {
        return;
    };
    let piece = 1 + usize::from(*piece);
    if protocol & 1 == 0 {
        let address = dlt645::frame::Address::from_wire([0x34, 0x12, 0, 0, 0, 0]);
        let answer = dlt645::frame::Frame {
            address,
            control: dlt645::frame::Control(0x91),
            data: vec![0x00, 0x00, 0x01, 0x00, 0x56, 0x34, 0x12, 0x00],
        };
        let Ok(wire) = answer.to_wire() else {
            return;
        };
        // A frame start, a full header and MAX_DATA bytes, short of its checksum and end.
        let most = 12 + dlt645::frame::MAX_DATA;
        check(
            noise,
            piece,
            &wire,
            dlt645::frame::scan,
            |f: &dlt645::frame::Frame| f.to_bytes().unwrap_or_default(),
            most,
        );
    } else {
        let address: cjt188::frame::Address = match "12345678901234".parse() {
            Ok(a) => a,
            Err(_) => return,
        };
        let answer = cjt188::frame::Frame::with_di(
            cjt188::frame::COLD_WATER,
            address,
            cjt188::frame::Control(0x81),
            [0x1F, 0x90],
            5,
            &[0x78, 0x56, 0x34, 0x12, 0x2C],
        );
        let most = cjt188::frame::MIN_FRAME + cjt188::frame::MAX_DATA;
        check(
            noise,
            piece,
            &answer.to_wire(),
            cjt188::frame::scan,
            cjt188::frame::Frame::to_bytes,
            most,
        );
    }
});
