//! CJ/T 188-2004 frames for water meters: addresses, requests, a scanner that finds frames in
//! the bytes a line delivers, and what an answer to "current cumulative flow" (DI 901F) says.
//!
//! Pure: no I/O. Nothing here panics on any bytes, and nothing is allocated from a length the
//! line sends beyond [`MAX_DATA`]. The simulator encodes with this same code, so its tests prove
//! the wiring; the byte-exact vectors below are what tie it to the protocol.
//!
//! A frame: optional `FE` wake-up bytes, `68`, T (meter type), A0..A6 (address, BCD, low byte
//! first), C (control), L (data length), data (DI0 DI1 SER, then the payload), CS (sum of the
//! bytes from `68` to the last data byte, mod 256), `16`. Unlike DL/T 645, data bytes are sent
//! as they are (no +0x33).

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use thiserror::Error;

/// What a master sends before a request (the reference: "optional FE×3"), so that a meter
/// asleep on battery wakes in time for the `68`; meters send them before their answers too.
/// FE can never be mistaken for a frame start.
pub const WAKE_UP: [u8; 3] = [WAKE; 3];
const WAKE: u8 = 0xFE;
const START: u8 = 0x68;
const END: u8 = 0x16;
/// Wake-ups kept while nothing follows them; more are noise (a line idling at FE).
const MAX_IDLE_WAKE_UPS: usize = 8;
/// The longest data field taken off the line. A 901F answer has 22 bytes, and
/// aixiwang/python_cjt188 refuses any frame over 100 bytes in all; 100 data bytes is a little
/// more lenient than that, and keeps a corrupt length byte from making the scanner wait for,
/// or allocate, much more than a real frame.
pub const MAX_DATA: usize = 100;
/// `68`, T, A0..A6, C, L.
const HEADER: usize = 11;
/// A frame with no data: the header, CS and `16`.
pub const MIN_FRAME: usize = HEADER + 2;

/// T of a cold-water meter, the type requests are sent with.
pub const COLD_WATER: u8 = 0x10;
/// T that any meter answers to, whatever its type: used to ask a lone meter for its address.
pub const ANY_METER: u8 = 0xAA;

/// Water meters are T = 0x10..=0x19 (cold, domestic hot, drinking, reclaimed water…); an
/// answer from one of them is taken, whatever type it was asked with.
pub fn is_water(meter_type: u8) -> bool {
    (0x10..=0x19).contains(&meter_type)
}

/// The control byte C. Bit 7 is the direction (set on what a meter sends), bit 6 an error
/// reply, bits 0–5 the function (KingDa's firmware declares it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Control(pub u8);

impl Control {
    pub const READ: Control = Control(0x01);
    pub const READ_REPLY: Control = Control(0x81);
    pub const READ_ERROR: Control = Control(0xC1);
    pub const READ_ADDRESS: Control = Control(0x03);
    pub const READ_ADDRESS_REPLY: Control = Control(0x83);

    /// Sent by a meter (direction bit set), as opposed to a request from a master.
    pub fn is_reply(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// A meter's "could not": its data is SER and the status, no DI.
    pub fn is_error(self) -> bool {
        self.0 & 0x40 != 0
    }

    /// The function (0x01 read, 0x03 read address, …) without the direction and error bits.
    pub fn function(self) -> u8 {
        self.0 & 0x3F
    }

    /// The normal reply to a request of this function.
    pub fn reply(self) -> Control {
        Control(0x80 | self.function())
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

/// DI of the current cumulative flow (with the settlement-day flow, time and status).
pub const DI_CURRENT_FLOW: u16 = 0x901F;
/// DI of "read address".
pub const DI_READ_ADDRESS: u16 = 0x810A;

/// The 7-byte address of a meter. Installers write it as 14 decimal digits, most significant
/// first: "12345678901234" is `34 12 90 78 56 34 12` on the wire. Held as the wire bytes,
/// because a frame from the line may carry any bytes (the broadcast AA×7 is not BCD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; 7]);

impl Address {
    /// AA×7: every meter on the line. Only meaningful with one meter on it.
    pub const BROADCAST: Address = Address([0xAA; 7]);

    /// An address from its wire bytes (A0, the low byte, first).
    pub const fn from_wire(bytes: [u8; 7]) -> Self {
        Address(bytes)
    }

    /// The wire bytes, low byte first.
    pub const fn wire(self) -> [u8; 7] {
        self.0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// A shorter address is not padded: the top bytes often hold a maker's code, and zeros
    /// there would address another meter.
    #[error("a CJ/T 188 address has 14 digits, this has {0}")]
    Length(usize),
    #[error("{0:?} is not a decimal digit")]
    NotADigit(char),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let count = s.chars().count();
        if count != 14 {
            return Err(AddressError::Length(count));
        }
        let mut digits = [0u8; 14];
        for (d, c) in digits.iter_mut().zip(s.chars()) {
            *d = c
                .to_digit(10)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(AddressError::NotADigit(c))?;
        }
        let mut wire = [0u8; 7];
        // The first two digits are A6, the last two A0.
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            wire[6 - i] = (pair[0] << 4) | pair[1];
        }
        Ok(Address(wire))
    }
}

impl fmt::Display for Address {
    /// The installer's 14 digits; an address that is not BCD (the broadcast address, a
    /// maker's hex code) shows its hex digits, so that nothing is hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// The order of a DI's two bytes on the wire. The public sources disagree, so answers are
/// taken in either order and a request's order can be set per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiOrder {
    /// DI0 first: 901F as `1F 90`.
    LowFirst,
    /// DI1 first: 901F as `90 1F`.
    HighFirst,
}

impl DiOrder {
    /// The order sent when a device does not say, by the majority of the sources found:
    /// 901F goes `1F 90` (the reference's source xijunzhou/sdqr_energy_node_class `cj188.h`
    /// sends DI0 = 0x1F first and shows an answer so; aixiwang/python_cjt188, tested against a
    /// meter, moved from `90 1F` to `1F 90`; a thingsboard-gateway driver sends `1F 90`), while
    /// 810A goes `81 0A` (the only two sources that send it, aixiwang's tool and KingDa's meter
    /// firmware, which compares the DI as a big-endian u16, both put `81` first).
    pub fn usual(di: u16) -> DiOrder {
        if di == DI_READ_ADDRESS {
            DiOrder::HighFirst
        } else {
            DiOrder::LowFirst
        }
    }

    pub fn bytes(self, di: u16) -> [u8; 2] {
        match self {
            DiOrder::LowFirst => di.to_le_bytes(),
            DiOrder::HighFirst => di.to_be_bytes(),
        }
    }

    /// The order in which `bytes` spell `di`, if they do. No DI defined for water meters reads
    /// as another defined one when swapped (0x1F90 and 0x0A81 are not DIs), so either order is
    /// safe to accept.
    pub fn of(bytes: [u8; 2], di: u16) -> Option<DiOrder> {
        if bytes == di.to_le_bytes() {
            Some(DiOrder::LowFirst)
        } else if bytes == di.to_be_bytes() {
            Some(DiOrder::HighFirst)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("{0} data bytes, more than the {MAX_DATA} a frame carries")]
    TooLong(usize),
}

/// One frame, checksum and end byte checked (or to be written). The data field is kept within
/// [`MAX_DATA`] by the constructors, so encoding cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    meter_type: u8,
    address: Address,
    control: Control,
    data: Vec<u8>,
}

impl Frame {
    pub fn new(
        meter_type: u8,
        address: Address,
        control: Control,
        data: Vec<u8>,
    ) -> Result<Self, FrameError> {
        if data.len() > MAX_DATA {
            return Err(FrameError::TooLong(data.len()));
        }
        Ok(Self {
            meter_type,
            address,
            control,
            data,
        })
    }

    /// A frame whose data is DI, SER and `payload`; the payload is cut to what fits.
    pub fn with_di(
        meter_type: u8,
        address: Address,
        control: Control,
        di: [u8; 2],
        ser: u8,
        payload: &[u8],
    ) -> Self {
        let mut data = Vec::with_capacity(3 + payload.len());
        data.extend_from_slice(&di);
        data.push(ser);
        data.extend_from_slice(&payload[..payload.len().min(MAX_DATA - 3)]);
        Self {
            meter_type,
            address,
            control,
            data,
        }
    }

    pub fn meter_type(&self) -> u8 {
        self.meter_type
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn control(&self) -> Control {
        self.control
    }

    /// The whole data field: DI0 DI1 SER payload (an error answer: SER and status).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The first two data bytes, where a DI goes.
    pub fn di_bytes(&self) -> Option<[u8; 2]> {
        self.data.get(..2).and_then(|s| s.try_into().ok())
    }

    /// In which order the frame carries `di`, if it carries it at all.
    pub fn di_order(&self, di: u16) -> Option<DiOrder> {
        DiOrder::of(self.di_bytes()?, di)
    }

    /// SER, after the DI.
    pub fn ser(&self) -> Option<u8> {
        self.data.get(2).copied()
    }

    /// What follows DI and SER.
    pub fn payload(&self) -> &[u8] {
        self.data.get(3..).unwrap_or(&[])
    }

    /// The frame's bytes from `68` to `16`, without wake-ups.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_FRAME + self.data.len());
        self.push_to(&mut out);
        out
    }

    /// The bytes to send: wake-ups, then the frame.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WAKE_UP.len() + MIN_FRAME + self.data.len());
        out.extend(WAKE_UP);
        self.push_to(&mut out);
        out
    }

    fn push_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(START);
        out.push(self.meter_type);
        out.extend(self.address.0);
        out.push(self.control.0);
        // `new` and `with_di` keep data within MAX_DATA, so this never clips.
        out.push(u8::try_from(self.data.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.data);
        let cs = checksum(&out[start..]);
        out.extend([cs, END]);
    }
}

/// CS: the sum of the bytes from `68` to the last data byte, mod 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |cs, b| cs.wrapping_add(*b))
}

/// What the hub asks a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The current cumulative flow and the rest of DI 901F.
    Read { to: Address, ser: u8 },
    /// The address of the one meter on the line, sent to the broadcast address.
    ReadAddress { ser: u8 },
}

/// How a request goes on the wire, per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Send [`WAKE_UP`] first, as battery meters need; off for a device whose meter or
    /// converter mishandles them.
    pub wake_up: bool,
    /// `None`: [`DiOrder::usual`].
    pub di_order: Option<DiOrder>,
    /// `None`: [`COLD_WATER`] for reads, [`ANY_METER`] for "read address".
    pub meter_type: Option<u8>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            wake_up: true,
            di_order: None,
            meter_type: None,
        }
    }
}

impl Request {
    pub fn ser(&self) -> u8 {
        match *self {
            Request::Read { ser, .. } | Request::ReadAddress { ser } => ser,
        }
    }

    /// Where the request goes.
    pub fn to(&self) -> Address {
        match *self {
            Request::Read { to, .. } => to,
            Request::ReadAddress { .. } => Address::BROADCAST,
        }
    }

    /// The control code and DI asked with.
    fn asks(&self) -> (Control, u16) {
        match self {
            Request::Read { .. } => (Control::READ, DI_CURRENT_FLOW),
            Request::ReadAddress { .. } => (Control::READ_ADDRESS, DI_READ_ADDRESS),
        }
    }

    pub fn frame(&self, options: RequestOptions) -> Frame {
        let (control, di) = self.asks();
        let order = options.di_order.unwrap_or(DiOrder::usual(di));
        let meter_type = options.meter_type.unwrap_or(match self {
            Request::Read { .. } => COLD_WATER,
            Request::ReadAddress { .. } => ANY_METER,
        });
        Frame::with_di(
            meter_type,
            self.to(),
            control,
            order.bytes(di),
            self.ser(),
            &[],
        )
    }

    /// The bytes to send.
    pub fn to_wire(&self, options: RequestOptions) -> Vec<u8> {
        let frame = self.frame(options);
        if options.wake_up {
            frame.to_wire()
        } else {
            frame.to_bytes()
        }
    }
}

/// Reads DI 901F from `to`, with wake-up bytes: `FE FE FE 68 10 A0..A6 01 03 1F 90 SER CS 16`.
pub fn read_request(to: Address, ser: u8) -> Vec<u8> {
    read_request_with(to, ser, RequestOptions::default())
}

/// [`read_request`] as a device's options say (e.g. without wake-ups, or DI `90 1F`).
pub fn read_request_with(to: Address, ser: u8, options: RequestOptions) -> Vec<u8> {
    Request::Read { to, ser }.to_wire(options)
}

/// Asks the one meter on the line for its address:
/// `FE FE FE 68 AA AA×7 03 03 81 0A 00 49 16`. T = 0xAA (any type) as aixiwang/python_cjt188
/// sends it and KingDa's firmware accepts it, so that a hot-water meter answers too.
pub fn read_address_request() -> Vec<u8> {
    Request::ReadAddress { ser: 0 }.to_wire(RequestOptions::default())
}

/// What [`scan`] found at the front of a receive buffer (the shape every raw meter protocol's
/// scanner shares with the line that reads it).
pub type Scan = crate::modbus::raw::Scan<Frame>;
pub use crate::modbus::raw::Reject;

/// What the bytes from a `68` are.
enum Check {
    Frame(Frame, usize),
    Bad(Reject),
    Incomplete,
}

fn check(buf: &[u8]) -> Check {
    let Some(header) = buf.get(..HEADER) else {
        return Check::Incomplete;
    };
    let len = usize::from(header[10]);
    if len > MAX_DATA {
        return Check::Bad(Reject::TooLong);
    }
    let total = HEADER + len + 2;
    let Some(frame) = buf.get(..total) else {
        return Check::Incomplete;
    };
    if frame[total - 1] != END {
        return Check::Bad(Reject::BadEnd);
    }
    if checksum(&frame[..HEADER + len]) != frame[HEADER + len] {
        return Check::Bad(Reject::BadChecksum);
    }
    let mut address = [0u8; 7];
    address.copy_from_slice(&frame[2..9]);
    Check::Frame(
        Frame {
            meter_type: frame[1],
            address: Address(address),
            control: Control(frame[9]),
            data: frame[HEADER..HEADER + len].to_vec(),
        },
        total,
    )
}

/// How many FE bytes end at `end`, not looking before `floor`.
fn wake_ups_before(buf: &[u8], end: usize, floor: usize) -> usize {
    buf.get(floor..end)
        .map_or(0, |b| b.iter().rev().take_while(|b| **b == WAKE).count())
}

/// Looks at the front of a receive buffer. The caller drops what it is told and calls again
/// until [`Scan::NeedMore`]; every answer but `NeedMore` drops at least one byte, so that loop
/// always ends:
///
/// ```
/// # use parkhub::cjt188::frame::{scan, Scan};
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
/// `NeedMore` comes only for a buffer of a few wake-ups, or of wake-ups and a `68` short of
/// the frame its L announces, so the buffer stays under 8 + [`MIN_FRAME`] + [`MAX_DATA`] bytes.
/// A broken frame is dropped one byte past its `68`, so that a real frame starting inside it
/// is still found; a frame start that has not completed while a complete frame follows it is
/// dropped as [`Reject::Truncated`] rather than waited for.
pub fn scan(buf: &[u8]) -> Scan {
    let wake = buf.iter().take_while(|b| **b == WAKE).count();
    if wake > MAX_IDLE_WAKE_UPS {
        return Scan::Skip {
            len: wake - MAX_IDLE_WAKE_UPS,
            reason: Reject::Noise,
        };
    }
    let Some(&first) = buf.get(wake) else {
        return Scan::NeedMore;
    };
    if first != START {
        // Up to the next byte that may begin a frame: a 68, or the wake-ups before one.
        let len = buf[wake..]
            .iter()
            .position(|b| *b == START || *b == WAKE)
            .map_or(buf.len(), |p| wake + p);
        return Scan::Skip {
            len,
            reason: Reject::Noise,
        };
    }
    match check(&buf[wake..]) {
        Check::Frame(frame, total) => Scan::Frame {
            frame,
            consumed: wake + total,
        },
        Check::Bad(reason) => Scan::Skip {
            len: wake + 1,
            reason,
        },
        Check::Incomplete => {
            let complete_later = (wake + 1..buf.len())
                .filter(|&i| buf[i] == START)
                .find(|&i| matches!(check(&buf[i..]), Check::Frame(..)));
            match complete_later {
                // Its wake-ups go with it.
                Some(i) => Scan::Skip {
                    len: i - wake_ups_before(buf, i, wake + 1),
                    reason: Reject::Truncated,
                },
                None => Scan::NeedMore,
            }
        }
    }
}

/// Units CJ/T 188 gives values in, by code. These are the codes found in a source (KingDa's
/// water-meter firmware, `CJT-188-2004.h`). The gaps between them suggest ×10 and ×100 steps
/// (0x2A as 10 L, 0x2B as 100 L…) but no source at hand says so, and a wrong guess would
/// misreport a volume tenfold: those codes are refused as unknown instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    J,
    Wh,
    KWh,
    MWh,
    MWhX100,
    KJ,
    MJ,
    GJ,
    GJx100,
    W,
    KW,
    MW,
    L,
    M3,
    LPerH,
    M3PerH,
}

impl Unit {
    pub fn from_code(code: u8) -> Option<Unit> {
        Some(match code {
            0x01 => Unit::J,
            0x02 => Unit::Wh,
            0x05 => Unit::KWh,
            0x08 => Unit::MWh,
            0x0A => Unit::MWhX100,
            0x0B => Unit::KJ,
            0x0E => Unit::MJ,
            0x11 => Unit::GJ,
            0x13 => Unit::GJx100,
            0x14 => Unit::W,
            0x17 => Unit::KW,
            0x1A => Unit::MW,
            0x29 => Unit::L,
            0x2C => Unit::M3,
            0x32 => Unit::LPerH,
            0x35 => Unit::M3PerH,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            Unit::J => 0x01,
            Unit::Wh => 0x02,
            Unit::KWh => 0x05,
            Unit::MWh => 0x08,
            Unit::MWhX100 => 0x0A,
            Unit::KJ => 0x0B,
            Unit::MJ => 0x0E,
            Unit::GJ => 0x11,
            Unit::GJx100 => 0x13,
            Unit::W => 0x14,
            Unit::KW => 0x17,
            Unit::MW => 0x1A,
            Unit::L => 0x29,
            Unit::M3 => 0x2C,
            Unit::LPerH => 0x32,
            Unit::M3PerH => 0x35,
        }
    }

    /// Divides a raw XXXXXX.XX count (hundredths) into m³; `None` for what is not a volume.
    /// A divisor rather than a factor, so that 12345 hundredths of a litre are exactly
    /// 12345 / 100000 m³.
    fn hundredths_per_m3(self) -> Option<f64> {
        match self {
            Unit::M3 => Some(100.0),
            Unit::L => Some(100_000.0),
            _ => None,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::J => "J",
            Unit::Wh => "Wh",
            Unit::KWh => "kWh",
            Unit::MWh => "MWh",
            Unit::MWhX100 => "MWh×100",
            Unit::KJ => "kJ",
            Unit::MJ => "MJ",
            Unit::GJ => "GJ",
            Unit::GJx100 => "GJ×100",
            Unit::W => "W",
            Unit::KW => "kW",
            Unit::MW => "MW",
            Unit::L => "L",
            Unit::M3 => "m³",
            Unit::LPerH => "L/h",
            Unit::M3PerH => "m³/h",
        })
    }
}

/// The valve of a meter with one, from its status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valve {
    Open,
    Closed,
    /// Stuck or failed; also what the one undefined pattern (0x80) is taken as.
    Abnormal,
    /// The answer carried no status.
    Unknown,
}

/// The status masks of the reference (xijunzhou/sdqr_energy_node_class `cj188.h`), applied to
/// the first status byte as that source does. Other sources (KingDa's firmware) put the valve
/// in bits 0–1 and the battery in bit 2 of that byte; [`Reading::status`] keeps the bytes as
/// sent for a device whose meters do so.
const BATTERY_LOW: u8 = 0x20;
const VALVE_MASK: u8 = 0xC0;
const VALVE_CLOSED: u8 = 0x40;
const VALVE_ABNORMAL: u8 = 0xC0;

impl Valve {
    fn from_status(st0: u8) -> Valve {
        match st0 & VALVE_MASK {
            0x00 => Valve::Open,
            VALVE_CLOSED => Valve::Closed,
            _ => Valve::Abnormal,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Valve::Open | Valve::Unknown => 0x00,
            Valve::Closed => VALVE_CLOSED,
            Valve::Abnormal => VALVE_ABNORMAL,
        }
    }
}

/// What a meter says in answer to DI 901F.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Current cumulative flow.
    pub volume_m3: f64,
    /// The cumulative flow on the last settlement day; `None` when the answer stops before it
    /// or it is not a volume in BCD (a meter without settlement days may send anything there).
    pub settlement_m3: Option<f64>,
    /// The meter's clock, local time as the meter keeps it; `None` when absent, zero or not a
    /// date. A wrong clock must not cost the volume.
    pub time: Option<NaiveDateTime>,
    pub battery_low: bool,
    pub valve: Valve,
    /// The two status bytes as sent, `None` when the answer stops before them.
    pub status: Option<[u8; 2]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{got} bytes after DI and SER, at least {expected} needed")]
    Short { expected: usize, got: usize },
    #[error("byte {0:#04x} is not BCD")]
    Bcd(u8),
    #[error("unit code {0:#04x} is not one CJ/T 188 defines")]
    UnknownUnit(u8),
    #[error("a volume was expected, the meter sent {0}")]
    NotAVolume(Unit),
}

/// The bytes of a 901F answer after DI and SER: current flow (4 + 1), settlement-day flow
/// (4 + 1), real time (7), status (2).
pub const READING_LEN: usize = 19;
const CURRENT_AT: usize = 0;
const SETTLEMENT_AT: usize = 5;
const TIME_AT: usize = 10;
const STATUS_AT: usize = 17;

fn field<const N: usize>(payload: &[u8], at: usize) -> Option<[u8; N]> {
    payload.get(at..at + N)?.try_into().ok()
}

fn bcd(b: u8) -> Result<u8, DecodeError> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    if hi > 9 || lo > 9 {
        return Err(DecodeError::Bcd(b));
    }
    Ok(hi * 10 + lo)
}

fn to_bcd(n: u8) -> u8 {
    ((n / 10 % 10) << 4) | (n % 10)
}

/// Four BCD bytes, low byte first, and a unit byte, to m³.
pub fn decode_volume(bytes: [u8; 5]) -> Result<f64, DecodeError> {
    let mut hundredths: u32 = 0;
    for b in bytes[..4].iter().rev() {
        hundredths = hundredths * 100 + u32::from(bcd(*b)?);
    }
    let unit = Unit::from_code(bytes[4]).ok_or(DecodeError::UnknownUnit(bytes[4]))?;
    let divisor = unit
        .hundredths_per_m3()
        .ok_or(DecodeError::NotAVolume(unit))?;
    Ok(f64::from(hundredths) / divisor)
}

/// m³ as four BCD bytes of hundredths (XXXXXX.XX) and the unit m³. Past 999999.99 the count
/// wraps as a meter's register does; what is negative or not a number is sent as zero.
pub fn encode_volume(m3: f64) -> [u8; 5] {
    let hundredths = if m3.is_finite() && m3 > 0.0 {
        (m3 * 100.0).round() % 100_000_000.0
    } else {
        0.0
    };
    // In 0..1e8 by now, so the cast neither saturates nor truncates a digit.
    let mut n = hundredths as u32;
    let mut out = [0u8; 5];
    for b in out[..4].iter_mut() {
        *b = to_bcd((n % 100) as u8);
        n /= 100;
    }
    out[4] = Unit::M3.code();
    out
}

/// ss mm hh DD MM YY CC, BCD, low byte first as the rest of the frame: KingDa's firmware
/// declares the fields in this order and the reference's source shows an answer so
/// (…, 11, 17, 20 for 2017-11).
pub fn decode_time(bytes: [u8; 7]) -> Option<NaiveDateTime> {
    let mut d = [0u8; 7];
    for (out, b) in d.iter_mut().zip(bytes) {
        *out = bcd(b).ok()?;
    }
    let [ss, mm, hh, day, month, yy, cc] = d;
    let year = i32::from(cc) * 100 + i32::from(yy);
    NaiveDate::from_ymd_opt(year, month.into(), day.into())?.and_hms_opt(
        hh.into(),
        mm.into(),
        ss.into(),
    )
}

/// The inverse of [`decode_time`]; no time (or a year past 9999) is seven zero bytes, which
/// decode as no time.
pub fn encode_time(time: Option<NaiveDateTime>) -> [u8; 7] {
    use chrono::{Datelike, Timelike};
    let Some(t) = time.filter(|t| (0..=9999).contains(&t.year())) else {
        return [0; 7];
    };
    // Every part is below 100 after these divisions; `to_bcd` keeps two digits regardless.
    let part = |n: u32| to_bcd(u8::try_from(n % 100).unwrap_or(0));
    let year = u32::try_from(t.year()).unwrap_or(0);
    [
        part(t.second()),
        part(t.minute()),
        part(t.hour()),
        part(t.day()),
        part(t.month()),
        part(year % 100),
        part(year / 100),
    ]
}

/// Decodes what follows DI and SER in a 901F answer. Only the current flow is required: a
/// meter that stops after it (aixiwang/python_cjt188 takes such short answers too) still
/// gives a reading; each later field is read when the answer holds all of it.
pub fn decode_reading(payload: &[u8]) -> Result<Reading, DecodeError> {
    let current = field::<5>(payload, CURRENT_AT).ok_or(DecodeError::Short {
        expected: 5,
        got: payload.len(),
    })?;
    let volume_m3 = decode_volume(current)?;
    let settlement_m3 = field::<5>(payload, SETTLEMENT_AT).and_then(|b| decode_volume(b).ok());
    let time = field::<7>(payload, TIME_AT).and_then(decode_time);
    let status = field::<2>(payload, STATUS_AT);
    let (battery_low, valve) = match status {
        Some([st0, _]) => (st0 & BATTERY_LOW != 0, Valve::from_status(st0)),
        None => (false, Valve::Unknown),
    };
    Ok(Reading {
        volume_m3,
        settlement_m3,
        time,
        battery_low,
        valve,
        status,
    })
}

/// The [`READING_LEN`] bytes of a 901F answer after DI and SER. The first status byte is made
/// from `battery_low` and `valve`, keeping `status`'s other bits; no settlement flow is sent
/// as zero.
pub fn encode_reading(r: &Reading) -> Vec<u8> {
    let mut out = Vec::with_capacity(READING_LEN);
    out.extend(encode_volume(r.volume_m3));
    out.extend(encode_volume(r.settlement_m3.unwrap_or(0.0)));
    out.extend(encode_time(r.time));
    out.extend(r.status_bytes());
    out
}

impl Reading {
    /// The status bytes that say `battery_low` and `valve`, with `status`'s other bits.
    pub fn status_bytes(&self) -> [u8; 2] {
        let [st0, st1] = self.status.unwrap_or([0, 0]);
        let battery = if self.battery_low { BATTERY_LOW } else { 0 };
        [
            (st0 & !(VALVE_MASK | BATTERY_LOW)) | self.valve.bits() | battery,
            st1,
        ]
    }
}

/// What a frame off the line is to the hub that sent `request`.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A master's frame (C bit 7 clear): our own request coming back through a half-duplex
    /// converter, or another master's. Keep listening.
    Echo,
    /// A meter other than the one asked. Keep listening.
    OtherMeter(Address),
    /// The meter asked, answering another SER: a late answer to an earlier request. Keep
    /// listening.
    Stale {
        ser: u8,
    },
    Reading(Reading),
    /// The answer to "read address".
    Address(Address),
    /// The meter answered with its error bit set; the status bytes as sent (0 when absent).
    Refused {
        status: [u8; 2],
    },
}

impl Answer {
    /// Ends the exchange: the meter asked has answered this request.
    pub fn settles(&self) -> bool {
        matches!(
            self,
            Answer::Reading(_) | Answer::Address(_) | Answer::Refused { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnswerError {
    #[error("meter type {0:#04x} is not a water meter")]
    NotWater(u8),
    #[error("control code {0} does not answer the request")]
    UnexpectedControl(Control),
    #[error("data identifier {:02X} {:02X} does not answer the request", .0[0], .0[1])]
    UnexpectedDi([u8; 2]),
    #[error("the answer is too short for DI and SER")]
    Short,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// What `frame` is to the hub that sent `request`: SER is checked, DI is taken in either byte
/// order, and a broadcast request takes an answer from any address.
pub fn interpret(request: &Request, frame: &Frame) -> Result<Answer, AnswerError> {
    if !frame.control.is_reply() {
        return Ok(Answer::Echo);
    }
    let to = request.to();
    if !to.is_broadcast() && frame.address != to {
        return Ok(Answer::OtherMeter(frame.address));
    }
    if !is_water(frame.meter_type) {
        return Err(AnswerError::NotWater(frame.meter_type));
    }
    let (control, di) = request.asks();
    if frame.control.function() != control.function() {
        return Err(AnswerError::UnexpectedControl(frame.control));
    }
    let ser = request.ser();
    if frame.control.is_error() {
        // KingDa's firmware: SER, then the two status bytes, no DI.
        let Some((&got, status)) = frame.data.split_first() else {
            return Err(AnswerError::Short);
        };
        if got != ser {
            return Ok(Answer::Stale { ser: got });
        }
        let at = |i: usize| status.get(i).copied().unwrap_or(0);
        return Ok(Answer::Refused {
            status: [at(0), at(1)],
        });
    }
    let (Some(di_bytes), Some(got)) = (frame.di_bytes(), frame.ser()) else {
        return Err(AnswerError::Short);
    };
    if DiOrder::of(di_bytes, di).is_none() {
        return Err(AnswerError::UnexpectedDi(di_bytes));
    }
    if got != ser {
        return Ok(Answer::Stale { ser: got });
    }
    Ok(match request {
        Request::Read { .. } => Answer::Reading(decode_reading(frame.payload())?),
        Request::ReadAddress { .. } => Answer::Address(frame.address),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meter() -> Address {
        "12345678901234".parse().unwrap()
    }

    fn frames_in(mut buf: &[u8]) -> (Vec<Frame>, Vec<(Reject, usize)>) {
        let (mut frames, mut skips) = (Vec::new(), Vec::new());
        loop {
            match scan(buf) {
                Scan::Frame { frame, consumed } => {
                    frames.push(frame);
                    buf = &buf[consumed..];
                }
                Scan::Skip { len, reason } => {
                    skips.push((reason, len));
                    buf = &buf[len..];
                }
                Scan::NeedMore => return (frames, skips),
            }
        }
    }

    /// A 901F answer from 12345678901234 to SER 5: 123456.78 m³ now, 123450.00 m³ on the
    /// settlement day, 2024-06-17 08:15:30, status 60 00 (battery low, valve closed).
    const REPLY: [u8; 35] = [
        0x68, 0x10, 0x34, 0x12, 0x90, 0x78, 0x56, 0x34, 0x12, 0x81, 0x16, // header, L = 22
        0x1F, 0x90, 0x05, // DI, SER
        0x78, 0x56, 0x34, 0x12, 0x2C, // current flow, m³
        0x00, 0x50, 0x34, 0x12, 0x2C, // settlement-day flow, m³
        0x30, 0x15, 0x08, 0x17, 0x06, 0x24, 0x20, // ss mm hh DD MM YY CC
        0x60, 0x00, // status
        // 68+10+34+12+90+78+56+34+12 = 0x262, +81+16 = 0x2F9, +1F+90+05 = 0x3AD,
        // +78+56+34+12+2C = 0x4ED, +00+50+34+12+2C = 0x5AF, +30+15+08+17+06+24+20 = 0x65D,
        // +60+00 = 0x6BD
        0xBD, 0x16,
    ];

    #[test]
    fn an_address_is_written_as_fourteen_digits_and_sent_low_byte_first() {
        let a = meter();
        assert_eq!(a.0, [0x34, 0x12, 0x90, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(a.to_string(), "12345678901234");
        assert_eq!(
            " 00000000000001 ".parse::<Address>(),
            Ok(Address([1, 0, 0, 0, 0, 0, 0]))
        );
        assert_eq!(Address::BROADCAST.to_string(), "AAAAAAAAAAAAAA");
        assert!(Address::BROADCAST.is_broadcast());
    }

    #[test]
    fn a_short_or_non_decimal_address_is_refused_not_padded() {
        assert_eq!("1234".parse::<Address>(), Err(AddressError::Length(4)));
        assert_eq!(
            "1234567890123A".parse::<Address>(),
            Err(AddressError::NotADigit('A'))
        );
        assert_eq!(
            "１２345678901234".parse::<Address>(),
            Err(AddressError::NotADigit('１'))
        );
    }

    #[test]
    fn a_read_request_is_byte_exact_with_wake_ups_and_without() {
        // CS by hand: 68+10 = 78, +34+12+90+78+56+34+12 = 262, +01+03 = 266, +1F+90 = 315,
        // +05 = 31A → 1A.
        let bare = [
            0x68, 0x10, 0x34, 0x12, 0x90, 0x78, 0x56, 0x34, 0x12, 0x01, 0x03, 0x1F, 0x90, 0x05,
            0x1A, 0x16,
        ];
        let mut woken = vec![0xFE, 0xFE, 0xFE];
        woken.extend(bare);
        assert_eq!(read_request(meter(), 5), woken);
        let options = RequestOptions {
            wake_up: false,
            ..RequestOptions::default()
        };
        assert_eq!(read_request_with(meter(), 5, options), bare);
        // DI the other way round: the same sum, so the same CS.
        let swapped = RequestOptions {
            wake_up: false,
            di_order: Some(DiOrder::HighFirst),
            meter_type: None,
        };
        let mut expected = bare;
        expected[11..13].copy_from_slice(&[0x90, 0x1F]);
        assert_eq!(read_request_with(meter(), 5, swapped), expected);
    }

    #[test]
    fn a_read_address_request_goes_to_any_meter_at_the_broadcast_address() {
        // CS by hand: 68 + AA×8 (T and the address) = 5B8, +03+03 = 5BE, +81+0A = 649 → 49.
        let mut expected = vec![0xFE, 0xFE, 0xFE, 0x68];
        expected.extend([0xAA; 8]);
        expected.extend([0x03, 0x03, 0x81, 0x0A, 0x00, 0x49, 0x16]);
        assert_eq!(read_address_request(), expected);
    }

    #[test]
    fn a_hand_made_reply_decodes_to_its_volume_time_and_status_bits() {
        let Scan::Frame { frame, consumed } = scan(&REPLY) else {
            panic!("no frame in {:?}", scan(&REPLY));
        };
        assert_eq!(consumed, REPLY.len());
        assert_eq!(frame.address(), meter());
        let request = Request::Read {
            to: meter(),
            ser: 5,
        };
        let Ok(Answer::Reading(r)) = interpret(&request, &frame) else {
            panic!("{:?}", interpret(&request, &frame));
        };
        assert_eq!(r.volume_m3, 123_456.78);
        assert_eq!(r.settlement_m3, Some(123_450.0));
        let t = NaiveDate::from_ymd_opt(2024, 6, 17)
            .unwrap()
            .and_hms_opt(8, 15, 30)
            .unwrap();
        assert_eq!(r.time, Some(t));
        assert!(r.battery_low);
        assert_eq!(r.valve, Valve::Closed);
        assert_eq!(r.status, Some([0x60, 0x00]));
    }

    #[test]
    fn the_status_masks_are_the_references() {
        let valve_and_battery = |st0: u8| {
            let mut payload = encode_reading(&Reading {
                volume_m3: 1.0,
                settlement_m3: None,
                time: None,
                battery_low: false,
                valve: Valve::Open,
                status: None,
            });
            payload[STATUS_AT] = st0;
            let r = decode_reading(&payload).unwrap();
            (r.valve, r.battery_low)
        };
        assert_eq!(valve_and_battery(0x00), (Valve::Open, false));
        assert_eq!(valve_and_battery(0x40), (Valve::Closed, false));
        assert_eq!(valve_and_battery(0xC0), (Valve::Abnormal, false));
        assert_eq!(valve_and_battery(0x80), (Valve::Abnormal, false));
        assert_eq!(valve_and_battery(0x20), (Valve::Open, true));
        // Bits 0–2 (the valve and battery of other sources) are not read.
        assert_eq!(valve_and_battery(0x07), (Valve::Open, false));
    }

    #[test]
    fn litres_are_converted_and_what_is_not_a_volume_is_an_error() {
        // 123.45 L
        assert_eq!(decode_volume([0x45, 0x23, 0x01, 0x00, 0x29]), Ok(0.12345));
        assert_eq!(decode_volume([0x45, 0x23, 0x01, 0x00, 0x2C]), Ok(123.45));
        assert_eq!(
            decode_volume([0x00, 0x00, 0x00, 0x00, 0x35]),
            Err(DecodeError::NotAVolume(Unit::M3PerH))
        );
        assert_eq!(
            decode_volume([0x00, 0x00, 0x00, 0x00, 0x2A]),
            Err(DecodeError::UnknownUnit(0x2A))
        );
        assert_eq!(
            decode_volume([0x00, 0x1A, 0x00, 0x00, 0x2C]),
            Err(DecodeError::Bcd(0x1A))
        );
        for code in 0..=u8::MAX {
            if let Some(unit) = Unit::from_code(code) {
                assert_eq!(unit.code(), code);
            }
        }
    }

    #[test]
    fn a_short_answer_keeps_what_it_holds() {
        assert_eq!(
            decode_reading(&[0x00, 0x01, 0x00]),
            Err(DecodeError::Short {
                expected: 5,
                got: 3
            })
        );
        let r = decode_reading(&[0x00, 0x01, 0x00, 0x00, 0x2C, 0x99]).unwrap();
        assert_eq!(r.volume_m3, 1.0);
        assert_eq!((r.settlement_m3, r.time, r.status), (None, None, None));
        assert_eq!((r.valve, r.battery_low), (Valve::Unknown, false));
    }

    #[test]
    fn an_unset_settlement_flow_and_a_clock_of_zeros_cost_nothing_else() {
        let mut payload = REPLY[14..33].to_vec();
        payload[SETTLEMENT_AT..SETTLEMENT_AT + 5].copy_from_slice(&[0xFF; 5]);
        payload[TIME_AT..TIME_AT + 7].copy_from_slice(&[0; 7]);
        let r = decode_reading(&payload).unwrap();
        assert_eq!(r.volume_m3, 123_456.78);
        assert_eq!((r.settlement_m3, r.time), (None, None));
        assert_eq!(r.valve, Valve::Closed);
    }

    #[test]
    fn noise_before_a_frame_is_counted_and_its_wake_ups_go_with_it() {
        let mut buf = vec![0x00, 0x13, 0xFF];
        buf.extend([0xFE; 4]);
        buf.extend(REPLY);
        assert_eq!(
            scan(&buf),
            Scan::Skip {
                len: 3,
                reason: Reject::Noise
            }
        );
        assert!(matches!(scan(&buf[3..]), Scan::Frame { consumed: 39, .. }));
    }

    #[test]
    fn a_line_idling_at_fe_keeps_only_a_few_for_the_frame_they_may_announce() {
        let idle = [0xFE; 20];
        assert_eq!(
            scan(&idle),
            Scan::Skip {
                len: 12,
                reason: Reject::Noise
            }
        );
        assert_eq!(scan(&idle[12..]), Scan::NeedMore);
        assert_eq!(Reject::ALL.len(), 5);
        assert_eq!(Reject::TooLong.to_string(), "too_long");
    }

    #[test]
    fn a_broken_checksum_drops_one_byte_and_the_next_frame_is_still_found() {
        let mut broken = REPLY;
        broken[20] ^= 0x01;
        assert_eq!(
            scan(&broken),
            Scan::Skip {
                len: 1,
                reason: Reject::BadChecksum
            }
        );
        let mut buf = broken.to_vec();
        buf.extend(REPLY);
        let (frames, skips) = frames_in(&buf);
        assert_eq!(frames.len(), 1);
        assert_eq!(skips.first(), Some(&(Reject::BadChecksum, 1)));
        assert_eq!(
            skips.iter().map(|(_, n)| n).sum::<usize>(),
            REPLY.len(),
            "only the broken frame is dropped: {skips:?}"
        );
    }

    #[test]
    fn a_bad_end_or_an_oversized_length_is_dropped() {
        let mut bad_end = REPLY;
        bad_end[34] = 0x17;
        assert_eq!(
            scan(&bad_end),
            Scan::Skip {
                len: 1,
                reason: Reject::BadEnd
            }
        );
        let mut too_long = REPLY;
        too_long[10] = 101;
        assert_eq!(
            scan(&too_long[..11]),
            Scan::Skip {
                len: 1,
                reason: Reject::TooLong
            }
        );
    }

    #[test]
    fn a_frame_arriving_in_pieces_needs_more_until_it_is_complete() {
        for cut in 0..REPLY.len() {
            assert_eq!(scan(&REPLY[..cut]), Scan::NeedMore, "cut at {cut}");
        }
        assert!(matches!(scan(&REPLY), Scan::Frame { consumed: 35, .. }));
    }

    #[test]
    fn a_frame_cut_off_by_a_complete_one_is_dropped_as_truncated() {
        // A start whose L promises more than ever comes: without the look-ahead the scanner
        // would wait for 113 bytes while a whole answer sits behind it.
        let mut buf = REPLY[..20].to_vec();
        buf[10] = 100;
        buf.extend(REPLY);
        assert_eq!(
            scan(&buf),
            Scan::Skip {
                len: 20,
                reason: Reject::Truncated
            }
        );
        let (frames, _) = frames_in(&buf);
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn the_echo_of_our_request_comes_first_then_the_reply() {
        let request = Request::Read {
            to: meter(),
            ser: 5,
        };
        let mut buf = request.to_wire(RequestOptions::default());
        buf.extend([0xFE, 0xFE, 0xFE]);
        buf.extend(REPLY);
        let (frames, _) = frames_in(&buf);
        let answers: Vec<Answer> = frames
            .iter()
            .map(|f| interpret(&request, f).unwrap())
            .collect();
        assert_eq!(answers[0], Answer::Echo);
        assert!(!answers[0].settles());
        assert!(matches!(&answers[1], Answer::Reading(r) if r.volume_m3 == 123_456.78));
        assert!(answers[1].settles());
    }

    #[test]
    fn a_reply_from_another_meter_or_to_another_ser_does_not_settle() {
        let frame = match scan(&REPLY) {
            Scan::Frame { frame, .. } => frame,
            other => panic!("{other:?}"),
        };
        let other: Address = "00000000000042".parse().unwrap();
        assert_eq!(
            interpret(&Request::Read { to: other, ser: 5 }, &frame),
            Ok(Answer::OtherMeter(meter()))
        );
        assert_eq!(
            interpret(
                &Request::Read {
                    to: meter(),
                    ser: 6
                },
                &frame
            ),
            Ok(Answer::Stale { ser: 5 })
        );
        // A broadcast read takes the one meter's answer.
        let broadcast = Request::Read {
            to: Address::BROADCAST,
            ser: 5,
        };
        assert!(matches!(
            interpret(&broadcast, &frame),
            Ok(Answer::Reading(_))
        ));
    }

    #[test]
    fn both_di_orders_are_accepted() {
        for di in [[0x1F, 0x90], [0x90, 0x1F]] {
            let frame = Frame::with_di(
                0x10,
                meter(),
                Control::READ_REPLY,
                di,
                7,
                &encode_volume(42.5),
            );
            let r = interpret(
                &Request::Read {
                    to: meter(),
                    ser: 7,
                },
                &frame,
            );
            assert!(
                matches!(r, Ok(Answer::Reading(ref r)) if r.volume_m3 == 42.5),
                "{r:?}"
            );
        }
        let frame = Frame::with_di(0x10, meter(), Control::READ_REPLY, [0x1F, 0x91], 7, &[]);
        assert_eq!(
            interpret(
                &Request::Read {
                    to: meter(),
                    ser: 7
                },
                &frame
            ),
            Err(AnswerError::UnexpectedDi([0x1F, 0x91]))
        );
    }

    #[test]
    fn an_error_reply_is_refused_with_its_status() {
        let frame = Frame::new(0x10, meter(), Control::READ_ERROR, vec![9, 0x04, 0x00]).unwrap();
        let request = Request::Read {
            to: meter(),
            ser: 9,
        };
        assert_eq!(
            interpret(&request, &frame),
            Ok(Answer::Refused {
                status: [0x04, 0x00]
            })
        );
        let gas = Frame::with_di(0x30, meter(), Control::READ_REPLY, [0x1F, 0x90], 9, &[]);
        assert_eq!(interpret(&request, &gas), Err(AnswerError::NotWater(0x30)));
        let address = Frame::with_di(
            0x10,
            meter(),
            Control::READ_ADDRESS_REPLY,
            [0x81, 0x0A],
            9,
            &[],
        );
        assert_eq!(
            interpret(&request, &address),
            Err(AnswerError::UnexpectedControl(Control(0x83)))
        );
    }

    #[test]
    fn the_read_address_answer_names_the_meter() {
        let frame = Frame::with_di(
            0x11,
            meter(),
            Control::READ_ADDRESS_REPLY,
            [0x0A, 0x81],
            0,
            &[],
        );
        assert_eq!(
            interpret(&Request::ReadAddress { ser: 0 }, &frame),
            Ok(Answer::Address(meter()))
        );
    }

    fn any_address() -> impl Strategy<Value = Address> {
        any::<[u8; 7]>().prop_map(Address)
    }

    /// Any time a meter's clock can show; none of them encodes as the seven zeros of "no time"
    /// (month and day are at least 1).
    fn any_time() -> impl Strategy<Value = Option<NaiveDateTime>> {
        proptest::option::of(
            (
                0i32..=9999,
                1u32..=12,
                1u32..=28,
                0u32..24,
                0u32..60,
                0u32..60,
            )
                .prop_map(|(y, mo, d, h, mi, s)| {
                    NaiveDate::from_ymd_opt(y, mo, d)
                        .and_then(|date| date.and_hms_opt(h, mi, s))
                        .unwrap()
                }),
        )
    }

    fn any_valve() -> impl Strategy<Value = Valve> {
        prop_oneof![
            Just(Valve::Open),
            Just(Valve::Closed),
            Just(Valve::Abnormal)
        ]
    }

    proptest! {
        #[test]
        fn scan_never_panics_and_always_makes_progress(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut buf = &bytes[..];
            loop {
                match scan(buf) {
                    Scan::Frame { consumed, .. } => {
                        prop_assert!((MIN_FRAME..=buf.len()).contains(&consumed));
                        buf = &buf[consumed..];
                    }
                    Scan::Skip { len, .. } => {
                        prop_assert!((1..=buf.len()).contains(&len));
                        buf = &buf[len..];
                    }
                    Scan::NeedMore => {
                        let wake = buf.iter().take_while(|b| **b == WAKE).count();
                        prop_assert!(wake <= MAX_IDLE_WAKE_UPS);
                        prop_assert!(wake == buf.len() || buf[wake] == START);
                        prop_assert!(buf.len() < MAX_IDLE_WAKE_UPS + MIN_FRAME + MAX_DATA);
                        break;
                    }
                }
            }
        }

        #[test]
        fn an_encoded_frame_scans_back_after_wake_ups_and_noise(
            meter_type in any::<u8>(), address in any_address(), control in any::<u8>(),
            data in proptest::collection::vec(any::<u8>(), 0..=MAX_DATA),
            noise in proptest::collection::vec(any::<u8>().prop_filter("not a start", |b| *b != START), 0..20),
            woken in any::<bool>(),
        ) {
            let frame = Frame::new(meter_type, address, Control(control), data).unwrap();
            let mut buf = noise;
            buf.extend(if woken { frame.to_wire() } else { frame.to_bytes() });
            let (frames, _) = frames_in(&buf);
            prop_assert_eq!(frames, vec![frame]);
        }

        #[test]
        fn a_reading_encodes_and_decodes_to_itself(
            hundredths in 0u32..100_000_000, settlement in proptest::option::of(0u32..100_000_000),
            time in any_time(), battery_low in any::<bool>(), valve in any_valve(),
            other_bits in 0u8..0x20, st1 in any::<u8>(),
        ) {
            let mut st0 = other_bits | valve.bits();
            if battery_low { st0 |= BATTERY_LOW; }
            let reading = Reading {
                volume_m3: f64::from(hundredths) / 100.0,
                settlement_m3: settlement.map(|n| f64::from(n) / 100.0),
                time,
                battery_low,
                valve,
                status: Some([st0, st1]),
            };
            let payload = encode_reading(&reading);
            prop_assert_eq!(payload.len(), READING_LEN);
            let mut back = decode_reading(&payload).unwrap();
            // No settlement flow is sent as zero.
            if reading.settlement_m3.is_none() {
                prop_assert_eq!(back.settlement_m3, Some(0.0));
                back.settlement_m3 = None;
            }
            prop_assert_eq!(back, reading);
        }

        #[test]
        fn an_address_prints_as_it_was_written(digits in "[0-9]{14}") {
            let a: Address = digits.parse().unwrap();
            prop_assert_eq!(a.to_string(), digits);
        }

        #[test]
        fn a_read_answers_itself_through_the_scanner(to in any_address(), ser in any::<u8>(), woken in any::<bool>()) {
            let options = RequestOptions { wake_up: woken, ..RequestOptions::default() };
            let request = Request::Read { to, ser };
            let (frames, _) = frames_in(&request.to_wire(options));
            prop_assert_eq!(frames.len(), 1);
            prop_assert_eq!(interpret(&request, &frames[0]), Ok(Answer::Echo));
        }
    }
}
