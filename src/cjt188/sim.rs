//! A simulated line of CJ/T 188 water meters, for tests and the demo: it serves any byte stream
//! (a pipe in a test) or TCP, as a serial server in transparent mode does with a bus of meters
//! behind it. It reads with the same scanner the hub reads with, so wake-ups, noise and broken
//! frames on the line are handled as the hub handles them; the byte-exact vectors in
//! [`super::frame`] are what tie both to the protocol.
//!
//! Each meter answers "read data" for DI 901F (volume, settlement-day volume, its clock,
//! status) and "read address", with wake-up bytes before every answer, and ignores frames for
//! other addresses. In echo mode the line sends back every byte it receives, as a half-duplex
//! converter without echo suppression does.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use chrono::Local;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frame::{
    encode_reading, scan, Address, Control, DiOrder, Frame, Reading, Scan, Valve, ANY_METER,
    COLD_WATER, DI_CURRENT_FLOW, DI_READ_ADDRESS,
};

/// How a simulated meter behaves on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Normal,
    /// Never answers: a dead meter, or one whose battery is flat.
    Silent,
}

struct Meter {
    behaviour: Behaviour,
    /// The volume at `since`, m³; it rises from there at `flow_m3h` while the valve is open.
    volume_at: f64,
    since: Instant,
    flow_m3h: f64,
    /// Fixed by a test until unpinned.
    pinned: Option<f64>,
    /// The volume on the last settlement day: here, the volume the meter was added with.
    settlement_m3: f64,
    valve: Valve,
    battery_low: bool,
}

impl Meter {
    fn volume(&self, now: Instant) -> f64 {
        if let Some(v) = self.pinned {
            return v;
        }
        let flow = if self.valve == Valve::Open {
            self.flow_m3h
        } else {
            0.0
        };
        self.volume_at + flow * now.saturating_duration_since(self.since).as_secs_f64() / 3600.0
    }

    /// Takes what has flowed so far into `volume_at`, before the flow changes, so that the
    /// counter never goes back.
    fn settle(&mut self, now: Instant) {
        self.volume_at = self.volume(now);
        self.since = now;
    }

    fn reading(&self, now: Instant) -> Reading {
        Reading {
            volume_m3: self.volume(now),
            settlement_m3: Some(self.settlement_m3),
            time: Some(Local::now().naive_local()),
            battery_low: self.battery_low,
            valve: self.valve,
            status: None,
        }
    }
}

/// The simulated line; shared by every connection to it.
pub struct Simulator {
    meters: RwLock<BTreeMap<Address, Meter>>,
    requests: AtomicU64,
    echo: AtomicBool,
}

impl Default for Simulator {
    fn default() -> Self {
        Self {
            meters: RwLock::new(BTreeMap::new()),
            requests: AtomicU64::new(0),
            echo: AtomicBool::new(false),
        }
    }
}

impl Simulator {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Puts a cold-water meter at `address`: a volume of some hundreds of m³ rising at under
    /// 1.5 m³/h (a shop or an office), varied by the address, its valve open, its battery fine.
    pub fn add(&self, address: Address) {
        let hash = address
            .wire()
            .iter()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        let seed = (hash as f64 * 0.618_033_988_75) % 1.0;
        let volume = (50.0 + 950.0 * seed).floor();
        self.meters().insert(
            address,
            Meter {
                behaviour: Behaviour::Normal,
                volume_at: volume,
                since: Instant::now(),
                flow_m3h: 0.2 + 1.2 * seed,
                pinned: None,
                settlement_m3: volume,
                valve: Valve::Open,
                battery_low: false,
            },
        );
    }

    pub fn set_behaviour(&self, address: Address, behaviour: Behaviour) {
        if let Some(m) = self.meters().get_mut(&address) {
            m.behaviour = behaviour;
        }
    }

    /// Fixes the volume until [`Simulator::unpin_volume`].
    pub fn pin_volume(&self, address: Address, m3: f64) {
        if let Some(m) = self.meters().get_mut(&address) {
            m.pinned = Some(m3);
        }
    }

    /// Lets the volume rise again, from where it was pinned.
    pub fn unpin_volume(&self, address: Address) {
        if let Some(m) = self.meters().get_mut(&address) {
            if let Some(v) = m.pinned.take() {
                m.volume_at = v;
                m.since = Instant::now();
            }
        }
    }

    /// No water flows through a closed valve: the volume stops rising.
    pub fn set_valve(&self, address: Address, valve: Valve) {
        if let Some(m) = self.meters().get_mut(&address) {
            m.settle(Instant::now());
            m.valve = valve;
        }
    }

    pub fn set_battery_low(&self, address: Address, low: bool) {
        if let Some(m) = self.meters().get_mut(&address) {
            m.battery_low = low;
        }
    }

    /// Sends back every byte received, before any answer (a half-duplex converter's echo).
    pub fn set_echo(&self, on: bool) {
        self.echo.store(on, Ordering::Relaxed);
    }

    /// Requests (frames from a master) received, for any address, answered or not.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// What the meter at `address` would answer to 901F now.
    pub fn reading(&self, address: Address) -> Option<Reading> {
        let meters = self.meters.read().unwrap_or_else(PoisonError::into_inner);
        Some(meters.get(&address)?.reading(Instant::now()))
    }

    fn meters(&self) -> RwLockWriteGuard<'_, BTreeMap<Address, Meter>> {
        self.meters.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to one frame off the line; `None` is silence. A DI a meter does not know is
    /// answered with the error bit, SER and the status, as KingDa's firmware lays it out. The
    /// DI goes back in the order it came.
    pub fn answer(&self, frame: &Frame) -> Option<Frame> {
        if frame.control().is_reply() {
            return None;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        if frame.meter_type() != COLD_WATER && frame.meter_type() != ANY_METER {
            return None;
        }
        let meters = self.meters.read().unwrap_or_else(PoisonError::into_inner);
        let live = |(_, m): &(&Address, &Meter)| m.behaviour == Behaviour::Normal;
        let (address, meter) = if frame.address().is_broadcast() {
            // Several meters answering at once collide on a real bus: nothing readable comes.
            let mut answering = meters.iter().filter(live);
            match (answering.next(), answering.next()) {
                (Some(one), None) => one,
                _ => return None,
            }
        } else {
            Some(meters.get_key_value(&frame.address())?).filter(live)?
        };
        let (di, ser) = (frame.di_bytes()?, frame.ser()?);
        let control = frame.control();
        let (known, payload) = match control {
            Control::READ => (
                DiOrder::of(di, DI_CURRENT_FLOW),
                encode_reading(&meter.reading(Instant::now())),
            ),
            Control::READ_ADDRESS => (DiOrder::of(di, DI_READ_ADDRESS), Vec::new()),
            // Writes and other reads are not part of the simulation.
            _ => return None,
        };
        if known.is_none() {
            let [st0, st1] = meter.reading(Instant::now()).status_bytes();
            return Frame::new(
                COLD_WATER,
                *address,
                control.error_reply(),
                vec![ser, st0, st1],
            )
            .ok();
        }
        Some(Frame::with_di(
            COLD_WATER,
            *address,
            control.reply(),
            di,
            ser,
            &payload,
        ))
    }

    /// Serves one stream (a TCP connection, a pipe) until it closes or `shutdown`.
    pub async fn serve_stream<S>(
        &self,
        mut stream: S,
        shutdown: CancellationToken,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // `scan` asks for more only while a frame is incomplete (at most 121 bytes with its
        // wake-ups), so the buffer stays under that plus one read.
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let mut chunk = [0u8; 256];
        loop {
            let n = tokio::select! {
                r = stream.read(&mut chunk) => r?,
                _ = shutdown.cancelled() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            if self.echo.load(Ordering::Relaxed) {
                stream.write_all(&chunk[..n]).await?;
            }
            buf.extend_from_slice(&chunk[..n]);
            loop {
                match scan(&buf) {
                    Scan::NeedMore => break,
                    Scan::Skip { len, .. } => {
                        // `scan` skips at least one byte and no more than it has.
                        buf.drain(..len.min(buf.len()));
                    }
                    Scan::Frame { frame, consumed } => {
                        buf.drain(..consumed.min(buf.len()));
                        if let Some(reply) = self.answer(&frame) {
                            stream.write_all(&reply.to_wire()).await?;
                            stream.flush().await?;
                        }
                    }
                }
            }
        }
    }

    /// Serves every TCP connection to `listener` as the line until `shutdown`.
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
            match accepted {
                Ok((stream, _)) => {
                    // Answers are small and a poller waits for each: no Nagle delay.
                    stream.set_nodelay(true).ok();
                    let sim = self.clone();
                    let shutdown = shutdown.child_token();
                    tokio::spawn(async move {
                        if let Err(e) = sim.serve_stream(stream, shutdown).await {
                            tracing::debug!("CJ/T 188 simulator connection ended: {e}");
                        }
                    });
                }
                // An aborted connection, or a moment without file descriptors, passes: the line
                // stays up.
                Err(e) => {
                    tracing::debug!("CJ/T 188 simulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cjt188::frame::{interpret, Answer, Request, RequestOptions, WAKE_UP};
    use tokio::net::TcpStream;

    fn meter() -> Address {
        "12345678901234".parse().unwrap()
    }

    async fn line(
        sim: &Arc<Simulator>,
    ) -> (
        TcpStream,
        CancellationToken,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(sim.clone().serve_tcp(listener, shutdown.clone()));
        let stream = TcpStream::connect(addr).await.unwrap();
        (stream, shutdown, server)
    }

    /// Writes `bytes`, then reads until an answer settles `request` or `wait` passes; every
    /// answer seen, and the raw bytes read.
    async fn ask_raw<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        bytes: &[u8],
        request: &Request,
        wait: Duration,
    ) -> (Vec<Answer>, Vec<u8>) {
        stream.write_all(bytes).await.unwrap();
        let (mut answers, mut raw, mut buf) = (Vec::new(), Vec::new(), Vec::new());
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 256];
        loop {
            match scan(&buf) {
                Scan::Frame { frame, consumed } => {
                    buf.drain(..consumed);
                    let answer = interpret(request, &frame).unwrap();
                    let done = answer.settles();
                    answers.push(answer);
                    if done {
                        return (answers, raw);
                    }
                    continue;
                }
                Scan::Skip { len, .. } => {
                    buf.drain(..len);
                    continue;
                }
                Scan::NeedMore => {}
            }
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => {
                    raw.extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                }
                _ => return (answers, raw),
            }
        }
    }

    async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        request: Request,
        options: RequestOptions,
        wait: Duration,
    ) -> Vec<Answer> {
        ask_raw(stream, &request.to_wire(options), &request, wait)
            .await
            .0
    }

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_pinned_meter_answers_its_reading_over_tcp_after_wake_ups() {
        let sim = Simulator::new();
        sim.add(meter());
        sim.pin_volume(meter(), 1234.56);
        sim.set_valve(meter(), Valve::Closed);
        sim.set_battery_low(meter(), true);
        let (mut stream, shutdown, _) = line(&sim).await;
        let request = Request::Read {
            to: meter(),
            ser: 42,
        };
        let (answers, raw) = ask_raw(
            &mut stream,
            &request.to_wire(RequestOptions::default()),
            &request,
            LONG,
        )
        .await;
        assert_eq!(raw[..3], WAKE_UP);
        let Some(Answer::Reading(r)) = answers.last() else {
            panic!("{answers:?}");
        };
        assert_eq!(r.volume_m3, 1234.56);
        assert_eq!((r.valve, r.battery_low), (Valve::Closed, true));
        assert!(r.time.is_some() && r.settlement_m3.is_some());
        assert_eq!(sim.requests(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn frames_for_other_addresses_are_ignored_but_counted() {
        let sim = Simulator::new();
        sim.add(meter());
        let (mut stream, shutdown, _) = line(&sim).await;
        let other = Request::Read {
            to: "00000000000042".parse().unwrap(),
            ser: 1,
        };
        let answers = ask(&mut stream, other, RequestOptions::default(), SHORT).await;
        assert!(answers.is_empty(), "{answers:?}");
        assert_eq!(sim.requests(), 1);
        // The line still serves its own meter afterwards.
        let mine = Request::Read {
            to: meter(),
            ser: 2,
        };
        let answers = ask(&mut stream, mine, RequestOptions::default(), LONG).await;
        assert!(
            matches!(answers.last(), Some(Answer::Reading(_))),
            "{answers:?}"
        );
        assert_eq!(sim.requests(), 2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_silent_meter_never_answers() {
        let sim = Simulator::new();
        sim.add(meter());
        sim.set_behaviour(meter(), Behaviour::Silent);
        let (mut stream, shutdown, _) = line(&sim).await;
        let request = Request::Read {
            to: meter(),
            ser: 1,
        };
        let answers = ask(&mut stream, request, RequestOptions::default(), SHORT).await;
        assert!(answers.is_empty(), "{answers:?}");
        assert_eq!(sim.requests(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn in_echo_mode_the_request_comes_back_before_the_reply() {
        let sim = Simulator::new();
        sim.add(meter());
        sim.set_echo(true);
        let (mut stream, shutdown, _) = line(&sim).await;
        let request = Request::Read {
            to: meter(),
            ser: 3,
        };
        let answers = ask(&mut stream, request, RequestOptions::default(), LONG).await;
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0], Answer::Echo);
        assert!(matches!(answers[1], Answer::Reading(_)));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_one_meter_on_the_line_tells_its_address_and_two_collide() {
        let sim = Simulator::new();
        sim.add(meter());
        let (mut stream, shutdown, _) = line(&sim).await;
        let request = Request::ReadAddress { ser: 0 };
        let answers = ask(&mut stream, request, RequestOptions::default(), LONG).await;
        assert_eq!(answers.last(), Some(&Answer::Address(meter())));

        sim.add("00000000000042".parse().unwrap());
        let answers = ask(&mut stream, request, RequestOptions::default(), SHORT).await;
        assert!(answers.is_empty(), "{answers:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn noise_and_a_broken_frame_before_a_request_arriving_in_pieces_are_survived() {
        let sim = Simulator::new();
        sim.add(meter());
        let (mut client, server) = tokio::io::duplex(64);
        let shutdown = CancellationToken::new();
        let task = {
            let (sim, shutdown) = (sim.clone(), shutdown.clone());
            tokio::spawn(async move { sim.serve_stream(server, shutdown).await })
        };

        let request = Request::Read {
            to: meter(),
            ser: 9,
        };
        let good = request.to_wire(RequestOptions::default());
        let mut broken = good.clone();
        let cs = broken.len() - 2;
        broken[cs] ^= 0xFF;
        let mut bytes = vec![0x00, 0x55, 0x68, 0x10];
        bytes.extend(broken);
        for piece in good.chunks(4) {
            bytes.extend_from_slice(piece);
        }
        let (answers, _) = ask_raw(&mut client, &bytes, &request, LONG).await;
        assert!(
            matches!(answers.last(), Some(Answer::Reading(_))),
            "{answers:?}"
        );
        // The broken request never reached a meter.
        assert_eq!(sim.requests(), 1);

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_unknown_di_is_refused_with_the_status() {
        let sim = Simulator::new();
        sim.add(meter());
        sim.set_valve(meter(), Valve::Closed);
        let (mut stream, shutdown, _) = line(&sim).await;
        // D120: the first month of history, which the simulation does not keep.
        let frame = Frame::with_di(COLD_WATER, meter(), Control::READ, [0x20, 0xD1], 4, &[]);
        let request = Request::Read {
            to: meter(),
            ser: 4,
        };
        let (answers, _) = ask_raw(&mut stream, &frame.to_wire(), &request, LONG).await;
        assert_eq!(
            answers.last(),
            Some(&Answer::Refused {
                status: [0x40, 0x00]
            })
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_di_sent_high_byte_first_is_answered_high_byte_first() {
        let sim = Simulator::new();
        sim.add(meter());
        let frame = Request::Read {
            to: meter(),
            ser: 1,
        }
        .frame(RequestOptions {
            di_order: Some(DiOrder::HighFirst),
            ..RequestOptions::default()
        });
        let reply = sim.answer(&frame).unwrap();
        assert_eq!(reply.di_bytes(), Some([0x90, 0x1F]));
        assert_eq!(reply.control(), Control::READ_REPLY);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server_and_its_connections() {
        let sim = Simulator::new();
        sim.add(meter());
        let (mut stream, shutdown, server) = line(&sim).await;
        shutdown.cancel();
        tokio::time::timeout(LONG, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // The connection is closed from the other side: a read ends.
        let mut chunk = [0u8; 8];
        let n = tokio::time::timeout(LONG, stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_volume_rises_while_the_valve_is_open_and_stops_when_closed() {
        let sim = Simulator::new();
        sim.add(meter());
        let v0 = sim.reading(meter()).unwrap().volume_m3;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let v1 = sim.reading(meter()).unwrap().volume_m3;
        assert!((0.2..1.5).contains(&(v1 - v0)), "{v0} → {v1}");
        sim.set_valve(meter(), Valve::Closed);
        tokio::time::advance(Duration::from_secs(3600)).await;
        let v2 = sim.reading(meter()).unwrap().volume_m3;
        assert!((v2 - v1).abs() < 1e-9, "{v1} → {v2}");
        sim.pin_volume(meter(), 10.0);
        assert_eq!(sim.reading(meter()).unwrap().volume_m3, 10.0);
        sim.set_valve(meter(), Valve::Open);
        sim.unpin_volume(meter());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(sim.reading(meter()).unwrap().volume_m3 > 10.0);
    }
}
