//! DL/T 645-2007 electricity meters: the Chinese national protocol of multi-function meters on
//! RS-485 (2400 baud 8E1 by default), one master polling meters by their 12-digit address.
//!
//! A request is `FE FE FE FE` (wake-ups), `68`, the address (6 BCD bytes, low first), `68`, a
//! control byte (0x11 read, 0x13 read address), a length, the data (a 4-byte data identifier
//! for a read, every byte +0x33), a checksum and `16`. A meter answers the same way with the
//! direction bit set (0x91 data, 0xD1 refusal, 0x93 address).
//!
//! The facts (frame layout, control codes, data identifiers and their formats, the example
//! request and reply) are those of `shared/reference/meters.md`, section "DL/T 645-2007", whose
//! sources are bobyuxinyang/dlt645_2007 `dlt645_api_07.c` and the ESPHome DLT645 component's
//! README. Two things are not in that file and come from the standard's notes as quoted by
//! public implementations (meter firmware headers, HslCommunication's error texts), not yet
//! checked against a meter here: the meaning of each bit of the 0xD1 error byte, and the sign
//! of current, power and power factor (the top bit of the most significant byte, 0 positive,
//! 1 negative, the other bits the magnitude's BCD digits: sign and magnitude, not two's
//! complement). Energy, voltage and frequency are unsigned, so an 8 or 9 on top is a digit.
//!
//! [`frame`] is pure (addresses, encoding, finding frames in a dirty receive buffer, values);
//! [`sim`] is a simulated line of meters for tests and the demo.

pub mod frame;
pub mod poller;
pub mod sim;
