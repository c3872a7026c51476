//! RS-485 driver enable on a GPIO, for HATs whose transceiver (MAX485 and kin, RE tied to DE
//! inverted) needs the host to switch it between sending and listening.
//!
//! This is done by hand because no crate does it for a tokio stream: tokio-serial, mio-serial and
//! serialport know nothing of GPIO or the kernel's RS-485 mode (serialport only sets RTS when
//! told), tokio-modbus takes any `AsyncRead + AsyncWrite`, and max485-async, which does the same
//! dance, is for `embedded-io-async` on microcontrollers and cannot stand in for a tokio stream.
//! [`DeStream`] wraps the port: DE goes active at the first write of a frame and inactive once
//! the flush returns. tokio-modbus's RTU client ends every request with a flush, and
//! tokio-serial's flush on Unix is `tcdrain`, which returns once the UART has shifted out the
//! last stop bit (sources cited at [`DeStream`]).
//!
//! The timing limits, plainly: the release happens when `tcdrain` returns, and the kernel waits
//! for the transmitter by sleeping whole scheduler ticks between looks (`uart_wait_until_sent` in
//! Linux's `serial_core.c`: 4 ms at HZ=250, 10 ms at HZ=100), so DE lingers up to a tick after
//! the last stop bit, plus however long this task then waits to run. A slave may answer as soon
//! as t3.5 of silence has passed (3.5 character times: ≈3.65 ms at 9600 8N1, a fixed 1.75 ms
//! above 19200 baud), and the hub's receiver is off while DE is on, so a fast meter's first bytes
//! can be clipped and the read fails as garbled or late; the faster the line, the likelier.
//! Where available, prefer a HAT with automatic direction control or the kernel's RS-485 mode
//! (`dtoverlay=uartN,rs485`-style overlays, `TIOCSRS485`), where the UART driver switches the
//! transceiver itself when its transmitter runs empty. Use a DE pin at 9600 baud or below, or
//! with meters that answer late.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::gpio::{Active, OutputLine};

/// The pin, inactive again once the last handle on it is gone: a hub that stops or drops the
/// line must not leave the bus driven, drowning every answer on it.
struct Line {
    out: Box<dyn OutputLine>,
    active: Active,
}

impl Drop for Line {
    fn drop(&mut self) {
        self.out.set(self.active.level(false));
    }
}

/// A transceiver's driver-enable pin. Clones drive the same pin, so a line can hand one to each
/// connection it opens.
#[derive(Clone)]
pub struct DriverEnable {
    line: Arc<Mutex<Line>>,
    active: Active,
}

impl DriverEnable {
    /// Takes the pin and drives it inactive at once: whatever level it was opened at, the hub
    /// starts out listening.
    pub fn new(out: Box<dyn OutputLine>, active: Active) -> Self {
        let mut line = Line { out, active };
        line.out.set(active.level(false));
        Self {
            line: Arc::new(Mutex::new(line)),
            active,
        }
    }

    /// Enables (`true`) or disables the driver.
    pub fn set(&self, on: bool) {
        // A panic elsewhere while the pin was held must not leave the bus driven for good.
        let mut line = self.line.lock().unwrap_or_else(PoisonError::into_inner);
        line.out.set(self.active.level(on));
    }
}

impl fmt::Debug for DriverEnable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverEnable")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// A serial stream that enables the RS-485 driver for each frame it sends.
///
/// Why releasing on flush is right, checked in the sources of the versions in Cargo.lock:
/// - tokio-modbus-0.17.0 src/service/rtu.rs:65-66: each request is `framed.send(req_adu)`, after
///   clearing the read buffer; futures-util-0.3.34 src/sink/send.rs:37: `send` ends with
///   `poll_flush`; tokio-util-0.7.20 src/codec/framed_impl.rs:284-301: that flush writes the
///   whole frame and then flushes the transport (`poll_ready`, :263-268, writes nothing for a
///   frame below the 8 KiB back-pressure boundary).
/// - tokio-serial-5.5.0 src/lib.rs:307-315: on Unix `poll_flush` calls `flush` on the
///   `&mio_serial::SerialStream`, which is mio-serial-5.0.7 src/lib.rs:725-730: `tcdrain`. It
///   blocks the runtime thread until the frame is out (≈8 ms for a request at 9600 baud), as it
///   did before this wrapper. tokio-serial's `Ok(_)` at :311 also swallows a `tcdrain` error, so
///   an error from a real port's flush never reaches the arm below that handles one.
/// - tokio-modbus-0.17.0 src/service/mod.rs:11-20: `disconnect` shuts the transport down and
///   drops it; tokio-serial-5.5.0 src/lib.rs:317-320: shutdown is a flush, so it drains too,
///   except that it drops a `Pending` flush (a full tty buffer) and reports done at once.
#[derive(Debug)]
pub struct DeStream<T> {
    inner: T,
    de: DriverEnable,
    /// Whether this stream has the driver enabled, so only a frame's first write and its flush
    /// touch the pin.
    keyed: bool,
}

impl<T> DeStream<T> {
    /// Wraps `inner`; the driver stays as it is until the first write.
    pub fn new(inner: T, de: DriverEnable) -> Self {
        Self {
            inner,
            de,
            keyed: false,
        }
    }

    fn key(&mut self) {
        if !self.keyed {
            self.de.set(true);
            self.keyed = true;
        }
    }

    fn release(&mut self) {
        if self.keyed {
            self.de.set(false);
            self.keyed = false;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Before the bytes reach the UART: its first start bit must already go out on the bus.
        this.key();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        if written.is_err() {
            // Nothing more goes out for this frame, and a bus left driven would drown every
            // answer until some later flush.
            this.release();
        }
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Ready only once the last stop bit has left (tcdrain); releasing earlier clips the frame.
        let flushed = ready!(Pin::new(&mut this.inner).poll_flush(cx));
        this.release();
        Poll::Ready(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
        this.release();
        Poll::Ready(shut)
    }
}

impl<T> Drop for DeStream<T> {
    fn drop(&mut self) {
        // Mid-frame this clips what is still in the UART; that frame was abandoned anyway, and
        // the slave discards it on its CRC.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::MutexGuard;
    use std::time::Duration;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;
    use tokio::time::{sleep_until, timeout, Instant, Sleep};
    use tokio_modbus::client::{rtu, Client, Reader};
    use tokio_modbus::Slave;

    use super::*;
    use crate::gpio::sim::SimPins;
    use crate::gpio::Pins;

    const PIN: u8 = 22;
    const UNIT: u8 = 7;
    const BAUD: u32 = 9600;
    /// Far longer than a request and its answer take at 9600 baud (≈25 ms).
    const PATIENCE: Duration = Duration::from_millis(200);
    /// A read-holding-registers request: unit, function, address, count, CRC.
    const REQUEST_LEN: usize = 8;

    /// 8N1: start bit, eight data bits, stop bit.
    fn char_time(baud: u32) -> Duration {
        Duration::from_nanos(10 * 1_000_000_000 / u64::from(baud))
    }

    /// The silence that ends an RTU frame (Modbus over serial line, 2.5.1.1).
    fn t35(baud: u32) -> Duration {
        if baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            char_time(baud) * 7 / 2
        }
    }

    fn crc16(data: &[u8]) -> u16 {
        let mut crc = 0xFFFF_u16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transceiver's view of the DE pin: the levels the pins recorded, never the stream's own
    /// idea of whether it is sending.
    #[derive(Clone)]
    struct DePin {
        pins: SimPins,
        pin: u8,
        active: Active,
    }

    impl DePin {
        fn enabled_now(&self) -> bool {
            self.pins
                .output_level(self.pin)
                .is_some_and(|level| self.active.is_active(level))
        }

        fn changes_so_far(&self) -> usize {
            self.pins.writes(self.pin).len()
        }

        /// Whether every level set after the first `skip` changes and before `until` kept the
        /// driver enabled. Counting changes rather than comparing instants orders the ones made
        /// within one instant of the paused clock.
        fn held_enabled(&self, skip: usize, until: Instant) -> bool {
            self.pins
                .writes(self.pin)
                .iter()
                .skip(skip)
                .filter(|(at, _)| *at < until)
                .all(|&(_, level)| self.active.is_active(level))
        }
    }

    #[derive(Debug, Default)]
    struct WireLog {
        /// Bytes the UART sent while the driver was off for some of their time: lost.
        tx_dropped: usize,
        /// Bytes the bus carried while the hub's receiver was off: lost.
        rx_dropped: usize,
        /// When answer bytes reached the hub.
        rx_heard: Vec<Instant>,
    }

    struct Byte {
        value: u8,
        /// When its stop bit has left the UART.
        sent_at: Instant,
        changes_at_write: usize,
        enabled_at_write: bool,
    }

    /// The hub's UART and a MAX485-style transceiver (RE = !DE) in front of it, at `baud`.
    ///
    /// Writes are queued like the kernel's tty buffer and shifted out one character time per
    /// byte; a byte reaches the bus only if DE was enabled when it was handed over and stayed so
    /// until its stop bit left. `flush` returns when the last stop bit has left, as `tcdrain`
    /// does. What the bus carries reaches the hub only while DE is off.
    struct HalfDuplexWire {
        uart: mpsc::UnboundedSender<Byte>,
        heard: DuplexStream,
        de: DePin,
        char_time: Duration,
        busy_until: Instant,
        drain: Option<Pin<Box<Sleep>>>,
    }

    /// The wire, the meter's end of the bus, and what the wire saw.
    fn half_duplex_wire(
        de: DePin,
        baud: u32,
    ) -> (HalfDuplexWire, DuplexStream, Arc<Mutex<WireLog>>) {
        let (hub_end, meter_end) = duplex(1024);
        let (mut from_bus, mut to_bus) = tokio::io::split(hub_end);
        let (mut heard_in, heard) = duplex(1024);
        let (uart, mut shifter) = mpsc::unbounded_channel::<Byte>();
        let log = Arc::new(Mutex::new(WireLog::default()));

        let (d, l) = (de.clone(), log.clone());
        tokio::spawn(async move {
            while let Some(b) = shifter.recv().await {
                sleep_until(b.sent_at).await;
                if b.enabled_at_write && d.held_enabled(b.changes_at_write, b.sent_at) {
                    if to_bus.write_all(&[b.value]).await.is_err() {
                        return;
                    }
                } else {
                    lock(&l).tx_dropped += 1;
                }
            }
        });

        let (d, l) = (de.clone(), log.clone());
        tokio::spawn(async move {
            let mut buf = [0_u8; 256];
            loop {
                let n = match from_bus.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if d.enabled_now() {
                    lock(&l).rx_dropped += n;
                    continue;
                }
                lock(&l).rx_heard.push(Instant::now());
                if heard_in.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });

        let wire = HalfDuplexWire {
            uart,
            heard,
            de,
            char_time: char_time(baud),
            busy_until: Instant::now(),
            drain: None,
        };
        (wire, meter_end, log)
    }

    impl AsyncRead for HalfDuplexWire {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().heard).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for HalfDuplexWire {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let enabled_at_write = this.de.enabled_now();
            let changes_at_write = this.de.changes_so_far();
            let mut sent_at = this.busy_until.max(Instant::now());
            for &value in buf {
                sent_at += this.char_time;
                let byte = Byte {
                    value,
                    sent_at,
                    changes_at_write,
                    enabled_at_write,
                };
                if this.uart.send(byte).is_err() {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
            }
            this.busy_until = sent_at;
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let until = this.busy_until;
            let drain = this
                .drain
                .get_or_insert_with(|| Box::pin(sleep_until(until)));
            if drain.deadline() != until {
                drain.as_mut().reset(until);
            }
            ready!(drain.as_mut().poll(cx));
            this.drain = None;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    fn register(address: u16) -> u16 {
        address.wrapping_mul(31).wrapping_add(7)
    }

    #[derive(Debug, Default)]
    struct MeterLog {
        /// Well-formed requests for this unit, each answered.
        answered: usize,
        /// Frames that failed the CRC or were cut short.
        garbled: usize,
    }

    /// A meter on the bus: takes a frame as the bytes up to t3.5 of silence, as RTU slaves do,
    /// and answers read-holding-registers at once, so its answer starts t3.5 after the request's
    /// last byte.
    fn meter(mut bus: DuplexStream, baud: u32) -> Arc<Mutex<MeterLog>> {
        let log = Arc::new(Mutex::new(MeterLog::default()));
        let l = log.clone();
        tokio::spawn(async move {
            let mut buf = [0_u8; 256];
            loop {
                let mut frame = Vec::new();
                match bus.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => frame.extend_from_slice(&buf[..n]),
                }
                loop {
                    match timeout(t35(baud), bus.read(&mut buf)).await {
                        Err(_) => break,
                        Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => frame.extend_from_slice(&buf[..n]),
                    }
                }
                let Some((body, crc)) = frame.split_last_chunk::<2>() else {
                    lock(&l).garbled += 1;
                    continue;
                };
                if frame.len() != REQUEST_LEN || crc16(body) != u16::from_le_bytes(*crc) {
                    lock(&l).garbled += 1;
                    continue;
                }
                if body[0] != UNIT || body[1] != 0x03 {
                    continue;
                }
                let address = u16::from_be_bytes([body[2], body[3]]);
                let count = u16::from_be_bytes([body[4], body[5]]);
                let mut answer = vec![UNIT, 0x03, (count * 2) as u8];
                for r in 0..count {
                    answer.extend_from_slice(&register(address + r).to_be_bytes());
                }
                answer.extend_from_slice(&crc16(&answer).to_le_bytes());
                lock(&l).answered += 1;
                if bus.write_all(&answer).await.is_err() {
                    return;
                }
            }
        });
        log
    }

    struct Rig {
        pins: SimPins,
        de: DriverEnable,
        sense: DePin,
        wire: HalfDuplexWire,
        wire_log: Arc<Mutex<WireLog>>,
        meter_log: Arc<Mutex<MeterLog>>,
    }

    fn rig(active: Active) -> Rig {
        let pins = SimPins::new();
        let Ok(line) = pins.output(PIN, active.level(false)) else {
            panic!("the DE pin");
        };
        let de = DriverEnable::new(line, active);
        let sense = DePin {
            pins: pins.clone(),
            pin: PIN,
            active,
        };
        let (wire, meter_end, wire_log) = half_duplex_wire(sense.clone(), BAUD);
        let meter_log = meter(meter_end, BAUD);
        Rig {
            pins,
            de,
            sense,
            wire,
            wire_log,
            meter_log,
        }
    }

    fn levels(pins: &SimPins) -> Vec<bool> {
        pins.writes(PIN)
            .into_iter()
            .map(|(_, level)| level)
            .collect()
    }

    /// The pin's levels for a DE opened inactive, driven inactive again by `DriverEnable::new`,
    /// then switched on and off `frames` times.
    fn bracketed(active: Active, frames: usize) -> Vec<bool> {
        let mut want = vec![active.level(false); 2];
        for _ in 0..frames {
            want.extend([active.level(true), active.level(false)]);
        }
        want
    }

    fn expected(address: u16, count: u16) -> Vec<u16> {
        (address..address + count).map(register).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn driver_enable_brackets_every_request_and_is_released_before_the_reply() {
        let r = rig(Active::High);
        let mut ctx = rtu::attach_slave(DeStream::new(r.wire, r.de.clone()), Slave(UNIT));

        for i in 0..20_u16 {
            let address = 100 + 10 * i;
            let got = timeout(PATIENCE, ctx.read_holding_registers(address, 3)).await;
            let Ok(Ok(Ok(words))) = got else {
                panic!("read {i} failed: {got:?}, wire {:?}", lock(&r.wire_log));
            };
            assert_eq!(words, expected(address, 3), "read {i}");
        }

        assert_eq!(levels(&r.pins), bracketed(Active::High, 20));
        assert!(!r.sense.enabled_now(), "the bus is left to the meters");
        let wire = lock(&r.wire_log);
        assert_eq!((wire.tx_dropped, wire.rx_dropped), (0, 0), "{wire:?}");
        assert_eq!(lock(&r.meter_log).answered, 20);

        // Each release comes once the request's last stop bit has left and before the answer.
        let frame_time = char_time(BAUD) * REQUEST_LEN as u32;
        let writes = r.pins.writes(PIN);
        for (i, pair) in writes[2..].chunks(2).enumerate() {
            let [(on, _), (off, _)] = pair else {
                panic!("unpaired {pair:?}")
            };
            assert!(*off - *on >= frame_time, "request {i} clipped");
            let Some(answer) = wire.rx_heard.iter().find(|at| *at > on) else {
                panic!("no answer to request {i}")
            };
            assert!(
                off < answer,
                "request {i}: DE still on when the answer came"
            );
        }
    }

    /// Test-only mis-wirings of DE, to show the wire model catches them.
    enum Misdriven {
        /// Keyed for the first frame and never released.
        NeverReleased,
        /// Released as soon as the bytes are handed to the UART, without waiting for them to
        /// leave it.
        ReleasedAtWrite,
    }

    struct Misdriving<T> {
        inner: T,
        de: DriverEnable,
        how: Misdriven,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Misdriving<T> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Misdriving<T> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.de.set(true);
            let written = Pin::new(&mut this.inner).poll_write(cx, buf);
            if let Misdriven::ReleasedAtWrite = this.how {
                this.de.set(false);
            }
            written
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_driver_never_released_deafens_the_hub_to_the_answer() {
        let r = rig(Active::High);
        let stream = Misdriving {
            inner: r.wire,
            de: r.de.clone(),
            how: Misdriven::NeverReleased,
        };
        let mut ctx = rtu::attach_slave(stream, Slave(UNIT));

        let got = timeout(PATIENCE, ctx.read_holding_registers(100, 3)).await;

        assert!(
            got.is_err(),
            "an answer through a disabled receiver: {got:?}"
        );
        assert_eq!(lock(&r.meter_log).answered, 1, "the request went out");
        let wire = lock(&r.wire_log);
        assert_eq!(wire.rx_dropped, 5 + 2 * 3, "the whole answer was lost");
        assert!(wire.rx_heard.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn releasing_the_driver_before_the_uart_has_drained_loses_the_request() {
        let r = rig(Active::High);
        let stream = Misdriving {
            inner: r.wire,
            de: r.de.clone(),
            how: Misdriven::ReleasedAtWrite,
        };
        let mut ctx = rtu::attach_slave(stream, Slave(UNIT));

        let got = timeout(PATIENCE, ctx.read_holding_registers(100, 3)).await;

        assert!(got.is_err(), "an answer to a request never driven: {got:?}");
        assert_eq!(lock(&r.wire_log).tx_dropped, REQUEST_LEN);
        assert_eq!(lock(&r.meter_log).answered, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_driver_enabled_the_request_never_reaches_the_meter() {
        let r = rig(Active::High);
        let mut ctx = rtu::attach_slave(r.wire, Slave(UNIT));

        let got = timeout(PATIENCE, ctx.read_holding_registers(100, 3)).await;

        assert!(got.is_err(), "{got:?}");
        assert_eq!(lock(&r.wire_log).tx_dropped, REQUEST_LEN);
        let meter = lock(&r.meter_log);
        assert_eq!((meter.answered, meter.garbled), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_active_low_driver_enable_drives_the_inverted_levels() {
        let r = rig(Active::Low);
        let mut ctx = rtu::attach_slave(DeStream::new(r.wire, r.de.clone()), Slave(UNIT));

        for address in [0_u16, 40, 4000] {
            let got = timeout(PATIENCE, ctx.read_holding_registers(address, 2)).await;
            let Ok(Ok(Ok(words))) = got else {
                panic!("read at {address} failed: {got:?}");
            };
            assert_eq!(words, expected(address, 2));
        }

        let want = bracketed(Active::Low, 3);
        assert_eq!(
            want,
            [true, true, false, true, false, true, false, true],
            "low drives, high listens"
        );
        assert_eq!(levels(&r.pins), want);
        assert_eq!(r.pins.output_level(PIN), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_stream_mid_frame_releases_the_driver() {
        let r = rig(Active::High);
        let mut ctx = rtu::attach_slave(DeStream::new(r.wire, r.de.clone()), Slave(UNIT));

        // The request takes 8.3 ms to leave at 9600 baud; give up 2 ms in, as a short read
        // timeout would.
        let got = timeout(Duration::from_millis(2), ctx.read_holding_registers(100, 3)).await;
        assert!(got.is_err());
        assert!(r.sense.enabled_now(), "mid-frame, the bus is still driven");

        drop(ctx);

        assert!(!r.sense.enabled_now());
        assert_eq!(levels(&r.pins), bracketed(Active::High, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutting_the_stream_down_mid_frame_lets_the_frame_out_then_releases_the_driver() {
        let r = rig(Active::High);
        let mut stream = DeStream::new(r.wire, r.de.clone());
        let mut request = vec![UNIT, 0x03, 0x00, 0x64, 0x00, 0x03];
        request.extend_from_slice(&crc16(&request).to_le_bytes());
        assert!(stream.write_all(&request).await.is_ok());
        assert!(r.sense.enabled_now());

        let shut = stream.shutdown().await;

        assert!(shut.is_ok(), "{shut:?}");
        assert!(!r.sense.enabled_now(), "released by the shutdown itself");
        assert_eq!(levels(&r.pins), bracketed(Active::High, 1));
        let writes = r.pins.writes(PIN);
        assert!(writes[3].0 - writes[2].0 >= char_time(BAUD) * REQUEST_LEN as u32);
        tokio::time::sleep(t35(BAUD) * 2).await;
        assert_eq!(lock(&r.wire_log).tx_dropped, 0, "the frame was not clipped");
        assert_eq!(lock(&r.meter_log).answered, 1);
        drop(stream);
    }

    #[tokio::test(start_paused = true)]
    async fn disconnecting_the_modbus_context_mid_frame_releases_the_driver() {
        let r = rig(Active::High);
        let mut ctx = rtu::attach_slave(DeStream::new(r.wire, r.de.clone()), Slave(UNIT));
        let got = timeout(Duration::from_millis(2), ctx.read_holding_registers(100, 3)).await;
        assert!(got.is_err());

        let closed = ctx.disconnect().await;

        assert!(closed.is_ok(), "{closed:?}");
        assert!(
            !r.sense.enabled_now(),
            "released before the context is dropped"
        );
        assert_eq!(levels(&r.pins), bracketed(Active::High, 1));
        assert_eq!(lock(&r.wire_log).tx_dropped, 0, "the frame was not clipped");
    }

    /// A port that breaks on write or on flush.
    struct BrokenPort {
        on_flush: bool,
    }

    impl AsyncRead for BrokenPort {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    impl AsyncWrite for BrokenPort {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.on_flush {
                Poll::Ready(Ok(buf.len()))
            } else {
                Poll::Ready(Err(io::Error::other("EIO on write")))
            }
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.on_flush {
                Poll::Ready(Err(io::Error::other("EIO on tcdrain")))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn request_over_broken_port(on_flush: bool) {
        let pins = SimPins::new();
        let Ok(line) = pins.output(PIN, false) else {
            panic!("the DE pin");
        };
        let de = DriverEnable::new(line, Active::High);
        let port = BrokenPort { on_flush };
        let mut ctx = rtu::attach_slave(DeStream::new(port, de.clone()), Slave(UNIT));

        let got = ctx.read_holding_registers(100, 3).await;

        assert!(
            matches!(got, Err(tokio_modbus::Error::Transport(_))),
            "{got:?}"
        );
        assert_eq!(pins.output_level(PIN), Some(false), "released at once");
        assert_eq!(levels(&pins), bracketed(Active::High, 1));
        drop(ctx);
        assert_eq!(levels(&pins), bracketed(Active::High, 1), "released once");
        drop(de);
    }

    #[tokio::test]
    async fn a_failed_write_releases_the_driver() {
        request_over_broken_port(false).await;
    }

    #[tokio::test]
    async fn a_failed_flush_releases_the_driver() {
        request_over_broken_port(true).await;
    }

    #[tokio::test]
    async fn the_line_is_left_inactive_and_free_when_the_last_driver_enable_goes() {
        let pins = SimPins::new();
        let Ok(line) = pins.output(PIN, true) else {
            panic!("the DE pin");
        };
        let de = DriverEnable::new(line, Active::High);
        assert_eq!(
            pins.output_level(PIN),
            Some(false),
            "inactive from the start"
        );
        assert_eq!(format!("{de:?}"), "DriverEnable { active: High, .. }");
        let other = de.clone();

        de.set(true);
        drop(de);
        assert_eq!(pins.output_level(PIN), Some(true), "the clone still drives");

        drop(other);
        assert_eq!(pins.output_level(PIN), Some(false));
        assert!(!pins.is_held(PIN));
    }

    #[test]
    fn the_meter_checksum_is_modbus_crc16() {
        // A widely published frame, so a checksum bug cannot hide behind a meter and a test
        // that agree with each other.
        let frame = [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A];
        assert_eq!(crc16(&frame).to_le_bytes(), [0xC5, 0xCD]);
    }
}
