//! CJ/T 188 frames off a water meter line.
//!
//! The input is scanned as a receive buffer and every frame found is interpreted as the
//! answer to both requests the hub sends; it is also read as a frame to encode that must scan
//! back as itself and, with any one byte flipped, never as itself (a wake-up excepted); and
//! its tail is decoded as a 901F reading that must encode back to the same reading.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkhub::cjt188::frame::{
    decode_reading, encode_reading, interpret, scan, Address, Answer, Control, Frame, Request,
    Scan, MAX_DATA, WAKE_UP,
};

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
    let meter: Address = "12345678901234".parse().expect("14 digits");
    for (frame, consumed) in frames_in(data) {
        assert!(frame.data().len() <= MAX_DATA);
        assert!(consumed >= frame.to_bytes().len());
        for request in [
            Request::Read { to: meter, ser: 5 },
            Request::Read {
                to: frame.address(),
                ser: frame.ser().unwrap_or(0),
            },
            Request::ReadAddress { ser: 0 },
        ] {
            match interpret(&request, &frame) {
                Ok(Answer::Reading(r)) => {
                    assert!(r.volume_m3.is_finite() && r.volume_m3 >= 0.0);
                    assert!(r.settlement_m3.is_none_or(|v| v.is_finite() && v >= 0.0));
                }
                Ok(Answer::OtherMeter(a)) => assert_ne!(a, request.to()),
                Ok(_) => {}
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
    }

    let [meter_type, a0, a1, a2, a3, a4, a5, a6, control, flip_at, flip, rest @ ..] = data else {
        return;
    };
    let Ok(frame) = Frame::new(
        *meter_type,
        Address::from_wire([*a0, *a1, *a2, *a3, *a4, *a5, *a6]),
        Control(*control),
        rest[..rest.len().min(MAX_DATA)].to_vec(),
    ) else {
        panic!("data within MAX_DATA is refused");
    };
    let wire = frame.to_wire();
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
            assert_eq!(found, vec![frame.clone()]);
        } else {
            assert!(
                !found.contains(&frame),
                "byte {at} flipped by {flip:02X} and the frame still reads: {spoiled:02X?}"
            );
        }
    }
    // Too much data is refused, not cut.
    assert!(Frame::new(*meter_type, meter, Control(*control), vec![0; MAX_DATA + 1]).is_err());

    if let Ok(r) = decode_reading(rest) {
        assert!(r.volume_m3.is_finite() && r.volume_m3 >= 0.0);
        let back = decode_reading(&encode_reading(&r)).expect("an encoded reading decodes");
        // m³ in hundredths: a meter counting in litres or other units is rounded to them.
        if r.volume_m3 < 999_999.99 {
            assert!(
                (back.volume_m3 - r.volume_m3).abs() <= 0.005 + 1e-9,
                "{r:?} {back:?}"
            );
        }
        assert_eq!(back.battery_low, r.battery_low);
        if r.status.is_some() {
            assert_eq!(back.valve, r.valve);
        }
        if r.time.is_some() {
            assert_eq!(back.time, r.time);
        }
    }
});
