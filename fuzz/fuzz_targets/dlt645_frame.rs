//! DL/T 645-2007 frames off a meter line.
//!
//! The input is scanned as a receive buffer; it is also read as a frame to encode (address,
//! control, data) that must scan back as itself and, with any one byte flipped, must never
//! scan back as itself (unless the byte was a wake-up, which is outside the frame); and its
//! tail is decoded as the value of every quantity the hub reads.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkhub::dlt645::frame::{
    scan, Address, Control, Frame, Quantity, Reply, Scan, MAX_DATA, WAKE_UP,
};

/// Every frame found in `buf`, scanning as the line does.
fn frames_in(mut buf: &[u8]) -> Vec<(Frame, usize)> {
    let mut found = Vec::new();
    let mut steps = 0;
    loop {
        let used = match scan(buf) {
            Scan::Frame { frame, consumed } => {
                found.push((frame, consumed));
                consumed
            }
            Scan::Skip { len, .. } => len,
            Scan::NeedMore => return found,
        };
        assert!(used >= 1 && used <= buf.len(), "{used} of {}", buf.len());
        buf = &buf[used..];
        steps += 1;
        assert!(steps <= 1 << 16);
    }
}

fuzz_target!(|data: &[u8]| {
    // As a receive buffer: every frame found is a well-formed one that encodes back to bytes
    // the buffer held, and reading it as a reply never panics.
    for (frame, consumed) in frames_in(data) {
        assert!(frame.data.len() <= MAX_DATA);
        let bytes = frame.to_bytes().expect("a scanned frame fits");
        assert!(consumed >= bytes.len());
        match frame.reply() {
            Ok(Reply::Echo(f)) => assert_eq!(f, frame),
            Ok(r) => assert_eq!(r.address(), frame.address),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    // As a frame to send.
    let [a0, a1, a2, a3, a4, a5, control, flip_at, flip, rest @ ..] = data else {
        return;
    };
    let frame = Frame {
        address: Address::from_wire([*a0, *a1, *a2, *a3, *a4, *a5]),
        control: Control(*control),
        data: rest[..rest.len().min(MAX_DATA)].to_vec(),
    };
    let wire = frame.to_wire().expect("data within MAX_DATA");
    assert_eq!(
        scan(&wire),
        Scan::Frame {
            frame: frame.clone(),
            consumed: wire.len()
        }
    );
    if *flip != 0 {
        let at = usize::from(*flip_at) % wire.len();
        let mut spoiled = wire.clone();
        spoiled[at] ^= flip;
        let found: Vec<Frame> = frames_in(&spoiled).into_iter().map(|(f, _)| f).collect();
        if at < WAKE_UP.len() {
            // A wake-up is no part of the frame.
            assert_eq!(found, vec![frame.clone()]);
        } else {
            assert!(
                !found.contains(&frame),
                "byte {at} flipped by {flip:02X} and the frame still reads: {spoiled:02X?}"
            );
        }
    }

    // Every quantity's value from the bytes after the identifier: refused, or a number that
    // encodes back to the same bytes.
    for q in Quantity::ALL {
        for len in 0..=rest.len().min(4) {
            let payload = &rest[..len];
            match q.decode(payload) {
                Ok(x) => {
                    assert!(x.is_finite());
                    let back = q.encode(x).expect("a decoded value encodes");
                    assert_eq!(q.decode(&back), Ok(x));
                    if x != 0.0 {
                        assert_eq!(back, payload, "{q:?} {x}");
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }
});
