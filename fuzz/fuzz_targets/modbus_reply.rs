//! The registers of a Modbus reply, as any meter may send them, through the decoder of every
//! register type and byte order a profile can name.
//!
//! Input: type, order, length, bit selector, then the registers (big-endian pairs) and, after
//! them, a scale and an offset for a second, scaled decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkhub::modbus::decode::{decode, encode, DecodeError};
use parkhub::profile::{DataType, Function, RegisterSpec, WordOrder};
use parkhub::reading::Value;

const TYPES: [DataType; 11] = [
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::Bcd,
    DataType::Bool,
    DataType::String,
];
const ORDERS: [WordOrder; 4] = [
    WordOrder::ABCD,
    WordOrder::CDAB,
    WordOrder::BADC,
    WordOrder::DCBA,
];

/// Below this an f64 holds every integer exactly, so an integer register round-trips.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn words_of(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

fn f64_of(bytes: &[u8]) -> Option<f64> {
    Some(f64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fuzz_target!(|data: &[u8]| {
    let [t, o, l, b, rest @ ..] = data else {
        return;
    };
    let dtype = TYPES[usize::from(*t) % TYPES.len()];
    // Within what the profile loader lets through (bcd 1..=4, a string up to one read, bit
    // 0..=15); a length the type disagrees with must still be an error, never a panic.
    let length = match dtype {
        DataType::Bcd => 1 + u16::from(*l % 4),
        DataType::String => 1 + u16::from(*l % 125),
        other if *l >= 0xF0 => u16::from(*l - 0xEF)
            .min(8)
            .max(other.default_registers() + 1),
        other => other.default_registers(),
    };
    let bit = (dtype == DataType::Bool && b & 0x80 != 0).then_some(b & 0x0F);
    let mut spec = RegisterSpec {
        function: Function::Holding,
        address: 0,
        dtype,
        order: ORDERS[usize::from(*o) % ORDERS.len()],
        length,
        bit,
        scale: 1.0,
        offset: 0.0,
        values: None,
    };
    let n = usize::from(length) * 2;
    let (reg_bytes, tail) = rest.split_at(rest.len().min(n));
    let words = words_of(reg_bytes);
    let got = decode(&spec, &words);
    if words.len() != usize::from(length) {
        assert!(matches!(got, Err(DecodeError::Length { .. })), "{got:?}");
        return;
    }
    if length != expected_length(dtype, length) {
        // The loader refuses such a spec; decoding it must still end in a value or an error.
        if let Ok(Value::Number(x)) = got {
            assert!(x.is_finite());
        }
        return;
    }
    match &got {
        Ok(Value::Number(x)) => {
            assert!(x.is_finite());
            let back = encode(&spec, &Value::Number(*x));
            assert_eq!(back.len(), words.len());
            // -0.0 comes out as 0.0 (the offset is added), and an f32 is widened through
            // its shortest decimal: those give the value back, not the same bits.
            let exact = match dtype {
                DataType::F32 => false,
                DataType::F64 => *x != 0.0,
                _ => x.abs() < EXACT,
            };
            if exact {
                assert_eq!(back, words, "{spec:?}: {x}");
            }
            assert_eq!(
                decode(&spec, &back),
                Ok(Value::Number(*x)),
                "{spec:?}: {back:?}"
            );
        }
        Ok(Value::Bool(on)) => {
            assert_eq!(dtype, DataType::Bool);
            let back = encode(&spec, &Value::Bool(*on));
            assert_eq!(decode(&spec, &back), Ok(Value::Bool(*on)));
        }
        Ok(Value::Text(s)) => {
            assert_eq!(dtype, DataType::String);
            assert!(!s.ends_with(['\0', ' ']) && s.trim_start() == s);
            if s.len() <= n {
                let back = encode(&spec, &Value::Text(s.clone()));
                assert_eq!(decode(&spec, &back), Ok(Value::Text(s.clone())));
            }
        }
        Err(DecodeError::Bcd(_)) => assert_eq!(dtype, DataType::Bcd),
        Err(DecodeError::NotFinite) => assert!(matches!(dtype, DataType::F32 | DataType::F64)),
        Err(DecodeError::Length { .. }) => panic!("{spec:?} refused {words:?} by length"),
        Err(DecodeError::NotARegisterType) => panic!("{dtype:?} is a register type"),
    }

    // Any scale and offset a profile may hold: a number comes out finite or not at all.
    if let (Some(scale), Some(offset)) = (f64_of(tail), tail.get(8..).and_then(f64_of)) {
        spec.scale = scale;
        spec.offset = offset;
        if let Ok(Value::Number(x)) = decode(&spec, &words) {
            assert!(x.is_finite());
        }
        let _ = encode(&spec, &Value::Number(scale));
    }
});

/// The registers a value of `dtype` spans, `length` where the type leaves it open.
fn expected_length(dtype: DataType, length: u16) -> u16 {
    match dtype {
        DataType::Bcd | DataType::String => length,
        other => other.default_registers(),
    }
}
