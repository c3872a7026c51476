//! DL/T 645-2007 frames and values: meter addresses, requests, finding replies in what a
//! half-duplex RS-485 line delivered, and the data identifiers the hub reads. Pure code, no I/O;
//! the simulator encodes with the same functions, so the byte-exact vectors in the tests are
//! written out by hand from `meters.md` rather than produced by this code.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// What a master sends before a frame: the meters' UARTs wake on the first bytes and may lose
/// them, and FE can never be mistaken for a frame start.
pub const WAKE_UP: [u8; 4] = [0xFE; 4];
/// Added to every data byte on the wire (and taken off on reception), so that a data field of
/// zeros does not look like an idle line.
pub const DATA_OFFSET: u8 = 0x33;
/// The standard caps a read reply's data field at 200 bytes; a length byte above it is a
/// misread start, not a frame to wait for.
pub const MAX_DATA: usize = 200;

const START: u8 = 0x68;
const END: u8 = 0x16;
const WAKE: u8 = 0xFE;
/// 68, six address bytes, 68, control, length.
const HEADER: usize = 10;
/// The header, the checksum and the end byte.
const OVERHEAD: usize = HEADER + 2;
/// Wake-ups kept while nothing follows them; more are noise (a line idling at FE).
const MAX_IDLE_WAKE_UPS: usize = 8;

/// A meter's address: 12 decimal digits as printed on its nameplate, six BCD bytes on the wire,
/// low byte first. Held as the wire bytes, because a frame from the line may carry any bytes
/// (the broadcast AA×6 is not BCD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; 6]);

impl Address {
    /// AA×6: every meter on the line. Only meaningful with one meter on it.
    pub const BROADCAST: Address = Address([0xAA; 6]);

    /// An address from its wire bytes (low byte first).
    pub const fn from_wire(bytes: [u8; 6]) -> Self {
        Address(bytes)
    }

    /// The wire bytes, low byte first: 000000001234 → 34 12 00 00 00 00.
    pub const fn wire(self) -> [u8; 6] {
        self.0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("a DL/T 645 meter address has 12 digits, this one has {0}")]
    Length(usize),
    #[error("a DL/T 645 meter address is decimal digits only, found {0:?}")]
    NotADigit(char),
}

impl FromStr for Address {
    type Err = AddressError;

    /// The 12 digits installers write, e.g. `000000001234`; surrounding spaces are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(c) = s.chars().find(|c| !c.is_ascii_digit()) {
            return Err(AddressError::NotADigit(c));
        }
        // ASCII digits only from here, so bytes are characters.
        let digits = s.as_bytes();
        if digits.len() != 12 {
            return Err(AddressError::Length(digits.len()));
        }
        let mut wire = [0u8; 6];
        for (byte, pair) in wire.iter_mut().zip(digits.rchunks(2)) {
            if let [hi, lo] = pair {
                *byte = ((hi - b'0') << 4) | (lo - b'0');
            }
        }
        Ok(Address(wire))
    }
}

impl fmt::Display for Address {
    /// The 12 digits, most significant first; bytes that are not BCD show as hex (AAAAAAAAAAAA).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().rev().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

/// The control byte. Bit 7 is the direction (set on what a meter sends), bit 6 an error reply,
/// bit 5 "more frames follow", bits 0–4 the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Control(pub u8);

impl Control {
    /// Broadcast time sync; meters never answer it.
    pub const BROADCAST_TIME: Control = Control(0x08);
    pub const READ: Control = Control(0x11);
    pub const READ_REPLY: Control = Control(0x91);
    pub const READ_ERROR: Control = Control(0xD1);
    pub const READ_ADDRESS: Control = Control(0x13);
    pub const READ_ADDRESS_REPLY: Control = Control(0x93);

    /// Sent by a meter (direction bit set), as opposed to a request from a master.
    pub fn is_reply(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// A meter's refusal of the request.
    pub fn is_error(self) -> bool {
        self.0 & 0x40 != 0
    }

    /// More frames of this reply follow.
    pub fn has_more(self) -> bool {
        self.0 & 0x20 != 0
    }

    /// The function (0x11 read, 0x13 read address, …) without the reply bits.
    pub fn function(self) -> u8 {
        self.0 & 0x1F
    }

    /// The error reply to a request of this function.
    pub fn error_reply(self) -> Control {
        Control(0xC0 | self.function())
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// One frame, its data already stripped of the +0x33.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub address: Address,
    pub control: Control,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a DL/T 645 data field holds at most {MAX_DATA} bytes, this one {0}")]
pub struct TooLong(pub usize);

impl Frame {
    /// A read of data identifier `di` (e.g. `0x0001_0000`) from `address`.
    pub fn read(address: Address, di: u32) -> Frame {
        Frame {
            address,
            control: Control::READ,
            data: di.to_le_bytes().to_vec(),
        }
    }

    /// "Who are you?" to AA×6; only meaningful with one meter on the line.
    pub fn read_address() -> Frame {
        Frame {
            address: Address::BROADCAST,
            control: Control::READ_ADDRESS,
            data: Vec::new(),
        }
    }

    /// The frame's bytes from the first 68 to the 16, without wake-ups.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TooLong> {
        self.check_len()?;
        let mut out = Vec::with_capacity(OVERHEAD + self.data.len());
        push_frame(&mut out, self.address, self.control, &self.data);
        Ok(out)
    }

    /// The bytes to send: wake-ups, then the frame.
    pub fn to_wire(&self) -> Result<Vec<u8>, TooLong> {
        self.check_len()?;
        let mut out = Vec::with_capacity(WAKE_UP.len() + OVERHEAD + self.data.len());
        out.extend(WAKE_UP);
        push_frame(&mut out, self.address, self.control, &self.data);
        Ok(out)
    }

    fn check_len(&self) -> Result<(), TooLong> {
        if self.data.len() > MAX_DATA {
            return Err(TooLong(self.data.len()));
        }
        Ok(())
    }

    /// What the frame says, for a master that sent a read or a read-address request.
    pub fn reply(&self) -> Result<Reply, ReplyError> {
        let address = self.address;
        if !self.control.is_reply() {
            // Our own request, echoed by a half-duplex adapter (or another master's).
            return Ok(Reply::Echo(self.clone()));
        }
        match self.control {
            Control::READ_REPLY => match self.data.as_slice() {
                [d0, d1, d2, d3, payload @ ..] => Ok(Reply::Data {
                    address,
                    di: u32::from_le_bytes([*d0, *d1, *d2, *d3]),
                    payload: payload.to_vec(),
                }),
                short => Err(ReplyError::NoDataId(short.len())),
            },
            Control::READ_ERROR => match self.data.first() {
                Some(code) => Ok(Reply::Error {
                    address,
                    code: ErrorCode(*code),
                }),
                None => Err(ReplyError::NoErrorCode),
            },
            Control::READ_ADDRESS_REPLY => match <[u8; 6]>::try_from(self.data.as_slice()) {
                Ok(wire) => Ok(Reply::Address(Address(wire))),
                Err(_) => Err(ReplyError::AddressLength(self.data.len())),
            },
            other => Err(ReplyError::Unexpected(other)),
        }
    }
}

/// Appends one frame. `data` longer than the standard allows is cut, which no caller here
/// reaches: the public encoders check it first, the request builders send at most four bytes.
fn push_frame(out: &mut Vec<u8>, address: Address, control: Control, data: &[u8]) {
    let data = &data[..data.len().min(MAX_DATA)];
    let start = out.len();
    out.push(START);
    out.extend(address.0);
    out.push(START);
    out.push(control.0);
    out.push(u8::try_from(data.len()).unwrap_or(0));
    out.extend(data.iter().map(|b| b.wrapping_add(DATA_OFFSET)));
    let cs = checksum(&out[start..]);
    out.extend([cs, END]);
}

/// The sum of the bytes, mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// The bytes to send to read data identifier `di` from `address`: wake-ups, then the frame.
/// `68 34 12 00 00 00 00 68 11 04 33 33 34 33 F8 16` reads 00010000 from 000000001234.
pub fn read_request(address: Address, di: u32) -> Vec<u8> {
    let mut out = WAKE_UP.to_vec();
    push_frame(&mut out, address, Control::READ, &di.to_le_bytes());
    out
}

/// The bytes to send to ask the only meter on the line for its address.
pub fn read_address_request() -> Vec<u8> {
    let mut out = WAKE_UP.to_vec();
    push_frame(&mut out, Address::BROADCAST, Control::READ_ADDRESS, &[]);
    out
}

/// What [`scan`] found at the front of a receive buffer (the shape every raw meter protocol's
/// scanner shares with the line that reads it).
pub type Scan = crate::modbus::raw::Scan<Frame>;
pub use crate::modbus::raw::Reject;

/// Looks at the front of a receive buffer. The caller drops what it is told and calls again
/// until [`Scan::NeedMore`]; every answer but `NeedMore` drops at least one byte, so that loop
/// always ends:
///
/// ```
/// # use parkhub::dlt645::frame::{scan, Scan};
/// # let mut buf: Vec<u8> = vec![0x00, 0xFE, 0x68];
/// loop {
///     match scan(&buf) {
///         Scan::Frame { frame, consumed } => {
///             buf.drain(..consumed);
///             // handle `frame`
///         }
///         Scan::Skip { len, reason } => {
///             buf.drain(..len);
///             // count `reason`
///         }
///         Scan::NeedMore => break,
///     }
/// }
/// ```
///
/// Noise before a frame is reported on its own (`Skip` with [`Reject::Noise`]), so that it is
/// counted; the frame after it comes with the next call. A rejected frame start is dropped up
/// to the next place a frame could start, never beyond it, so a good frame behind a broken one
/// is still found.
pub fn scan(buf: &[u8]) -> Scan {
    let Some(s) = (0..buf.len()).find(|&p| starts_at(buf, p)) else {
        // No frame start: keep a few trailing wake-ups for the frame they may announce.
        let keep = wake_ups_before(buf, buf.len(), 0).min(MAX_IDLE_WAKE_UPS);
        return if keep == buf.len() {
            Scan::NeedMore
        } else {
            Scan::Skip {
                len: buf.len() - keep,
                reason: Reject::Noise,
            }
        };
    };
    let noise = s - wake_ups_before(buf, s, 0);
    if noise > 0 {
        return Scan::Skip {
            len: noise,
            reason: Reject::Noise,
        };
    }
    match candidate(buf, s) {
        Candidate::Good { frame, end } => Scan::Frame {
            frame,
            consumed: end,
        },
        Candidate::Incomplete => match valid_frame_after(buf, s, buf.len()) {
            Some(p) => Scan::Skip {
                len: p,
                reason: Reject::Truncated,
            },
            None => Scan::NeedMore,
        },
        Candidate::TooLong => Scan::Skip {
            len: next_start_after(buf, s, buf.len()),
            reason: Reject::TooLong,
        },
        Candidate::Bad { reason, end } => match valid_frame_after(buf, s, end) {
            Some(p) => Scan::Skip {
                len: p,
                reason: Reject::Truncated,
            },
            None => Scan::Skip {
                len: next_start_after(buf, s, end),
                reason,
            },
        },
    }
}

/// A 68 with (as far as the buffer tells) the second 68 seven bytes later.
fn starts_at(buf: &[u8], p: usize) -> bool {
    buf.get(p) == Some(&START) && buf.get(p + 7).is_none_or(|b| *b == START)
}

/// How many FE bytes end at `end`, not looking before `floor`.
fn wake_ups_before(buf: &[u8], end: usize, floor: usize) -> usize {
    buf.get(floor..end)
        .map_or(0, |b| b.iter().rev().take_while(|b| **b == WAKE).count())
}

/// Where the skip after a rejected start at `s` ends: at the wake-ups of the next frame start
/// before `limit`, or at `limit` (the rejected frame's end, or the buffer's). Always > `s`.
fn next_start_after(buf: &[u8], s: usize, limit: usize) -> usize {
    let limit = limit.min(buf.len()).max(s + 1);
    match (s + 1..limit).find(|&p| starts_at(buf, p)) {
        Some(p) => p - wake_ups_before(buf, p, s + 1),
        None => limit,
    }
}

/// Where a complete, valid frame starting after `s` and before `limit` begins, with its
/// wake-ups; `None` when there is none. Always > `s`.
fn valid_frame_after(buf: &[u8], s: usize, limit: usize) -> Option<usize> {
    let limit = limit.min(buf.len());
    (s + 1..limit)
        .find(|&p| starts_at(buf, p) && matches!(candidate(buf, p), Candidate::Good { .. }))
        .map(|p| p - wake_ups_before(buf, p, s + 1))
}

enum Candidate {
    Incomplete,
    /// A length byte above the standard's cap: nothing to wait for, and no end to look within.
    TooLong,
    /// `end` is where the frame ends by its length byte.
    Bad {
        reason: Reject,
        end: usize,
    },
    Good {
        frame: Frame,
        end: usize,
    },
}

/// The frame that starts at `s` (where [`starts_at`] holds), as far as the buffer tells.
fn candidate(buf: &[u8], s: usize) -> Candidate {
    let Some(&len_byte) = buf.get(s + HEADER - 1) else {
        return Candidate::Incomplete;
    };
    let len = usize::from(len_byte);
    if len > MAX_DATA {
        return Candidate::TooLong;
    }
    let end = s + OVERHEAD + len;
    let Some(bytes) = buf.get(s..end) else {
        return Candidate::Incomplete;
    };
    let (body, tail) = bytes.split_at(HEADER + len);
    // `bytes` is exactly the frame, so the tail is the checksum and the end byte and the body
    // holds the header; the patterns cannot miss.
    let (&[cs, end_byte], [_, a0, a1, a2, a3, a4, a5, _, control, _, data @ ..]) = (tail, body)
    else {
        return Candidate::Incomplete;
    };
    if end_byte != END {
        return Candidate::Bad {
            reason: Reject::BadEnd,
            end,
        };
    }
    if cs != checksum(body) {
        return Candidate::Bad {
            reason: Reject::BadChecksum,
            end,
        };
    }
    Candidate::Good {
        frame: Frame {
            address: Address([*a0, *a1, *a2, *a3, *a4, *a5]),
            control: Control(*control),
            data: data.iter().map(|b| b.wrapping_sub(DATA_OFFSET)).collect(),
        },
        end,
    }
}

/// A meter's refusal: bit flags of the error byte of a 0xD1 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    pub const OTHER: ErrorCode = ErrorCode(0x01);
    /// The meter has no such data identifier (the common one: asking a single-phase meter for
    /// phase B).
    pub const NO_DATA: ErrorCode = ErrorCode(0x02);
    pub const PASSWORD: ErrorCode = ErrorCode(0x04);
    pub const BAUD_RATE: ErrorCode = ErrorCode(0x08);
    pub const YEAR_ZONES: ErrorCode = ErrorCode(0x10);
    pub const DAY_PERIODS: ErrorCode = ErrorCode(0x20);
    pub const TARIFFS: ErrorCode = ErrorCode(0x40);

    const NAMES: [&'static str; 8] = [
        "other error",
        "no data requested",
        "wrong password or unauthorised",
        "communication rate cannot be changed",
        "too many year time zones",
        "too many daily time periods",
        "too many tariffs",
        "reserved bit 7",
    ];

    pub fn contains(self, flag: ErrorCode) -> bool {
        flag.0 != 0 && self.0 & flag.0 == flag.0
    }

    /// The meaning of each bit set, lowest first.
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| name)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("no reason given");
        }
        for (i, reason) in self.reasons().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(reason)?;
        }
        Ok(())
    }
}

/// What a frame means to a master reading meters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The value of `di`; `payload` is what follows the identifier, still BCD (see
    /// [`decode_value`]).
    Data {
        address: Address,
        di: u32,
        payload: Vec<u8>,
    },
    /// The meter refused the read.
    Error { address: Address, code: ErrorCode },
    /// The answer to [`read_address_request`].
    Address(Address),
    /// A request, not a reply: our own, echoed by a half-duplex adapter. Ignore it and read on.
    Echo(Frame),
}

impl Reply {
    /// Who sent it. A reply from another meter than the one asked is the caller's to judge
    /// (a late reply to an earlier request, a second master on the line).
    pub fn address(&self) -> Address {
        match self {
            Reply::Data { address, .. }
            | Reply::Error { address, .. }
            | Reply::Address(address) => *address,
            Reply::Echo(frame) => frame.address,
        }
    }

    /// Whether this is the answer to reading `di` from `address`: data echoing that identifier,
    /// or a refusal, from that meter (from any meter when `address` is the broadcast one).
    pub fn answers(&self, address: Address, di: u32) -> bool {
        let from = |a: &Address| address.is_broadcast() || *a == address;
        match self {
            Reply::Data {
                address: a, di: d, ..
            } => from(a) && *d == di,
            Reply::Error { address: a, .. } => from(a),
            Reply::Address(_) | Reply::Echo(_) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("a read reply starts with its 4-byte data identifier; this one has {0} bytes")]
    NoDataId(usize),
    #[error("an error reply without its error byte")]
    NoErrorCode,
    #[error("an address reply carries 6 address bytes; this one {0}")]
    AddressLength(usize),
    #[error("control {0} is no reply to a read")]
    Unexpected(Control),
}

/// The quantities the hub reads, by the point names of its profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quantity {
    /// Forward active total energy, kWh.
    EnergyImport,
    /// Reverse active total energy, kWh.
    EnergyExport,
    VoltageA,
    VoltageB,
    VoltageC,
    CurrentA,
    CurrentB,
    CurrentC,
    /// Total active power, W (the meter sends kW).
    PowerTotal,
    PfTotal,
    Frequency,
}

/// How a quantity's value is laid out: BCD bytes low first, the top bit of the last (most
/// significant) byte a sign when `signed`, the digits divided by `divisor` for the unit the hub
/// uses.
struct Format {
    bytes: usize,
    signed: bool,
    divisor: f64,
}

impl Quantity {
    pub const ALL: [Quantity; 11] = [
        Quantity::EnergyImport,
        Quantity::EnergyExport,
        Quantity::VoltageA,
        Quantity::VoltageB,
        Quantity::VoltageC,
        Quantity::CurrentA,
        Quantity::CurrentB,
        Quantity::CurrentC,
        Quantity::PowerTotal,
        Quantity::PfTotal,
        Quantity::Frequency,
    ];

    /// The data identifier, DI3 first as the standard writes it (`0x0001_0000` is 00 01 00 00).
    pub fn di(self) -> u32 {
        match self {
            Quantity::EnergyImport => 0x0001_0000,
            Quantity::EnergyExport => 0x0002_0000,
            Quantity::VoltageA => 0x0201_0100,
            Quantity::VoltageB => 0x0201_0200,
            Quantity::VoltageC => 0x0201_0300,
            Quantity::CurrentA => 0x0202_0100,
            Quantity::CurrentB => 0x0202_0200,
            Quantity::CurrentC => 0x0202_0300,
            Quantity::PowerTotal => 0x0203_0000,
            Quantity::PfTotal => 0x0206_0000,
            Quantity::Frequency => 0x0280_0002,
        }
    }

    pub fn from_di(di: u32) -> Option<Quantity> {
        Self::ALL.into_iter().find(|q| q.di() == di)
    }

    /// The point name the hub's profiles use.
    pub fn name(self) -> &'static str {
        match self {
            Quantity::EnergyImport => "energy_import",
            Quantity::EnergyExport => "energy_export",
            Quantity::VoltageA => "voltage_a",
            Quantity::VoltageB => "voltage_b",
            Quantity::VoltageC => "voltage_c",
            Quantity::CurrentA => "current_a",
            Quantity::CurrentB => "current_b",
            Quantity::CurrentC => "current_c",
            Quantity::PowerTotal => "power_total",
            Quantity::PfTotal => "pf_total",
            Quantity::Frequency => "frequency",
        }
    }

    /// The unit of what [`Quantity::decode`] returns.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            Quantity::EnergyImport | Quantity::EnergyExport => Some("kWh"),
            Quantity::VoltageA | Quantity::VoltageB | Quantity::VoltageC => Some("V"),
            Quantity::CurrentA | Quantity::CurrentB | Quantity::CurrentC => Some("A"),
            Quantity::PowerTotal => Some("W"),
            Quantity::PfTotal => None,
            Quantity::Frequency => Some("Hz"),
        }
    }

    /// Energy only rises; everything else is a gauge.
    pub fn is_counter(self) -> bool {
        matches!(self, Quantity::EnergyImport | Quantity::EnergyExport)
    }

    fn format(self) -> Format {
        let f = |bytes, signed, divisor| Format {
            bytes,
            signed,
            divisor,
        };
        match self {
            // XXXXXX.XX kWh
            Quantity::EnergyImport | Quantity::EnergyExport => f(4, false, 100.0),
            // XXX.X V
            Quantity::VoltageA | Quantity::VoltageB | Quantity::VoltageC => f(2, false, 10.0),
            // XXX.XXX A, signed
            Quantity::CurrentA | Quantity::CurrentB | Quantity::CurrentC => f(3, true, 1000.0),
            // XX.XXXX kW, signed: digits / 10⁴ kW = digits / 10 W
            Quantity::PowerTotal => f(3, true, 10.0),
            // X.XXX, signed
            Quantity::PfTotal => f(2, true, 1000.0),
            // XX.XX Hz
            Quantity::Frequency => f(2, false, 100.0),
        }
    }

    /// The value of a reply's payload (the bytes after the data identifier, −0x33 already).
    pub fn decode(self, payload: &[u8]) -> Result<f64, ValueError> {
        let f = self.format();
        if payload.len() != f.bytes {
            return Err(ValueError::Length {
                expected: f.bytes,
                got: payload.len(),
            });
        }
        let mut n: u64 = 0;
        let mut negative = false;
        for (i, &byte) in payload.iter().enumerate().rev() {
            let mut b = byte;
            if f.signed && i + 1 == f.bytes {
                negative = b & 0x80 != 0;
                b &= 0x7F;
            }
            let (hi, lo) = (b >> 4, b & 0x0F);
            if hi > 9 || lo > 9 {
                // FF FF: the meter has no value. A number made of it would be a lie.
                return Err(ValueError::NotBcd(byte));
            }
            n = n * 100 + u64::from(hi * 10 + lo);
        }
        let x = n as f64 / f.divisor;
        Ok(if negative && n != 0 { -x } else { x })
    }

    /// The payload that decodes to `value` (rounded to the quantity's resolution), for the
    /// simulator and tests.
    pub fn encode(self, value: f64) -> Result<Vec<u8>, ValueError> {
        let f = self.format();
        let digits = (value.abs() * f.divisor).round();
        let places = i32::try_from(2 * f.bytes).unwrap_or(i32::MAX);
        // With a sign bit the top digit stops at 7.
        let limit = if f.signed { 0.8 } else { 1.0 } * 10f64.powi(places);
        let negative = value < 0.0 && digits != 0.0;
        if !digits.is_finite() || digits >= limit || (negative && !f.signed) {
            return Err(ValueError::OutOfRange {
                quantity: self,
                value,
            });
        }
        let mut n = digits as u64;
        let mut out = vec![0u8; f.bytes];
        for b in out.iter_mut() {
            let lo = (n % 10) as u8;
            let hi = (n / 10 % 10) as u8;
            n /= 100;
            *b = (hi << 4) | lo;
        }
        if negative {
            if let Some(top) = out.last_mut() {
                *top |= 0x80;
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ValueError {
    #[error("data identifier {0:08X} is none the hub reads")]
    UnknownDataId(u32),
    #[error("expected {expected} value bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("byte {0:#04x} is not BCD (meters send FF for a value they do not have)")]
    NotBcd(u8),
    #[error("{value} is out of range for {quantity}")]
    OutOfRange { quantity: Quantity, value: f64 },
}

/// The value of a reply's payload for data identifier `di`, in the unit of
/// [`Quantity::unit`].
pub fn decode_value(di: u32, payload: &[u8]) -> Result<f64, ValueError> {
    Quantity::from_di(di)
        .ok_or(ValueError::UnknownDataId(di))?
        .decode(payload)
}

/// The payload for `value` of data identifier `di`; the inverse of [`decode_value`].
pub fn encode_value(di: u32, value: f64) -> Result<Vec<u8>, ValueError> {
    Quantity::from_di(di)
        .ok_or(ValueError::UnknownDataId(di))?
        .encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// "68 34 12" → bytes.
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// A frame written out by hand without its checksum and end, completed by summing.
    fn with_checksum(body: &str) -> Vec<u8> {
        let mut bytes = hex(body);
        let sum: u32 = bytes.iter().map(|b| u32::from(*b)).sum();
        bytes.push((sum % 256) as u8);
        bytes.push(0x16);
        bytes
    }

    fn meter() -> Address {
        "000000001234".parse().unwrap()
    }

    /// Scans like a caller: everything found, in order, until more is needed.
    fn scan_all(mut buf: &[u8]) -> (Vec<Scan>, usize) {
        let mut out = Vec::new();
        loop {
            let s = scan(buf);
            let n = match &s {
                Scan::Frame { consumed, .. } => *consumed,
                Scan::Skip { len, .. } => *len,
                Scan::NeedMore => return (out, buf.len()),
            };
            buf = &buf[n..];
            out.push(s);
        }
    }

    fn frame_of(s: &Scan) -> &Frame {
        match s {
            Scan::Frame { frame, .. } => frame,
            other => panic!("not a frame: {other:?}"),
        }
    }

    const REQUEST: &str = "68 34 12 00 00 00 00 68 11 04 33 33 34 33 F8 16";

    #[test]
    fn reading_forward_energy_is_the_reference_request_byte_for_byte() {
        let bare = Frame::read(meter(), 0x0001_0000).to_bytes().unwrap();
        assert_eq!(bare, hex(REQUEST));
        let sent = read_request(meter(), 0x0001_0000);
        assert_eq!(sent[..4], [0xFE; 4]);
        assert_eq!(sent[4..], hex(REQUEST));
        assert_eq!(Frame::read(meter(), 0x0001_0000).to_wire().unwrap(), sent);
    }

    #[test]
    fn reading_the_address_asks_everyone_with_no_data() {
        // 0x68·2 + 0xAA·6 + 0x13 = 1247 = 4·256 + 0xDF
        let expected = hex("FE FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16");
        assert_eq!(read_address_request(), expected);
        assert_eq!(Frame::read_address().to_wire().unwrap(), expected);
    }

    #[test]
    fn addresses_are_twelve_digits_printed_as_written_and_sent_low_byte_first() {
        let a = meter();
        assert_eq!(a.wire(), [0x34, 0x12, 0, 0, 0, 0]);
        assert_eq!(a.to_string(), "000000001234");
        let b: Address = "123456789012".parse().unwrap();
        assert_eq!(b.wire(), [0x12, 0x90, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(b.to_string(), "123456789012");
        assert_eq!(Address::BROADCAST.to_string(), "AAAAAAAAAAAA");
        assert!(Address::BROADCAST.is_broadcast() && !a.is_broadcast());
        assert_eq!(" 000000001234 ".parse::<Address>(), Ok(a));
    }

    #[test]
    fn a_short_or_lettered_address_is_refused_with_the_reason() {
        assert_eq!("1234".parse::<Address>(), Err(AddressError::Length(4)));
        assert_eq!(
            "0000000012345".parse::<Address>(),
            Err(AddressError::Length(13))
        );
        assert_eq!(
            "00000000123A".parse::<Address>(),
            Err(AddressError::NotADigit('A'))
        );
        assert_eq!(
            "0000000012３4".parse::<Address>(),
            Err(AddressError::NotADigit('３'))
        );
        assert_eq!("".parse::<Address>(), Err(AddressError::Length(0)));
    }

    #[test]
    fn control_bits_tell_direction_error_and_function() {
        assert!(!Control::READ.is_reply());
        assert!(Control::READ_REPLY.is_reply() && !Control::READ_REPLY.is_error());
        assert!(Control::READ_ERROR.is_reply() && Control::READ_ERROR.is_error());
        assert_eq!(Control::READ.error_reply(), Control::READ_ERROR);
        assert_eq!(Control::READ_ADDRESS_REPLY.function(), 0x13);
        assert!(Control(0xB1).has_more());
        assert_eq!(Control::BROADCAST_TIME.0, 0x08);
    }

    #[test]
    fn the_reference_reply_reads_1234_56_kwh() {
        let bytes = with_checksum("68 34 12 00 00 00 00 68 91 08 33 33 34 33 89 67 45 33");
        let found = scan(&bytes);
        let Scan::Frame { frame, consumed } = found else {
            panic!("{found:?}")
        };
        assert_eq!(consumed, bytes.len());
        assert_eq!(frame.data, hex("00 00 01 00 56 34 12 00"));
        let reply = frame.reply().unwrap();
        assert_eq!(reply.address(), meter());
        assert!(reply.answers(meter(), 0x0001_0000));
        let Reply::Data { di, payload, .. } = reply else {
            panic!()
        };
        assert_eq!(di, 0x0001_0000);
        assert_eq!(decode_value(di, &payload), Ok(1234.56));
    }

    #[test]
    fn power_flowing_back_is_negative_watts() {
        // 02 03 00 00, −1.2345 kW: digits 012345, sign bit on the top byte: 45 23 81.
        let bytes = with_checksum("68 34 12 00 00 00 00 68 91 07 33 33 36 35 78 56 B4");
        let reply = frame_of(&scan(&bytes)).reply().unwrap();
        let Reply::Data { di, payload, .. } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(di, Quantity::PowerTotal.di());
        assert_eq!(decode_value(di, &payload), Ok(-1234.5));
        assert_eq!(Quantity::PowerTotal.encode(-1234.5), Ok(hex("45 23 81")));
    }

    #[test]
    fn signed_currents_and_power_factors_use_the_top_bit_not_twos_complement() {
        assert_eq!(Quantity::CurrentA.decode(&hex("56 34 12")), Ok(123.456));
        assert_eq!(Quantity::CurrentA.decode(&hex("56 34 92")), Ok(-123.456));
        assert_eq!(Quantity::PfTotal.decode(&hex("50 09")), Ok(0.95));
        assert_eq!(Quantity::PfTotal.decode(&hex("00 90")), Ok(-1.0));
        // A minus zero is zero.
        assert_eq!(Quantity::PfTotal.decode(&hex("00 80")), Ok(0.0));
        assert!(Quantity::PfTotal
            .decode(&hex("00 80"))
            .unwrap()
            .is_sign_positive());
    }

    #[test]
    fn unsigned_quantities_read_the_top_bit_as_a_digit() {
        // 02 01 01 00, XXX.X V: 01 22 → 220.1; 80 99 → 998.0 (an 8 on top, no sign)
        assert_eq!(Quantity::VoltageA.decode(&hex("01 22")), Ok(220.1));
        assert_eq!(Quantity::VoltageA.decode(&hex("80 99")), Ok(998.0));
        assert_eq!(Quantity::Frequency.decode(&hex("02 50")), Ok(50.02));
        assert_eq!(
            Quantity::EnergyExport.decode(&hex("00 00 00 80")),
            Ok(800_000.0)
        );
    }

    #[test]
    fn no_data_sent_as_ff_is_an_error_not_a_number() {
        assert_eq!(
            Quantity::VoltageA.decode(&hex("FF FF")),
            Err(ValueError::NotBcd(0xFF))
        );
        assert_eq!(
            Quantity::PowerTotal.decode(&hex("00 00 FF")),
            Err(ValueError::NotBcd(0xFF))
        );
        assert_eq!(
            Quantity::EnergyImport.decode(&hex("12 34 56")),
            Err(ValueError::Length {
                expected: 4,
                got: 3
            })
        );
        assert_eq!(
            decode_value(0x0401_0000, &[0]),
            Err(ValueError::UnknownDataId(0x0401_0000))
        );
    }

    #[test]
    fn values_beyond_what_the_digits_hold_are_refused() {
        let out = |q: Quantity, v: f64| matches!(q.encode(v), Err(ValueError::OutOfRange { .. }));
        assert!(out(Quantity::EnergyImport, 1_000_000.0));
        assert!(out(Quantity::EnergyImport, -5.0));
        assert!(out(Quantity::PowerTotal, 80_000.0));
        assert!(out(Quantity::VoltageA, f64::NAN));
        assert!(out(Quantity::CurrentA, f64::INFINITY));
        assert_eq!(Quantity::PowerTotal.encode(79_999.9), Ok(hex("99 99 79")));
        assert_eq!(
            Quantity::EnergyImport.encode(-0.001),
            Ok(hex("00 00 00 00"))
        );
    }

    #[test]
    fn the_data_identifiers_are_the_standards() {
        assert_eq!(Quantity::from_di(0x0280_0002), Some(Quantity::Frequency));
        assert_eq!(Quantity::from_di(0x0202_0300), Some(Quantity::CurrentC));
        assert_eq!(Quantity::from_di(0), None);
        for q in Quantity::ALL {
            assert_eq!(Quantity::from_di(q.di()), Some(q));
        }
        assert_eq!(Quantity::PowerTotal.unit(), Some("W"));
        assert_eq!(Quantity::PfTotal.to_string(), "pf_total");
    }

    #[test]
    fn an_error_reply_names_its_reasons() {
        let bytes = with_checksum("68 34 12 00 00 00 00 68 D1 01 35");
        let reply = frame_of(&scan(&bytes)).reply().unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                address: meter(),
                code: ErrorCode::NO_DATA
            }
        );
        assert!(reply.answers(meter(), 0x0001_0000));
        let Reply::Error { code, .. } = reply else {
            panic!()
        };
        assert!(code.contains(ErrorCode::NO_DATA) && !code.contains(ErrorCode::OTHER));
        assert_eq!(code.to_string(), "no data requested");
        assert_eq!(
            ErrorCode(0x05).to_string(),
            "other error, wrong password or unauthorised"
        );
        assert_eq!(ErrorCode(0).to_string(), "no reason given");
    }

    #[test]
    fn the_address_reply_carries_the_meters_address() {
        let bytes = with_checksum("68 34 12 00 00 00 00 68 93 06 67 45 33 33 33 33");
        assert_eq!(frame_of(&scan(&bytes)).reply(), Ok(Reply::Address(meter())));
    }

    #[test]
    fn a_reply_from_another_meter_or_for_another_identifier_is_told_apart() {
        let other: Address = "000000005678".parse().unwrap();
        let reply = Reply::Data {
            address: other,
            di: 0x0001_0000,
            payload: vec![0; 4],
        };
        assert_eq!(reply.address(), other);
        assert!(!reply.answers(meter(), 0x0001_0000));
        assert!(!reply.answers(other, 0x0002_0000));
        assert!(reply.answers(other, 0x0001_0000));
        // Asked through the broadcast address, whoever answers is the one.
        assert!(reply.answers(Address::BROADCAST, 0x0001_0000));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let f = |control: u8, data: &[u8]| Frame {
            address: meter(),
            control: Control(control),
            data: data.to_vec(),
        };
        assert_eq!(f(0x91, &[0, 0, 1]).reply(), Err(ReplyError::NoDataId(3)));
        assert_eq!(f(0xD1, &[]).reply(), Err(ReplyError::NoErrorCode));
        assert_eq!(f(0x93, &[1, 2]).reply(), Err(ReplyError::AddressLength(2)));
        assert_eq!(
            f(0x94, &[]).reply(),
            Err(ReplyError::Unexpected(Control(0x94)))
        );
    }

    #[test]
    fn wake_ups_belong_to_the_frame_and_noise_before_them_is_counted() {
        let mut buf = hex("00 FF 13 FE FE FE FE");
        buf.extend(hex(REQUEST));
        assert_eq!(
            scan(&buf),
            Scan::Skip {
                len: 3,
                reason: Reject::Noise
            }
        );
        let rest = &buf[3..];
        let Scan::Frame { frame, consumed } = scan(rest) else {
            panic!()
        };
        assert_eq!(consumed, rest.len());
        assert_eq!(frame, Frame::read(meter(), 0x0001_0000));
    }

    #[test]
    fn a_broken_checksum_drops_that_frame_and_finds_the_next() {
        let mut broken = hex(REQUEST);
        broken[14] ^= 0x01;
        let mut buf = broken.clone();
        buf.extend(read_request(meter(), 0x0002_0000));
        let (found, left) = scan_all(&buf);
        assert_eq!(
            found[0],
            Scan::Skip {
                len: broken.len(),
                reason: Reject::BadChecksum
            }
        );
        assert_eq!(frame_of(&found[1]), &Frame::read(meter(), 0x0002_0000));
        assert_eq!((found.len(), left), (2, 0));
    }

    #[test]
    fn a_wrong_end_byte_is_rejected() {
        let mut buf = hex(REQUEST);
        buf[15] = 0x17;
        assert_eq!(
            scan(&buf),
            Scan::Skip {
                len: 16,
                reason: Reject::BadEnd
            }
        );
    }

    #[test]
    fn an_impossible_length_is_not_waited_for() {
        // L = 0xC9 = 201: dropped up to the wake-ups of the next frame, not waited for.
        let mut buf = hex("68 34 12 00 00 00 00 68 91 C9 33 33");
        buf.extend(read_request(meter(), 0x0001_0000));
        let (found, left) = scan_all(&buf);
        assert_eq!(
            found[0],
            Scan::Skip {
                len: 12,
                reason: Reject::TooLong
            }
        );
        assert_eq!(frame_of(&found[1]), &Frame::read(meter(), 0x0001_0000));
        assert_eq!((found.len(), left), (2, 0));
        // Alone, it is dropped up to its second 68, which could yet start a frame of its own.
        let alone = hex("68 34 12 00 00 00 00 68 91 C9 33 33");
        assert_eq!(
            scan(&alone),
            Scan::Skip {
                len: 7,
                reason: Reject::TooLong
            }
        );
    }

    #[test]
    fn a_frame_arriving_in_pieces_waits_then_is_found() {
        let whole = read_request(meter(), 0x0001_0000);
        for cut in 0..whole.len() {
            assert_eq!(scan(&whole[..cut]), Scan::NeedMore, "cut at {cut}");
        }
        assert!(matches!(scan(&whole), Scan::Frame { consumed, .. } if consumed == whole.len()));
    }

    #[test]
    fn a_frame_cut_short_by_the_next_one_is_truncated() {
        let cut = &hex(REQUEST)[..11];
        let mut buf = cut.to_vec();
        buf.extend(read_request(meter(), 0x0002_0000));
        let (found, left) = scan_all(&buf);
        assert_eq!(
            found[0],
            Scan::Skip {
                len: 11,
                reason: Reject::Truncated
            }
        );
        assert_eq!(frame_of(&found[1]), &Frame::read(meter(), 0x0002_0000));
        assert_eq!(left, 0);
    }

    #[test]
    fn our_echoed_request_is_recognised_and_the_reply_after_it_found() {
        let mut buf = read_request(meter(), 0x0001_0000);
        buf.extend([0xFE; 4]);
        buf.extend(with_checksum(
            "68 34 12 00 00 00 00 68 91 08 33 33 34 33 89 67 45 33",
        ));
        let (found, left) = scan_all(&buf);
        assert_eq!((found.len(), left), (2, 0));
        assert_eq!(
            frame_of(&found[0]).reply(),
            Ok(Reply::Echo(Frame::read(meter(), 0x0001_0000)))
        );
        let reply = frame_of(&found[1]).reply().unwrap();
        assert!(reply.answers(meter(), 0x0001_0000));
    }

    #[test]
    fn two_frames_back_to_back_are_two_frames() {
        let a = Frame {
            address: meter(),
            control: Control::READ_REPLY,
            data: vec![0x00, 0x00, 0x01, 0x00, 0x56, 0x34, 0x12, 0x00],
        };
        let b = Frame {
            address: meter(),
            control: Control::READ_ERROR,
            data: vec![0x02],
        };
        let mut buf = a.to_bytes().unwrap();
        buf.extend(b.to_bytes().unwrap());
        let (found, left) = scan_all(&buf);
        assert_eq!((found.len(), left), (2, 0));
        assert_eq!(frame_of(&found[0]), &a);
        assert_eq!(frame_of(&found[1]), &b);
    }

    #[test]
    fn wake_ups_alone_wait_and_a_line_idling_at_fe_is_noise() {
        assert_eq!(scan(&[]), Scan::NeedMore);
        assert_eq!(scan(&[0xFE; 4]), Scan::NeedMore);
        assert_eq!(
            scan(&[0xFE; 20]),
            Scan::Skip {
                len: 12,
                reason: Reject::Noise
            }
        );
        assert_eq!(
            scan(&[0x00, 0x11, 0xFE]),
            Scan::Skip {
                len: 2,
                reason: Reject::Noise
            }
        );
    }

    #[test]
    fn a_stray_68_is_noise() {
        let mut buf = hex("68 00 00 00 00 00 00 00");
        buf.extend(hex(REQUEST));
        let (found, left) = scan_all(&buf);
        assert_eq!(
            found[0],
            Scan::Skip {
                len: 8,
                reason: Reject::Noise
            }
        );
        assert_eq!(frame_of(&found[1]), &Frame::read(meter(), 0x0001_0000));
        assert_eq!(left, 0);
    }

    #[test]
    fn too_much_data_is_refused_when_encoding() {
        let f = Frame {
            address: meter(),
            control: Control::READ_REPLY,
            data: vec![0; MAX_DATA + 1],
        };
        assert_eq!(f.to_bytes(), Err(TooLong(201)));
        assert_eq!(f.to_wire(), Err(TooLong(201)));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        (
            any::<[u8; 6]>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DATA),
        )
            .prop_map(|(a, c, data)| Frame {
                address: Address::from_wire(a),
                control: Control(c),
                data,
            })
    }

    proptest! {
        #[test]
        fn scanning_any_bytes_never_panics_and_always_ends(
            buf in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut rest: &[u8] = &buf;
            let mut steps = 0;
            loop {
                let n = match scan(rest) {
                    Scan::Frame { consumed, .. } => consumed,
                    Scan::Skip { len, .. } => len,
                    Scan::NeedMore => break,
                };
                prop_assert!(n >= 1 && n <= rest.len(), "{} of {}", n, rest.len());
                rest = &rest[n..];
                steps += 1;
                prop_assert!(steps <= buf.len());
            }
        }

        #[test]
        fn frame_starts_in_noise_never_panic_either(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(vec![0x68]),
                    Just(vec![0xFE]),
                    Just(vec![0x16]),
                    proptest::collection::vec(any::<u8>(), 0..12),
                ],
                0..60,
            ),
        ) {
            // Dense in 68, FE and 16, which random bytes rarely are.
            let buf: Vec<u8> = parts.concat();
            let (_, left) = scan_all(&buf);
            prop_assert!(left <= buf.len());
        }

        #[test]
        fn any_frame_encoded_is_scanned_back(frame in any_frame(), wake in any::<bool>()) {
            let bytes = if wake { frame.to_wire() } else { frame.to_bytes() }.unwrap();
            prop_assert_eq!(scan(&bytes), Scan::Frame { frame, consumed: bytes.len() });
        }

        #[test]
        fn a_read_request_for_any_meter_and_identifier_is_scanned_back(
            a in any::<[u8; 6]>(), di in any::<u32>(),
        ) {
            let address = Address::from_wire(a);
            let bytes = read_request(address, di);
            prop_assert_eq!(
                scan(&bytes),
                Scan::Frame { frame: Frame::read(address, di), consumed: bytes.len() }
            );
        }

        #[test]
        fn a_frame_is_found_behind_and_before_any_noise(
            frame in any_frame(),
            before in proptest::collection::vec(any::<u8>(), 0..100),
            after in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut buf = before.clone();
            buf.extend(frame.to_wire().unwrap());
            buf.extend(&after);
            let mut rest: &[u8] = &buf;
            let mut found = false;
            loop {
                match scan(rest) {
                    Scan::Frame { frame: f, consumed } => {
                        found |= f == frame;
                        rest = &rest[consumed..];
                    }
                    Scan::Skip { len, .. } => rest = &rest[len..],
                    Scan::NeedMore => break,
                }
            }
            prop_assert!(found);
        }

        #[test]
        fn decimal_addresses_print_back_as_parsed(n in 0u64..1_000_000_000_000) {
            let s = format!("{n:012}");
            let a: Address = s.parse().unwrap();
            prop_assert_eq!(a.to_string(), s);
        }

        #[test]
        fn values_encode_and_decode_back(
            q in proptest::sample::select(Quantity::ALL.to_vec()),
            digits in 0u64..100_000_000,
            negative in any::<bool>(),
        ) {
            let f = q.format();
            let places = 2 * f.bytes as u32;
            let limit = if f.signed { 8 * 10u64.pow(places - 1) } else { 10u64.pow(places) };
            let n = digits % limit;
            let x = n as f64 / f.divisor;
            let x = if negative && f.signed { -x } else { x };
            let payload = q.encode(x).unwrap();
            prop_assert_eq!(payload.len(), f.bytes);
            prop_assert_eq!(q.decode(&payload), Ok(x));
            prop_assert_eq!(decode_value(q.di(), &encode_value(q.di(), x).unwrap()), Ok(x));
        }

        #[test]
        fn decoding_any_payload_never_panics(
            q in proptest::sample::select(Quantity::ALL.to_vec()),
            payload in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let _ = q.decode(&payload);
        }
    }
}
