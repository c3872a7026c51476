//! Registers to values and back: types, byte orders, BCD, strings, scale and offset.
//! Pure code; the simulator uses `encode` so that it speaks exactly what `decode` reads.

use thiserror::Error;

use crate::profile::{DataType, RegisterSpec, WordOrder};
use crate::reading::Value;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("expected {expected} registers, got {got}")]
    Length { expected: usize, got: usize },
    #[error("register {0:#06x} is not valid BCD")]
    Bcd(u16),
    #[error("not a finite number")]
    NotFinite,
    #[error("`number` is a JSON type, not a register type")]
    NotARegisterType,
}

/// The bytes of a value, most significant first, from registers as they arrived on the wire.
fn value_bytes(words: &[u16], order: WordOrder, words_swap: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(words.len() * 2);
    let mut push = |w: u16| {
        let [hi, lo] = w.to_be_bytes();
        if order.swaps_bytes() {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    };
    if words_swap && order.swaps_words() {
        words.iter().rev().copied().for_each(&mut push);
    } else {
        words.iter().copied().for_each(&mut push);
    }
    out
}

/// The inverse of [`value_bytes`]: registers to put on the wire for big-endian value bytes.
fn wire_words(bytes: &[u8], order: WordOrder, words_swap: bool) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], c.get(1).copied().unwrap_or(0));
            if order.swaps_bytes() {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if words_swap && order.swaps_words() {
        words.reverse();
    }
    words
}

/// The first N bytes; a spec whose length disagrees with its type is an error, not a panic.
fn array<const N: usize>(b: &[u8]) -> Result<[u8; N], DecodeError> {
    b.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::Length {
            expected: N / 2,
            got: b.len() / 2,
        })
}

/// The raw number a register value stands for, before scale and offset.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Raw {
    Int(i128),
    Float(f64),
}

fn raw_number(spec: &RegisterSpec, words: &[u16]) -> Result<Raw, DecodeError> {
    let b = value_bytes(words, spec.order, true);
    Ok(match spec.dtype {
        DataType::U16 => Raw::Int(u16::from_be_bytes(array(&b)?).into()),
        DataType::I16 => Raw::Int(i16::from_be_bytes(array(&b)?).into()),
        DataType::U32 => Raw::Int(u32::from_be_bytes(array(&b)?).into()),
        DataType::I32 => Raw::Int(i32::from_be_bytes(array(&b)?).into()),
        DataType::U64 => Raw::Int(u64::from_be_bytes(array(&b)?).into()),
        DataType::I64 => Raw::Int(i64::from_be_bytes(array(&b)?).into()),
        DataType::F32 => Raw::Float(f32_as_decimal(f32::from_be_bytes(array(&b)?))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(array(&b)?)),
        DataType::Bcd => {
            let mut n: i128 = 0;
            for (i, pair) in b.chunks(2).enumerate() {
                let w = u16::from_be_bytes([pair[0], pair[1]]);
                for shift in [12, 8, 4, 0] {
                    let digit = (w >> shift) & 0xF;
                    if digit > 9 {
                        return Err(DecodeError::Bcd(words.get(i).copied().unwrap_or(w)));
                    }
                    n = n * 10 + i128::from(digit);
                }
            }
            Raw::Int(n)
        }
        // `decode` handles these before it asks for a number.
        DataType::Bool | DataType::String => Raw::Int(0),
        DataType::Number => return Err(DecodeError::NotARegisterType),
    })
}

/// A meter that sends 229.8 as f32 means 229.8, not 229.8000030517578: widen through the
/// shortest decimal that round-trips the f32.
fn f32_as_decimal(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(f64::from(x))
    } else {
        f64::from(x)
    }
}

/// Decodes a point from exactly its registers.
pub fn decode(spec: &RegisterSpec, words: &[u16]) -> Result<Value, DecodeError> {
    let expected = usize::from(spec.length);
    if words.len() != expected {
        return Err(DecodeError::Length {
            expected,
            got: words.len(),
        });
    }
    match spec.dtype {
        DataType::Bool => {
            let w = if spec.order.swaps_bytes() {
                words[0].swap_bytes()
            } else {
                words[0]
            };
            Ok(Value::Bool(match spec.bit {
                Some(bit) => (w >> bit) & 1 == 1,
                None => w != 0,
            }))
        }
        DataType::String => {
            let bytes = value_bytes(words, spec.order, false);
            let text = String::from_utf8_lossy(&bytes);
            Ok(Value::Text(
                text.trim_end_matches(['\0', ' ']).trim_start().to_string(),
            ))
        }
        _ => {
            let raw = raw_number(spec, words)?;
            if let (Some(values), Raw::Int(n)) = (&spec.values, raw) {
                if let Some(label) = i64::try_from(n).ok().and_then(|n| values.get(&n)) {
                    return Ok(Value::Text(label.clone()));
                }
            }
            let x = match raw {
                Raw::Int(n) => n as f64,
                Raw::Float(f) => f,
            };
            let v = x * spec.scale + spec.offset;
            if v.is_finite() {
                Ok(Value::Number(v))
            } else {
                Err(DecodeError::NotFinite)
            }
        }
    }
}

/// Decodes a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Registers that make `decode` return `value` (numbers are unscaled first). Used by the
/// simulator and tests; integer types round and saturate.
pub fn encode(spec: &RegisterSpec, value: &Value) -> Vec<u16> {
    let len = usize::from(spec.length);
    match (spec.dtype, value) {
        (DataType::String, v) => {
            let text = match v {
                Value::Text(s) => s.clone(),
                other => other.to_string(),
            };
            let mut bytes = text.into_bytes();
            bytes.resize(len * 2, 0);
            wire_words(&bytes, spec.order, false)
        }
        (DataType::Bool, v) => {
            let on = v.as_f64().is_some_and(|x| x != 0.0);
            let w: u16 = match spec.bit {
                Some(bit) => u16::from(on) << bit,
                None => u16::from(on),
            };
            vec![if spec.order.swaps_bytes() {
                w.swap_bytes()
            } else {
                w
            }]
        }
        (dtype, v) => {
            let label_code = match v {
                Value::Text(label) => spec
                    .values
                    .iter()
                    .flatten()
                    .find(|(_, l)| *l == label)
                    .map(|(k, _)| *k as f64),
                _ => None,
            };
            let x = label_code
                .or_else(|| v.as_f64().map(|e| (e - spec.offset) / spec.scale))
                .unwrap_or(0.0);
            let bytes: Vec<u8> = match dtype {
                DataType::U16 => (x.round().clamp(0.0, u16::MAX as f64) as u16)
                    .to_be_bytes()
                    .to_vec(),
                DataType::I16 => (x.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16)
                    .to_be_bytes()
                    .to_vec(),
                DataType::U32 => (x.round().clamp(0.0, u32::MAX as f64) as u32)
                    .to_be_bytes()
                    .to_vec(),
                DataType::I32 => (x.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                    .to_be_bytes()
                    .to_vec(),
                DataType::U64 => (x.round().max(0.0) as u64).to_be_bytes().to_vec(),
                DataType::I64 => (x.round() as i64).to_be_bytes().to_vec(),
                DataType::F32 => (x as f32).to_be_bytes().to_vec(),
                DataType::F64 => x.to_be_bytes().to_vec(),
                DataType::Bcd => {
                    // Saturate at all nines as the other integer types saturate: a value past
                    // the digits must not wrap to a small one (1e16 in four registers was 0).
                    let most = u32::try_from(len * 4)
                        .ok()
                        .and_then(|d| 10u128.checked_pow(d))
                        .map_or(u128::MAX, |p| p - 1);
                    let mut n = (x.round().max(0.0) as u128).min(most);
                    let mut digits = vec![0u8; len * 4];
                    for d in digits.iter_mut().rev() {
                        *d = (n % 10) as u8;
                        n /= 10;
                    }
                    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
                }
                DataType::Bool | DataType::String | DataType::Number => vec![0; len * 2],
            };
            wire_words(&bytes, spec.order, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Function;
    use proptest::prelude::*;

    fn spec(dtype: DataType, order: WordOrder) -> RegisterSpec {
        RegisterSpec {
            function: Function::Holding,
            address: 0,
            dtype,
            order,
            length: dtype.default_registers(),
            bit: None,
            scale: 1.0,
            offset: 0.0,
            values: None,
        }
    }

    fn num(v: Result<Value, DecodeError>) -> f64 {
        match v {
            Ok(Value::Number(n)) => n,
            other => panic!("not a number: {other:?}"),
        }
    }

    #[test]
    fn tuf2000m_floats_arrive_low_word_first() {
        // meters.md: registers 0x806B, 0x4212 → 0x4212806B (≈ 36.6254; the manual rounds it to 36.625)
        let v = num(decode(
            &spec(DataType::F32, WordOrder::CDAB),
            &[0x806B, 0x4212],
        ));
        assert_eq!(v as f32, f32::from_bits(0x4212_806B));
        assert!((v - 36.625).abs() < 0.001);
    }

    #[test]
    fn xintai_floats_are_fully_little_endian() {
        // meters.md: bytes 1E 85 0B 3F = 0.545
        let v = num(decode(
            &spec(DataType::F32, WordOrder::DCBA),
            &[0x1E85, 0x0B3F],
        ));
        assert!((v - 0.545).abs() < 1e-6, "{v}");
    }

    #[test]
    fn every_order_of_a_32_bit_integer() {
        let value = 0x0102_0304u32 as f64;
        let cases = [
            (WordOrder::ABCD, [0x0102, 0x0304]),
            (WordOrder::CDAB, [0x0304, 0x0102]),
            (WordOrder::BADC, [0x0201, 0x0403]),
            (WordOrder::DCBA, [0x0403, 0x0201]),
        ];
        for (order, words) in cases {
            assert_eq!(
                num(decode(&spec(DataType::U32, order), &words)),
                value,
                "{order}"
            );
            assert_eq!(
                encode(&spec(DataType::U32, order), &Value::Number(value)),
                words,
                "{order}"
            );
        }
    }

    #[test]
    fn sixty_four_bit_word_swap_reverses_all_four_words() {
        let words = [0x0004, 0x0003, 0x0002, 0x0001];
        let v = num(decode(&spec(DataType::U64, WordOrder::CDAB), &words));
        assert_eq!(v, 0x0001_0002_0003_0004u64 as f64);
    }

    #[test]
    fn signed_values_and_scale_and_offset() {
        let mut s = spec(DataType::I16, WordOrder::ABCD);
        s.scale = 0.1;
        s.offset = -40.0;
        assert!((num(decode(&s, &[0xFFF6])) - (-41.0)).abs() < 1e-9);
        let mut s = spec(DataType::I32, WordOrder::ABCD);
        s.scale = 0.01;
        assert!((num(decode(&s, &[0xFFFF, 0xFF9C])) - (-1.0)).abs() < 1e-9);
    }

    #[test]
    fn bcd_reads_decimal_digits_and_rejects_hex_ones() {
        let mut s = spec(DataType::Bcd, WordOrder::ABCD);
        assert_eq!(num(decode(&s, &[0x1234])), 1234.0);
        assert_eq!(decode(&s, &[0x12A4]), Err(DecodeError::Bcd(0x12A4)));
        s.length = 2;
        assert_eq!(num(decode(&s, &[0x0012, 0x3456])), 123456.0);
    }

    #[test]
    fn strings_trim_padding_and_honour_byte_swap() {
        let mut s = spec(DataType::String, WordOrder::ABCD);
        s.length = 4;
        assert_eq!(
            decode(&s, &[0x5344, 0x4D31, 0x3230, 0x0000]),
            Ok(Value::Text("SDM120".into()))
        );
        s.order = WordOrder::BADC;
        assert_eq!(
            decode(&s, &[0x4453, 0x314D, 0x3032, 0x0000]),
            Ok(Value::Text("SDM120".into()))
        );
    }

    #[test]
    fn bools_from_registers_use_the_named_bit() {
        let mut s = spec(DataType::Bool, WordOrder::ABCD);
        assert_eq!(decode(&s, &[0x0000]), Ok(Value::Bool(false)));
        assert_eq!(decode(&s, &[0x0100]), Ok(Value::Bool(true)));
        s.bit = Some(3);
        assert_eq!(decode(&s, &[0x0008]), Ok(Value::Bool(true)));
        assert_eq!(decode(&s, &[0x0007]), Ok(Value::Bool(false)));
    }

    #[test]
    fn enumerations_become_their_labels() {
        let mut s = spec(DataType::U16, WordOrder::ABCD);
        s.values = Some([(0x55, "empty".to_string()), (0xAA, "full".to_string())].into());
        assert_eq!(decode(&s, &[0x55]), Ok(Value::Text("empty".into())));
        assert_eq!(decode(&s, &[0x01]), Ok(Value::Number(1.0)));
        assert_eq!(encode(&s, &Value::Text("full".into())), vec![0xAA]);
    }

    #[test]
    fn a_wrong_number_of_registers_is_an_error_not_a_panic() {
        let s = spec(DataType::F64, WordOrder::ABCD);
        assert_eq!(
            decode(&s, &[1, 2]),
            Err(DecodeError::Length {
                expected: 4,
                got: 2
            })
        );
    }

    #[test]
    fn a_bcd_value_past_its_digits_saturates_rather_than_wrapping_to_zero() {
        // Found by the modbus_reply fuzz target: 9999999999999999 reads as 1e16 (the nearest
        // f64), which encoded as 1 followed by 16 zeros, cut to the 16 zeros.
        let mut s = spec(DataType::Bcd, WordOrder::CDAB);
        s.length = 4;
        let nines = [0x9999; 4];
        let x = num(decode(&s, &nines));
        assert_eq!(x, 1e16);
        assert_eq!(encode(&s, &Value::Number(x)), nines);
        s.length = 1;
        assert_eq!(encode(&s, &Value::Number(12_345.0)), [0x9999]);
        assert_eq!(encode(&s, &Value::Number(-3.0)), [0x0000]);
    }

    #[test]
    fn a_nan_float_is_refused() {
        let s = spec(DataType::F32, WordOrder::ABCD);
        assert_eq!(decode(&s, &[0x7FC0, 0x0000]), Err(DecodeError::NotFinite));
    }

    fn any_order() -> impl Strategy<Value = WordOrder> {
        prop_oneof![
            Just(WordOrder::ABCD),
            Just(WordOrder::CDAB),
            Just(WordOrder::BADC),
            Just(WordOrder::DCBA)
        ]
    }

    fn any_numeric_type() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::U16),
            Just(DataType::I16),
            Just(DataType::U32),
            Just(DataType::I32),
            Just(DataType::U64),
            Just(DataType::I64),
            Just(DataType::F32),
            Just(DataType::F64),
            Just(DataType::Bcd),
        ]
    }

    proptest! {
        #[test]
        fn decoding_never_panics_on_any_registers(
            dtype in any_numeric_type(), order in any_order(),
            words in proptest::collection::vec(any::<u16>(), 0..6),
        ) {
            let _ = decode(&spec(dtype, order), &words);
        }

        #[test]
        fn a_spec_whose_length_disagrees_with_its_type_never_panics(
            dtype in any_numeric_type(), order in any_order(), len in 1u16..6,
        ) {
            let mut s = spec(dtype, order);
            s.length = len;
            let _ = decode(&s, &vec![0xABCD; usize::from(len)]);
        }

        #[test]
        fn encode_then_decode_gives_the_value_back(
            dtype in any_numeric_type(), order in any_order(), x in -16000i32..16000i32,
        ) {
            // within each type's range at scale 0.5 (one BCD register holds 0..=9999)
            let x = match dtype {
                DataType::Bcd => f64::from(x.abs() % 4999),
                DataType::U16 | DataType::U32 | DataType::U64 => f64::from(x.abs()),
                _ => f64::from(x),
            };
            let mut s = spec(dtype, order);
            s.scale = 0.5;
            let words = encode(&s, &Value::Number(x));
            prop_assert_eq!(words.len(), usize::from(s.length));
            let back = num(decode(&s, &words));
            prop_assert!((back - x).abs() <= 0.5, "{} -> {:?} -> {}", x, words, back);
        }
    }
}
