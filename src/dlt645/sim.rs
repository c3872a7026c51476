//! A simulated DL/T 645 line: meters by address that answer reads with plausible values (the
//! same park model as the Modbus simulator), over any byte stream — TCP like a serial server,
//! or one end of a pty pair standing in for a serial port. It reads with [`scan`], so it
//! shrugs off wake-ups and noise like a meter does, and it encodes with the code the hub
//! decodes with: the byte-exact vectors live in `frame`'s tests.
//!
//! Over a pty: `socat -d -d pty,raw,echo=0 pty,raw,echo=0` gives two ports; open one (as a
//! tokio file or a tokio-serial port) and hand it to [`Simulator::serve_stream`], and point the
//! hub at the other.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::frame::{scan, Address, Control, ErrorCode, Frame, Quantity, Scan, ValueError, WAKE_UP};
use crate::profile::Kind;

/// How a simulated meter behaves on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Never answers: a dead meter, or one at another baud rate.
    Silent,
    /// Refuses every read with this error (its address it still tells).
    ErrorReply(ErrorCode),
}

struct Meter {
    behaviour: Behaviour,
    /// Values fixed by a test.
    pinned: HashMap<Quantity, f64>,
    /// Varies meters from each other.
    seed: f64,
}

/// A meter's first reply byte comes this long after the request's last, if not told otherwise
/// (meters take tens of milliseconds; the standard allows up to 500 ms).
pub const DEFAULT_DELAY: Duration = Duration::from_millis(20);

/// A partial frame with the line quiet this long is forgotten, as a meter's receiver resets.
const QUIET_RESET: Duration = Duration::from_millis(500);
/// More unscanned bytes than this is not a frame in progress (scan keeps at most one).
const MAX_BUFFER: usize = 4096;

/// The simulated line; shared by every connection to it.
pub struct Simulator {
    meters: RwLock<BTreeMap<Address, Meter>>,
    requests: AtomicU64,
    echo: AtomicBool,
    delay_us: AtomicU64,
    started: Instant,
}

impl Default for Simulator {
    fn default() -> Self {
        Self {
            meters: RwLock::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            echo: AtomicBool::new(false),
            delay_us: AtomicU64::new(duration_us(DEFAULT_DELAY)),
            started: Instant::now(),
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Simulator {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Puts a meter at `address`, answering normally.
    pub fn add(&self, address: Address) {
        let n = address
            .wire()
            .iter()
            .fold(0u64, |n, b| n.wrapping_mul(256).wrapping_add(u64::from(*b)));
        let seed = (n % 1000) as f64 * 0.618_033_988_75 % 1.0;
        self.meters().insert(
            address,
            Meter {
                behaviour: Behaviour::Normal,
                pinned: HashMap::new(),
                seed,
            },
        );
    }

    pub fn set_behaviour(&self, address: Address, behaviour: Behaviour) {
        if let Some(m) = self.meters().get_mut(&address) {
            m.behaviour = behaviour;
        }
    }

    /// Fixes a value (in the unit of [`Quantity::unit`]) until pinned again; refused when the
    /// meter's digits cannot hold it. A meter not on the line is ignored.
    pub fn pin(&self, address: Address, quantity: Quantity, value: f64) -> Result<(), ValueError> {
        quantity.encode(value)?;
        if let Some(m) = self.meters().get_mut(&address) {
            m.pinned.insert(quantity, value);
        }
        Ok(())
    }

    /// Echo every byte received before answering, as a half-duplex adapter without echo
    /// suppression does: the master then reads its own request before the reply.
    pub fn set_echo(&self, echo: bool) {
        self.echo.store(echo, Ordering::Relaxed);
    }

    /// How long a meter takes to answer.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(duration_us(delay), Ordering::Relaxed);
    }

    /// Request frames seen on the line, to any meter, answered or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The value a meter serves now (before rounding to its digits).
    pub fn value(&self, address: Address, quantity: Quantity) -> Option<f64> {
        let meters = self.meters.read().unwrap_or_else(PoisonError::into_inner);
        meters.get(&address).map(|m| self.value_of(m, quantity))
    }

    fn meters(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Address, Meter>> {
        self.meters.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn value_of(&self, m: &Meter, quantity: Quantity) -> f64 {
        if let Some(v) = m.pinned.get(&quantity) {
            return *v;
        }
        // The Modbus simulator's park, so that a demo mixing both protocols looks like one site.
        let kind = if quantity.is_counter() {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        let t = self.started.elapsed().as_secs_f64();
        crate::modbus::sim::model(quantity.name(), kind, t, m.seed)
            .as_f64()
            .unwrap_or(0.0)
    }

    /// What the line carries back after `request`: each answering meter's wake-ups and reply,
    /// in address order; nothing for a reply, a silent meter, an address nobody has, or the
    /// broadcast time sync.
    ///
    /// A read or read-address request to AA×6 is answered by every meter on the line. With one
    /// meter that is how an installer finds its address; with several, real replies collide
    /// into garbage (here they come one after the other), which is the installer's problem.
    pub fn answer(&self, request: &Frame) -> Vec<u8> {
        if request.control.is_reply() {
            // Another meter's reply on a shared line.
            return Vec::new();
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let meters = self.meters.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (address, meter) in meters.iter() {
            if !(request.address.is_broadcast() || request.address == *address)
                || meter.behaviour == Behaviour::Silent
            {
                continue;
            }
            let Some(reply) = self.reply(*address, meter, request) else {
                continue;
            };
            // A reply holds at most 4 + 4 bytes of data: the encoder cannot refuse it.
            if let Ok(bytes) = reply.to_bytes() {
                out.extend(WAKE_UP);
                out.extend(bytes);
            }
        }
        out
    }

    fn reply(&self, address: Address, meter: &Meter, request: &Frame) -> Option<Frame> {
        let error = |code: ErrorCode| Frame {
            address,
            control: request.control.error_reply(),
            data: vec![code.0],
        };
        match request.control {
            Control::READ => {
                let Some(&[d0, d1, d2, d3]) = request.data.get(..4) else {
                    return Some(error(ErrorCode::OTHER));
                };
                if let Behaviour::ErrorReply(code) = meter.behaviour {
                    return Some(error(code));
                }
                let di = u32::from_le_bytes([d0, d1, d2, d3]);
                let Some(quantity) = Quantity::from_di(di) else {
                    return Some(error(ErrorCode::NO_DATA));
                };
                let Ok(payload) = quantity.encode(self.value_of(meter, quantity)) else {
                    return Some(error(ErrorCode::OTHER));
                };
                let mut data = di.to_le_bytes().to_vec();
                data.extend(payload);
                Some(Frame {
                    address,
                    control: Control::READ_REPLY,
                    data,
                })
            }
            Control::READ_ADDRESS => Some(Frame {
                address,
                control: Control::READ_ADDRESS_REPLY,
                data: address.wire().to_vec(),
            }),
            // Broadcast commands are never answered.
            _ if request.address.is_broadcast() => None,
            // Writes, freezes, password changes: not part of a meter's simulation.
            _ => Some(error(ErrorCode::OTHER)),
        }
    }

    /// Serves one byte stream (a TCP connection, a pty) until it closes or `shutdown`.
    pub async fn serve_stream<S>(
        &self,
        mut stream: S,
        shutdown: CancellationToken,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::select! {
            r = self.converse(&mut stream) => r,
            _ = shutdown.cancelled() => Ok(()),
        }
    }

    async fn converse<S>(&self, stream: &mut S) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        loop {
            let n = if buf.is_empty() {
                stream.read(&mut chunk).await?
            } else {
                match tokio::time::timeout(QUIET_RESET, stream.read(&mut chunk)).await {
                    Ok(n) => n?,
                    Err(_) => {
                        buf.clear();
                        continue;
                    }
                }
            };
            if n == 0 {
                return Ok(());
            }
            let received = &chunk[..n];
            if self.echo.load(Ordering::Relaxed) {
                stream.write_all(received).await?;
                stream.flush().await?;
            }
            buf.extend_from_slice(received);
            loop {
                match scan(&buf) {
                    Scan::Frame { frame, consumed } => {
                        buf.drain(..consumed.min(buf.len()));
                        let reply = self.answer(&frame);
                        if !reply.is_empty() {
                            let delay = self.delay_us.load(Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_micros(delay)).await;
                            stream.write_all(&reply).await?;
                            stream.flush().await?;
                        }
                    }
                    Scan::Skip { len, reason } => {
                        tracing::trace!("DL/T 645 simulator dropped {len} bytes: {reason}");
                        buf.drain(..len.min(buf.len()));
                    }
                    Scan::NeedMore => break,
                }
            }
            if buf.len() > MAX_BUFFER {
                buf.clear();
            }
        }
    }

    /// Serves every connection to `listener` (a serial server with meters behind it) until
    /// `shutdown`.
    pub async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, a connection reset before accept: not the line's end.
                    tracing::debug!("DL/T 645 simulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let sim = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = sim.serve_stream(stream, stop).await {
                    tracing::debug!("DL/T 645 simulator connection from {peer} ended: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt645::frame::{decode_value, read_address_request, read_request, Reply};
    use std::net::SocketAddr;
    use tokio::net::TcpStream;

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    async fn line(sim: &Arc<Simulator>) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(sim.clone().serve_tcp(listener, stop.clone()));
        (at, stop)
    }

    /// The next frame on the connection, as a master reads: whatever scan says, within 2 s.
    async fn next_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match scan(buf) {
                Scan::Frame { frame, consumed } => {
                    buf.drain(..consumed);
                    return Some(frame);
                }
                Scan::Skip { len, .. } => {
                    buf.drain(..len);
                    continue;
                }
                Scan::NeedMore => {}
            }
            let mut chunk = [0u8; 256];
            let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one quantity the way a master does.
    async fn read(conn: &mut TcpStream, buf: &mut Vec<u8>, a: Address, q: Quantity) -> f64 {
        conn.write_all(&read_request(a, q.di())).await.unwrap();
        value_of(&next_frame(conn, buf).await.unwrap().reply().unwrap())
    }

    fn value_of(reply: &Reply) -> f64 {
        match reply {
            Reply::Data { di, payload, .. } => decode_value(*di, payload).unwrap(),
            other => panic!("not data: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_meter_answers_a_read_over_tcp_with_its_pinned_value() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        sim.pin(a, Quantity::EnergyImport, 1234.56).unwrap();
        sim.pin(a, Quantity::PowerTotal, -1500.0).unwrap();
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();

        conn.write_all(&read_request(a, Quantity::EnergyImport.di()))
            .await
            .unwrap();
        let reply = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert!(reply.answers(a, Quantity::EnergyImport.di()));
        assert_eq!(value_of(&reply), 1234.56);

        conn.write_all(&read_request(a, Quantity::PowerTotal.di()))
            .await
            .unwrap();
        let reply = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert_eq!(value_of(&reply), -1500.0);
        assert_eq!(sim.requests(), 2);
        stop.cancel();
    }

    #[tokio::test]
    async fn unpinned_values_look_like_a_chinese_park() {
        let sim = Simulator::new();
        let a = addr("000000000001");
        sim.add(a);
        sim.set_delay(Duration::ZERO);
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();
        assert!((210.0..=230.0).contains(&read(&mut conn, &mut buf, a, Quantity::VoltageB).await));
        assert!((49.9..=50.1).contains(&read(&mut conn, &mut buf, a, Quantity::Frequency).await));
        assert!((0.9..=1.0).contains(&read(&mut conn, &mut buf, a, Quantity::PfTotal).await));
        assert!(read(&mut conn, &mut buf, a, Quantity::PowerTotal).await > 1000.0);
        assert!(read(&mut conn, &mut buf, a, Quantity::CurrentA).await > 1.0);
        let e0 = read(&mut conn, &mut buf, a, Quantity::EnergyImport).await;
        assert!(e0 > 10_000.0);
        assert!(read(&mut conn, &mut buf, a, Quantity::EnergyImport).await >= e0);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_silent_meter_and_one_not_on_the_line_give_nothing() {
        let sim = Simulator::new();
        let (dead, alive) = (addr("000000000001"), addr("000000000002"));
        sim.add(dead);
        sim.add(alive);
        sim.set_behaviour(dead, Behaviour::Silent);
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();
        conn.write_all(&read_request(dead, 0x0001_0000))
            .await
            .unwrap();
        conn.write_all(&read_request(addr("000000000003"), 0x0001_0000))
            .await
            .unwrap();
        conn.write_all(&read_request(alive, 0x0001_0000))
            .await
            .unwrap();
        // The first thing on the line is the live meter's answer: the others said nothing.
        let reply = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert_eq!(reply.address(), alive);
        assert_eq!(sim.requests(), 3);
        // And nothing after it.
        let mut more = [0u8; 16];
        let quiet = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut more)).await;
        assert!(quiet.is_err(), "{quiet:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn an_error_reply_meter_refuses_and_an_unknown_identifier_is_no_data() {
        let sim = Simulator::new();
        let (bad, good) = (addr("000000000011"), addr("000000000012"));
        sim.add(bad);
        sim.add(good);
        sim.set_behaviour(bad, Behaviour::ErrorReply(ErrorCode::PASSWORD));
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();

        conn.write_all(&read_request(bad, 0x0001_0000))
            .await
            .unwrap();
        let frame = next_frame(&mut conn, &mut buf).await.unwrap();
        assert_eq!(frame.control, Control::READ_ERROR);
        assert_eq!(
            frame.reply(),
            Ok(Reply::Error {
                address: bad,
                code: ErrorCode::PASSWORD
            })
        );

        conn.write_all(&read_request(good, 0x0401_0000))
            .await
            .unwrap();
        let reply = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                address: good,
                code: ErrorCode::NO_DATA
            }
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn echo_mode_returns_the_request_then_the_reply() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        sim.set_echo(true);
        sim.pin(a, Quantity::VoltageA, 229.8).unwrap();
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();
        conn.write_all(&read_request(a, Quantity::VoltageA.di()))
            .await
            .unwrap();
        let first = next_frame(&mut conn, &mut buf).await.unwrap();
        assert_eq!(
            first.reply(),
            Ok(Reply::Echo(Frame::read(a, Quantity::VoltageA.di())))
        );
        let second = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert!(second.answers(a, Quantity::VoltageA.di()));
        assert_eq!(value_of(&second), 229.8);
        stop.cancel();
    }

    #[tokio::test]
    async fn noise_before_a_request_does_not_stop_the_meter() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();
        let mut bytes = vec![0x00, 0xFF, 0x68, 0x16, 0x13];
        bytes.extend(read_request(a, Quantity::Frequency.di()));
        conn.write_all(&bytes).await.unwrap();
        let reply = next_frame(&mut conn, &mut buf)
            .await
            .unwrap()
            .reply()
            .unwrap();
        assert!(reply.answers(a, Quantity::Frequency.di()));
        stop.cancel();
    }

    #[tokio::test]
    async fn the_only_meter_on_the_line_tells_its_address() {
        let sim = Simulator::new();
        let a = addr("202411110002");
        sim.add(a);
        let (at, stop) = line(&sim).await;
        let mut conn = TcpStream::connect(at).await.unwrap();
        let mut buf = Vec::new();
        conn.write_all(&read_address_request()).await.unwrap();
        let frame = next_frame(&mut conn, &mut buf).await.unwrap();
        assert_eq!(frame.reply(), Ok(Reply::Address(a)));
        assert_eq!(frame.address, a);
        stop.cancel();
    }

    #[test]
    fn with_several_meters_each_answers_the_broadcast_address_request() {
        let sim = Simulator::new();
        let (a, b) = (addr("000000000001"), addr("000000000002"));
        sim.add(b);
        sim.add(a);
        let bytes = sim.answer(&Frame::read_address());
        let mut rest: &[u8] = &bytes;
        let mut found = Vec::new();
        while let Scan::Frame { frame, consumed } = scan(rest) {
            found.push(frame.reply().unwrap());
            rest = &rest[consumed..];
        }
        assert_eq!(found, vec![Reply::Address(a), Reply::Address(b)]);
        assert!(rest.is_empty());
    }

    #[test]
    fn replies_start_with_wake_ups_and_replies_on_the_line_are_not_answered() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        let bytes = sim.answer(&Frame::read(a, Quantity::EnergyImport.di()));
        assert_eq!(bytes[..4], WAKE_UP);
        let reply_frame = match scan(&bytes) {
            Scan::Frame { frame, .. } => frame,
            other => panic!("{other:?}"),
        };
        assert!(sim.answer(&reply_frame).is_empty());
        // Time sync is broadcast and never answered; other functions are refused.
        let sync = Frame {
            address: Address::BROADCAST,
            control: Control::BROADCAST_TIME,
            data: vec![0; 6],
        };
        assert!(sim.answer(&sync).is_empty());
        let write = Frame {
            address: a,
            control: Control(0x14),
            data: vec![],
        };
        let refused = sim.answer(&write);
        let Scan::Frame { frame, .. } = scan(&refused) else {
            panic!()
        };
        assert_eq!(frame.control, Control(0xD4));
        assert_eq!(sim.requests(), 3);
    }

    #[test]
    fn a_value_the_digits_cannot_hold_is_refused_when_pinned() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        assert!(sim.pin(a, Quantity::VoltageA, 10_000.0).is_err());
        assert!(sim.pin(a, Quantity::VoltageA, 231.4).is_ok());
        assert_eq!(sim.value(a, Quantity::VoltageA), Some(231.4));
        assert_eq!(sim.value(addr("000000000009"), Quantity::VoltageA), None);
    }

    #[tokio::test]
    async fn any_byte_stream_will_do_and_half_a_request_left_hanging_does_no_harm() {
        let sim = Simulator::new();
        let a = addr("000000001234");
        sim.add(a);
        sim.set_delay(Duration::ZERO);
        let (mut master, meter_end) = tokio::io::duplex(1024);
        let stop = CancellationToken::new();
        let server = {
            let sim = sim.clone();
            let stop = stop.clone();
            tokio::spawn(async move { sim.serve_stream(meter_end, stop).await })
        };
        // Half a request, then silence long enough for the meter to forget it.
        let request = read_request(a, Quantity::VoltageC.di());
        master.write_all(&request[..9]).await.unwrap();
        tokio::time::sleep(QUIET_RESET + Duration::from_millis(100)).await;
        master.write_all(&request).await.unwrap();
        let mut buf = Vec::new();
        let frame = loop {
            if let Scan::Frame { frame, .. } = scan(&buf) {
                break frame;
            }
            let mut chunk = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), master.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(frame.reply().unwrap().answers(a, Quantity::VoltageC.di()));
        stop.cancel();
        assert!(server.await.unwrap().is_ok());
    }
}
