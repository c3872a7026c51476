//! OCPP 1.6J WebSocket text messages from a charge point: the frame, then the payload of every
//! action the hub takes, the meter values it reduces to readings and the confirmations of the
//! commands it sends.
//!
//! Properties beyond "no panic": a parsed frame prints back to a text that parses to the same
//! frame; a request read from a payload writes a payload that reads back to the same request;
//! every CALLERROR owed to the sender is itself a well-formed frame; meter values reduce to
//! finite readings, each point once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkhub::ocpp::frame::{
    Frame, FrameError, MAX_DESCRIPTION_CHARS, MAX_FRAME_BYTES, MAX_MESSAGE_ID_CHARS,
};
use parkhub::ocpp::messages::{decode_command_conf, decode_request, Request};
use parkhub::ocpp::meter::{reduce, MAX_PROBLEMS};

const COMMANDS: [&str; 4] = [
    "RemoteStopTransaction",
    "Reset",
    "UnlockConnector",
    "ChangeAvailability",
];

/// An error frame the hub sends is one a peer (and the hub itself) reads back as it was.
fn check_answer(answer: &Frame) {
    let Frame::CallError {
        id, description, ..
    } = answer
    else {
        panic!("an answer that is no CALLERROR: {answer:?}");
    };
    assert!(description.chars().count() <= MAX_DESCRIPTION_CHARS);
    let text = answer.to_text();
    if !id.is_empty() && id.chars().count() <= MAX_MESSAGE_ID_CHARS {
        assert_eq!(Frame::parse(&text).as_ref(), Ok(answer), "{text}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = match Frame::parse(text) {
        Ok(f) => f,
        Err(e) => {
            if text.len() > MAX_FRAME_BYTES {
                assert!(matches!(e, FrameError::TooLarge { .. }));
            }
            assert!(!e.to_string().is_empty());
            if let Some(answer) = e.answer() {
                check_answer(&answer);
            }
            return;
        }
    };
    let again = frame.to_text();
    if again.len() <= MAX_FRAME_BYTES {
        assert_eq!(Frame::parse(&again).as_ref(), Ok(&frame), "{again}");
    }
    assert!(!frame.id().is_empty() && frame.id().chars().count() <= MAX_MESSAGE_ID_CHARS);
    match &frame {
        Frame::Call {
            id,
            action,
            payload,
        } => match decode_request(action, payload) {
            Ok(request) => {
                assert_eq!(request.action(), action);
                let written = request.to_payload();
                let read = decode_request(action, &written)
                    .unwrap_or_else(|e| panic!("{action} {written} is refused: {e:?}"));
                assert_eq!(read.to_payload(), written);
                if let Request::MeterValues(mv) = &request {
                    for m in &mv.meter_value {
                        let r = reduce(mv.connector_id, &m.sampled_value);
                        assert!(r.rejected <= m.sampled_value.len());
                        assert!(r.problems.len() <= MAX_PROBLEMS.min(r.rejected));
                        assert!(r.readings.iter().all(|(_, v, _)| v.is_finite()));
                        let mut names: Vec<&str> =
                            r.readings.iter().map(|(n, _, _)| n.as_str()).collect();
                        names.sort_unstable();
                        names.dedup();
                        assert_eq!(names.len(), r.readings.len());
                    }
                }
            }
            Err((code, why)) => {
                assert!(!why.is_empty());
                check_answer(&Frame::call_error(id.clone(), code, &why));
            }
        },
        Frame::CallResult { payload, .. } => {
            for action in COMMANDS {
                if let Err((_, why)) = decode_command_conf(action, payload) {
                    assert!(!why.is_empty());
                }
            }
        }
        Frame::CallError { .. } => {}
    }
});
