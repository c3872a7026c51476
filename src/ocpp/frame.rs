//! OCPP-J RPC frames (OCPP-J 1.6, section 4): `[2,"id","Action",{…}]` (CALL),
//! `[3,"id",{…}]` (CALLRESULT) and `[4,"id","ErrorCode","description",{…}]` (CALLERROR).
//!
//! A frame that cannot be read is answered when, and only when, the other side waits for the
//! answer: a CALL whose message id could be read gets a CALLERROR with that id
//! ([`FrameError::answer`]). Nothing else is ever answered — not text that is not JSON or not
//! an array, not a frame without an id, not an unknown message type (OCPP-J 4.1.3 has the
//! receiver ignore those), and never a CALLRESULT or CALLERROR: answering a reply with an error
//! would let two confused peers trade errors forever.

use std::fmt;
use std::str::FromStr;

use crate::text::{clip, json_kind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// Largest frame read; anything longer is refused unread. A core-profile message is a few
/// hundred bytes; a MeterValues with every measurand on three phases stays under 8 KiB.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest message id (OCPP-J 4.1.4).
pub const MAX_MESSAGE_ID_CHARS: usize = 36;
/// Longest CALLERROR description written. OCPP 1.6 sets no limit; 2.0.1 sets 255, and chargers
/// have fixed buffers.
pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// The CALLERROR codes of OCPP-J 1.6 (4.2.3), spelled as the 1.6 spec spells them:
/// `FormationViolation` and `OccurenceConstraintViolation` are the 1.6 spellings the errata
/// keeps ("do not fix, might break implementations"). The 2.x spellings `FormatViolation` and
/// `OccurrenceConstraintViolation` are understood when read, never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    NotImplemented,
    NotSupported,
    InternalError,
    ProtocolError,
    SecurityError,
    #[serde(alias = "FormatViolation")]
    FormationViolation,
    PropertyConstraintViolation,
    #[serde(alias = "OccurrenceConstraintViolation")]
    OccurenceConstraintViolation,
    TypeConstraintViolation,
    GenericError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::NotImplemented,
        ErrorCode::NotSupported,
        ErrorCode::InternalError,
        ErrorCode::ProtocolError,
        ErrorCode::SecurityError,
        ErrorCode::FormationViolation,
        ErrorCode::PropertyConstraintViolation,
        ErrorCode::OccurenceConstraintViolation,
        ErrorCode::TypeConstraintViolation,
        ErrorCode::GenericError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::NotSupported => "NotSupported",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::ProtocolError => "ProtocolError",
            ErrorCode::SecurityError => "SecurityError",
            ErrorCode::FormationViolation => "FormationViolation",
            ErrorCode::PropertyConstraintViolation => "PropertyConstraintViolation",
            ErrorCode::OccurenceConstraintViolation => "OccurenceConstraintViolation",
            ErrorCode::TypeConstraintViolation => "TypeConstraintViolation",
            ErrorCode::GenericError => "GenericError",
        }
    }

    /// What the code means, after OCPP-J 1.6 table 7 (for descriptions and logs).
    pub fn meaning(self) -> &'static str {
        match self {
            ErrorCode::NotImplemented => "Requested Action is not known by receiver",
            ErrorCode::NotSupported => {
                "Requested Action is recognized but not supported by the receiver"
            }
            ErrorCode::InternalError => {
                "An internal error occurred and the receiver was not able to process the requested Action successfully"
            }
            ErrorCode::ProtocolError => "Payload for Action is incomplete",
            ErrorCode::SecurityError => {
                "During the processing of Action a security issue occurred preventing receiver from completing the Action successfully"
            }
            ErrorCode::FormationViolation => {
                "Payload for Action is syntactically incorrect or not conform the PDU structure for Action"
            }
            ErrorCode::PropertyConstraintViolation => {
                "Payload is syntactically correct but at least one field contains an invalid value"
            }
            ErrorCode::OccurenceConstraintViolation => {
                "Payload for Action is syntactically correct but at least one of the fields violates occurence constraints"
            }
            ErrorCode::TypeConstraintViolation => {
                "Payload for Action is syntactically correct but at least one of the fields violates data type constraints"
            }
            ErrorCode::GenericError => "Any other error not covered by the previous ones",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that is no OCPP 1.6 error code.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0} is not an OCPP 1.6 error code")]
pub struct UnknownErrorCode(String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "FormatViolation" => return Ok(ErrorCode::FormationViolation),
            "OccurrenceConstraintViolation" => return Ok(ErrorCode::OccurenceConstraintViolation),
            _ => {}
        }
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(clip(s)))
    }
}

/// One OCPP-J message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call {
        id: String,
        action: String,
        /// Always a JSON object when parsed.
        payload: Value,
    },
    CallResult {
        id: String,
        /// Always a JSON object when parsed.
        payload: Value,
    },
    CallError {
        id: String,
        code: ErrorCode,
        description: String,
        details: Value,
    },
}

/// Why a text is not a frame, and whether the sender is owed an answer ([`FrameError::answer`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("frame is not a JSON array")]
    NotAnArray,
    /// No message type, or one other than 2, 3 and 4: ignored, as OCPP-J 4.1.3 asks.
    #[error("frame has no known message type (2, 3 or 4): {0}")]
    UnknownMessageType(String),
    #[error("frame has no message id (a string in second place)")]
    NoMessageId,
    /// A CALL that is wrong in its shape, but whose id is known: answerable with `code`.
    #[error("CALL {}: {reason}", clip(.id))]
    BadCall {
        id: String,
        code: ErrorCode,
        reason: String,
    },
    /// A CALLRESULT or CALLERROR that is wrong in its shape. Never answered; the id says which
    /// of our own calls has failed.
    #[error("{kind} {}: {reason}", clip(.id))]
    BadReply {
        kind: &'static str,
        id: String,
        reason: String,
    },
}

impl FrameError {
    /// The CALLERROR owed to the sender, if any is.
    pub fn answer(&self) -> Option<Frame> {
        match self {
            FrameError::BadCall { id, code, reason } => {
                Some(Frame::call_error(id.clone(), *code, reason))
            }
            _ => None,
        }
    }

    /// The message id of the refused frame, when it could be read.
    pub fn id(&self) -> Option<&str> {
        match self {
            FrameError::BadCall { id, .. } | FrameError::BadReply { id, .. } => Some(id),
            _ => None,
        }
    }
}

const CALL: u64 = 2;
const CALL_RESULT: u64 = 3;
const CALL_ERROR: u64 = 4;

impl Frame {
    /// Reads one WebSocket text message.
    ///
    /// In a CALL, fewer than four elements are a `ProtocolError` ("payload for Action is
    /// incomplete"); more elements, an action that is not a string, a payload that is not an
    /// object, or a message id that is empty or longer than 36 characters are a
    /// `FormationViolation` (not the PDU structure). The payload itself is not looked at here:
    /// that is [`super::messages::decode_request`]'s work.
    pub fn parse(text: &str) -> Result<Frame, FrameError> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge {
                size: text.len(),
                max: MAX_FRAME_BYTES,
            });
        }
        let json: Value =
            serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let Value::Array(mut items) = json else {
            return Err(FrameError::NotAnArray);
        };
        let kind = match items.first() {
            None => return Err(FrameError::UnknownMessageType("nothing".into())),
            Some(t) => match t.as_u64() {
                Some(k @ (CALL | CALL_RESULT | CALL_ERROR)) => k,
                _ => return Err(FrameError::UnknownMessageType(clip(&t.to_string()))),
            },
        };
        let id = match items.get_mut(1) {
            Some(Value::String(id)) => std::mem::take(id),
            _ => return Err(FrameError::NoMessageId),
        };
        let problem = id_problem(&id);
        match kind {
            CALL => {
                let bad = |code, reason: String| FrameError::BadCall {
                    id: id.clone(),
                    code,
                    reason,
                };
                if let Some(p) = problem {
                    return Err(bad(ErrorCode::FormationViolation, p));
                }
                if items.len() != 4 {
                    let code = if items.len() < 4 {
                        ErrorCode::ProtocolError
                    } else {
                        ErrorCode::FormationViolation
                    };
                    return Err(bad(code, format!("{} elements, a CALL has 4", items.len())));
                }
                let payload = items.pop().unwrap_or_default();
                let action = items.pop().unwrap_or_default();
                let Value::String(action) = action else {
                    return Err(bad(
                        ErrorCode::FormationViolation,
                        format!("the action is {}, not a string", json_kind(&action)),
                    ));
                };
                if !payload.is_object() {
                    return Err(bad(
                        ErrorCode::FormationViolation,
                        format!("the payload is {}, not an object", json_kind(&payload)),
                    ));
                }
                Ok(Frame::Call {
                    id,
                    action,
                    payload,
                })
            }
            CALL_RESULT => {
                let bad = |reason: String| FrameError::BadReply {
                    kind: "CALLRESULT",
                    id: id.clone(),
                    reason,
                };
                if let Some(p) = problem {
                    return Err(bad(p));
                }
                if items.len() != 3 {
                    return Err(bad(format!("{} elements, a CALLRESULT has 3", items.len())));
                }
                let payload = items.pop().unwrap_or_default();
                if !payload.is_object() {
                    return Err(bad(format!(
                        "the payload is {}, not an object",
                        json_kind(&payload)
                    )));
                }
                Ok(Frame::CallResult { id, payload })
            }
            _ => {
                let bad = |reason: String| FrameError::BadReply {
                    kind: "CALLERROR",
                    id: id.clone(),
                    reason,
                };
                if let Some(p) = problem {
                    return Err(bad(p));
                }
                // Some chargers leave out the empty details object; the error is still clear.
                if items.len() == 4 {
                    items.push(Value::Object(Map::new()));
                }
                if items.len() != 5 {
                    return Err(bad(format!("{} elements, a CALLERROR has 5", items.len())));
                }
                let details = items.pop().unwrap_or_default();
                let description = match items.pop() {
                    Some(Value::String(d)) => d,
                    other => {
                        return Err(bad(format!(
                            "the description is {}, not a string",
                            json_kind(&other.unwrap_or_default())
                        )))
                    }
                };
                let code = match items.pop() {
                    Some(Value::String(c)) => c
                        .parse()
                        .map_err(|e: UnknownErrorCode| bad(e.to_string()))?,
                    other => {
                        return Err(bad(format!(
                            "the error code is {}, not a string",
                            json_kind(&other.unwrap_or_default())
                        )))
                    }
                };
                Ok(Frame::CallError {
                    id,
                    code,
                    description,
                    details,
                })
            }
        }
    }

    /// The frame as the text of one WebSocket message.
    pub fn to_text(&self) -> String {
        match self {
            Frame::Call {
                id,
                action,
                payload,
            } => format!("[{CALL},{},{},{payload}]", quote(id), quote(action)),
            Frame::CallResult { id, payload } => format!("[{CALL_RESULT},{},{payload}]", quote(id)),
            Frame::CallError {
                id,
                code,
                description,
                details,
            } => format!(
                "[{CALL_ERROR},{},{},{},{details}]",
                quote(id),
                quote(code.as_str()),
                quote(description)
            ),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Frame::Call { id, .. } | Frame::CallResult { id, .. } | Frame::CallError { id, .. } => {
                id
            }
        }
    }

    /// A CALLERROR with empty details (OCPP-J 4.2.3 asks for `{}`, never a missing element) and
    /// the description cut to [`MAX_DESCRIPTION_CHARS`].
    pub fn call_error(id: impl Into<String>, code: ErrorCode, description: &str) -> Frame {
        Frame::CallError {
            id: id.into(),
            code,
            description: description.chars().take(MAX_DESCRIPTION_CHARS).collect(),
            details: Value::Object(Map::new()),
        }
    }
}

fn id_problem(id: &str) -> Option<String> {
    let n = id.chars().count();
    if n == 0 {
        Some("the message id is empty".into())
    } else if n > MAX_MESSAGE_ID_CHARS {
        Some(format!(
            "the message id has {n} characters, at most {MAX_MESSAGE_ID_CHARS}"
        ))
    } else {
        None
    }
}

/// `s` as a JSON string literal.
fn quote(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn bad_call(text: &str) -> (String, ErrorCode) {
        match Frame::parse(text) {
            Err(FrameError::BadCall { id, code, .. }) => (id, code),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn the_boot_notification_of_the_spec_is_a_call() {
        let f = Frame::parse(
            r#"[2, "19223201", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}]"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Call {
                id: "19223201".into(),
                action: "BootNotification".into(),
                payload: json!({"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}),
            }
        );
        assert_eq!(f.id(), "19223201");
    }

    #[test]
    fn replies_and_errors_are_read_as_chargers_send_them() {
        assert_eq!(
            Frame::parse(
                r#"[3,"19223201",{"status":"Accepted","currentTime":"2013-02-01T20:53:32.486Z","interval":300}]"#
            ),
            Ok(Frame::CallResult {
                id: "19223201".into(),
                payload: json!({"status":"Accepted","currentTime":"2013-02-01T20:53:32.486Z","interval":300}),
            })
        );
        assert_eq!(
            Frame::parse(
                r#"[4,"162376037","NotSupported","SetDisplayMessageRequest not implemented",{}]"#
            ),
            Ok(Frame::CallError {
                id: "162376037".into(),
                code: ErrorCode::NotSupported,
                description: "SetDisplayMessageRequest not implemented".into(),
                details: json!({}),
            })
        );
    }

    #[test]
    fn a_call_error_without_details_and_the_2x_spellings_are_understood() {
        assert_eq!(
            Frame::parse(r#"[4,"7","FormatViolation","bad"]"#),
            Ok(Frame::CallError {
                id: "7".into(),
                code: ErrorCode::FormationViolation,
                description: "bad".into(),
                details: json!({}),
            })
        );
        let Ok(Frame::CallError { code, .. }) =
            Frame::parse(r#"[4,"7","OccurrenceConstraintViolation","",{}]"#)
        else {
            panic!()
        };
        assert_eq!(code, ErrorCode::OccurenceConstraintViolation);
    }

    #[test]
    fn error_codes_are_written_as_the_1_6_spec_spells_them() {
        let written: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            written,
            [
                "NotImplemented",
                "NotSupported",
                "InternalError",
                "ProtocolError",
                "SecurityError",
                "FormationViolation",
                "PropertyConstraintViolation",
                "OccurenceConstraintViolation",
                "TypeConstraintViolation",
                "GenericError"
            ]
        );
        for c in ErrorCode::ALL {
            assert_eq!(c.to_string(), written[c as usize]);
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
            assert_eq!(
                serde_json::from_value::<ErrorCode>(json!(c.as_str())).unwrap(),
                c
            );
        }
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!("FormatViolation")).unwrap(),
            ErrorCode::FormationViolation
        );
        assert!("Oops".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn frames_are_written_compactly_in_the_order_of_the_spec() {
        let call = Frame::Call {
            id: "1".into(),
            action: "Reset".into(),
            payload: json!({"type": "Soft"}),
        };
        assert_eq!(call.to_text(), r#"[2,"1","Reset",{"type":"Soft"}]"#);
        let result = Frame::CallResult {
            id: "a\"b".into(),
            payload: json!({}),
        };
        assert_eq!(result.to_text(), r#"[3,"a\"b",{}]"#);
        let error = Frame::call_error(
            "x",
            ErrorCode::OccurenceConstraintViolation,
            "idTag: required",
        );
        assert_eq!(
            error.to_text(),
            r#"[4,"x","OccurenceConstraintViolation","idTag: required",{}]"#
        );
    }

    #[test]
    fn a_call_of_the_wrong_shape_is_answered_with_its_id_and_the_code_for_its_fault() {
        // Incomplete: a ProtocolError.
        assert_eq!(
            bad_call(r#"[2,"m1","Heartbeat"]"#),
            ("m1".into(), ErrorCode::ProtocolError)
        );
        assert_eq!(
            bad_call(r#"[2,"m2"]"#),
            ("m2".into(), ErrorCode::ProtocolError)
        );
        // Not the PDU structure: a FormationViolation.
        for (text, id) in [
            (r#"[2,"m3","Heartbeat",{},{}]"#, "m3"),
            (r#"[2,"m4",17,{}]"#, "m4"),
            (r#"[2,"m5","Heartbeat",[]]"#, "m5"),
            (r#"[2,"m6","Heartbeat",null]"#, "m6"),
            (r#"[2,"","Heartbeat",{}]"#, ""),
        ] {
            assert_eq!(
                bad_call(text),
                (id.to_string(), ErrorCode::FormationViolation),
                "{text}"
            );
        }
        let long = "x".repeat(37);
        let text = format!(r#"[2,"{long}","Heartbeat",{{}}]"#);
        assert_eq!(
            bad_call(&text),
            (long.clone(), ErrorCode::FormationViolation)
        );
        let e = Frame::parse(&text).unwrap_err();
        assert_eq!(e.id(), Some(long.as_str()));
        let Some(Frame::CallError {
            id,
            code,
            description,
            details,
        }) = e.answer()
        else {
            panic!("{e:?}")
        };
        assert_eq!((id, code), (long, ErrorCode::FormationViolation));
        assert!(description.contains("37 characters"), "{description}");
        assert_eq!(details, json!({}));
        // 36 characters is still an id.
        let ok = format!(r#"[2,"{}","Heartbeat",{{}}]"#, "y".repeat(36));
        assert!(Frame::parse(&ok).is_ok());
    }

    #[test]
    fn what_has_no_readable_id_or_type_is_never_answered() {
        for (text, expected) in [
            ("hello", "not JSON"),
            (r#"{"2":"x"}"#, "not a JSON array"),
            ("[]", "no known message type"),
            (r#"[5,"id","Heartbeat",{}]"#, "no known message type"),
            (r#"["2","id","Heartbeat",{}]"#, "no known message type"),
            (r#"[2.5,"id","Heartbeat",{}]"#, "no known message type"),
            ("[2]", "no message id"),
            (r#"[2,19223201,"Heartbeat",{}]"#, "no message id"),
        ] {
            let e = Frame::parse(text).unwrap_err();
            assert!(e.to_string().contains(expected), "{text}: {e}");
            assert_eq!(e.answer(), None, "{text}");
            assert_eq!(e.id(), None, "{text}");
        }
    }

    #[test]
    fn a_broken_reply_is_never_answered_but_names_the_call_it_belongs_to() {
        for text in [
            r#"[3,"r1"]"#,
            r#"[3,"r1",{},{}]"#,
            r#"[3,"r1","Accepted"]"#,
            r#"[4,"r1","Oops","",{}]"#,
            r#"[4,"r1",7,"",{}]"#,
            r#"[4,"r1","GenericError",null,{}]"#,
            r#"[4,"r1","GenericError"]"#,
        ] {
            let e = Frame::parse(text).unwrap_err();
            assert!(matches!(e, FrameError::BadReply { .. }), "{text}: {e:?}");
            assert_eq!(e.id(), Some("r1"), "{text}");
            assert_eq!(e.answer(), None, "{text}");
        }
    }

    #[test]
    fn a_frame_over_64_kib_is_refused_unread() {
        let text = format!(
            r#"[2,"1","DataTransfer",{{"vendorId":"{}"}}]"#,
            "v".repeat(70_000)
        );
        assert_eq!(
            Frame::parse(&text),
            Err(FrameError::TooLarge {
                size: text.len(),
                max: MAX_FRAME_BYTES
            })
        );
    }

    #[test]
    fn descriptions_of_our_errors_are_cut_for_the_chargers_buffers() {
        let Frame::CallError { description, .. } =
            Frame::call_error("1", ErrorCode::GenericError, &"é".repeat(1000))
        else {
            panic!()
        };
        assert_eq!(description.chars().count(), MAX_DESCRIPTION_CHARS);
    }

    #[test]
    fn hostile_ids_are_shortened_in_messages() {
        let text = format!(r#"[3,"{}"]"#, "z".repeat(10_000));
        let e = Frame::parse(&text).unwrap_err();
        assert!(e.to_string().len() < 120, "{e}");
    }

    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            any::<u64>().prop_map(|i| Value::Number(i.into())),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_object() -> impl Strategy<Value = Value> {
        proptest::collection::btree_map(".{0,8}", any_json(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn any_id() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 1..=MAX_MESSAGE_ID_CHARS)
            .prop_map(|c| c.into_iter().collect())
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any_id(), ".{0,30}", any_object()).prop_map(|(id, action, payload)| Frame::Call {
                id,
                action,
                payload
            }),
            (any_id(), any_object()).prop_map(|(id, payload)| Frame::CallResult { id, payload }),
            (
                any_id(),
                proptest::sample::select(ErrorCode::ALL.to_vec()),
                ".{0,40}",
                any_json()
            )
                .prop_map(|(id, code, description, details)| Frame::CallError {
                    id,
                    code,
                    description,
                    details
                }),
        ]
    }

    /// Arrays that look like frames, so that the checks past the first element are reached.
    fn frame_like() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(json!(2)), Just(json!(3)), Just(json!(4)), any_json()],
            proptest::collection::vec(
                prop_oneof![
                    any_json(),
                    Just(json!("Heartbeat")),
                    Just(json!("GenericError")),
                    Just(json!({}))
                ],
                0..6,
            ),
        )
            .prop_map(|(t, rest)| {
                let mut v = vec![t];
                v.extend(rest);
                Value::Array(v)
            })
    }

    proptest! {
        #[test]
        fn no_string_makes_the_parser_panic(text in ".{0,200}") {
            let _ = Frame::parse(&text);
        }

        #[test]
        fn no_json_makes_the_parser_panic(json in prop_oneof![any_json(), frame_like()]) {
            if let Err(e) = Frame::parse(&json.to_string()) {
                // Whatever is answered is a CALLERROR of five elements that carries the id read.
                if let Some(answer) = e.answer() {
                    prop_assert_eq!(Some(answer.id()), e.id());
                    let text: Value = serde_json::from_str(&answer.to_text()).unwrap();
                    prop_assert_eq!(text.as_array().map(Vec::len), Some(5));
                    prop_assert_eq!(&text[0], &json!(4));
                }
            }
        }

        #[test]
        fn every_frame_reads_back_as_itself(frame in any_frame()) {
            prop_assert_eq!(Frame::parse(&frame.to_text()), Ok(frame));
        }
    }
}
