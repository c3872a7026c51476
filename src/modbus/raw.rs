//! A line spoken over as raw bytes, for the protocols that are not Modbus (DL/T 645, CJ/T 188):
//! a request out, then bytes read until the caller's scanner finds its answer in them. The
//! scanner is the protocol's pure frame code, so wake-up bytes, noise, the echo of our own request
//! and answers from other meters are the protocol's business; this owns only the stream, the
//! deadline and the buffer.

use std::fmt;
use std::io;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::de::{DeStream, DriverEnable};
use super::link::{not_connected, open_serial, Endpoint};

/// More than any frame of these protocols (DL/T 645 caps a frame at about 220 bytes): a line
/// that sends more without a frame in it is noise, and the buffer does not grow with it.
const MAX_BUFFER: usize = 1024;

/// What a protocol's frame scanner (`dlt645::frame::scan`, `cjt188::frame::scan`) found at the
/// front of a receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan<F> {
    /// A complete frame with a good end byte and checksum. Drop `consumed` bytes: the wake-ups
    /// before it and the frame.
    Frame { frame: F, consumed: usize },
    /// A frame has begun (or only wake-ups arrived) and is not complete: read more. When the
    /// line stays quiet instead, drop the buffer (and count it as [`Reject::Truncated`]).
    NeedMore,
    /// Drop `len` bytes (always at least one) that are no frame, and count `reason`.
    Skip { len: usize, reason: Reject },
}

/// Why bytes were dropped; a line's counters of these tell noise from collisions from a
/// misconfigured baud rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Bytes that start no frame: line noise, the tail of a frame already dropped, a stray 68.
    Noise,
    /// A length byte above the protocol's limit.
    TooLong,
    /// The byte where the frame should end is not 16 (the length byte was wrong, or bytes lost).
    BadEnd,
    /// Framed right, but the checksum disagrees: bits flipped on the line.
    BadChecksum,
    /// A frame that never finished: a complete frame begins inside it (a reply cut short, a
    /// collision).
    Truncated,
}

impl Reject {
    pub const ALL: [Reject; 5] = [
        Reject::Noise,
        Reject::TooLong,
        Reject::BadEnd,
        Reject::BadChecksum,
        Reject::Truncated,
    ];

    /// A name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Noise => "noise",
            Reject::TooLong => "too_long",
            Reject::BadEnd => "bad_end",
            Reject::BadChecksum => "bad_checksum",
            Reject::Truncated => "truncated",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller's scanner makes of the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<T> {
    /// Not enough yet.
    NeedMore,
    /// Drop this many bytes from the front (noise, a broken frame, an echo, another meter's
    /// answer) and look again.
    Skip(usize),
    /// The answer, and how many bytes it took.
    Done(T, usize),
}

#[derive(Debug, Error)]
pub enum RawError {
    /// The line cannot be written to or read from: reconnect with back-off.
    #[error("{0}")]
    Link(String),
    /// Nothing usable arrived in time; the line itself may be fine (a dead meter).
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An open raw line.
pub struct RawLink {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl RawLink {
    /// Opens `endpoint` within `timeout`: a TCP connection to a serial server (transparent mode)
    /// or a local serial port, with its driver-enable pin if it has one.
    pub async fn open(
        endpoint: &Endpoint,
        timeout: Duration,
        de: Option<&DriverEnable>,
    ) -> io::Result<Self> {
        let attempt = async {
            let stream: Box<dyn Stream> = match endpoint {
                Endpoint::Tcp(addr) | Endpoint::RtuOverTcp(addr) | Endpoint::SerialServer(addr) => {
                    let s = TcpStream::connect(addr.as_str()).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Endpoint::Serial { path, line } => {
                    let port = open_serial(path, line)?;
                    match de {
                        Some(de) => Box::new(DeStream::new(port, de.clone())),
                        None => Box::new(port),
                    }
                }
            };
            Ok(Self {
                stream,
                buf: Vec::with_capacity(256),
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(not_connected(endpoint, timeout)))
    }

    /// Sends `request` and reads until `take` finds the answer, or `timeout` passes. Bytes left
    /// from an earlier exchange (a late answer) are dropped first: they answer nothing now.
    pub async fn exchange<T>(
        &mut self,
        request: &[u8],
        timeout: Duration,
        take: impl FnMut(&[u8]) -> Take<T>,
    ) -> Result<T, RawError> {
        self.buf.clear();
        self.drain().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::time::timeout_at(deadline, self.send(request))
            .await
            .map_err(|_| RawError::NoAnswer(timeout))??;
        self.receive(deadline, take).await.map_err(|e| match e {
            RawError::NoAnswer(_) => RawError::NoAnswer(timeout),
            e => e,
        })
    }

    /// Drops what the line holds already: a late answer to an earlier request. A DL/T 645 error
    /// reply carries no data identifier, so one left over could pass for this request's answer.
    /// Only what has arrived is dropped (reads that are ready at once), a bounded number of them.
    async fn drain(&mut self) -> Result<(), RawError> {
        let mut chunk = [0u8; 256];
        for _ in 0..16 {
            match tokio::time::timeout(Duration::ZERO, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => return Err(RawError::Link("the line closed the connection".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(RawError::Link(e.to_string())),
            }
        }
        Ok(())
    }

    /// Writes `bytes` to the line.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        let link = |e: io::Error| RawError::Link(e.to_string());
        self.stream.write_all(bytes).await.map_err(link)?;
        self.stream.flush().await.map_err(link)
    }

    /// Reads until `take` finds something, or `deadline` passes; what follows it stays in the
    /// buffer for the next call (several meters answering one broadcast).
    pub async fn receive<T>(
        &mut self,
        deadline: tokio::time::Instant,
        mut take: impl FnMut(&[u8]) -> Take<T>,
    ) -> Result<T, RawError> {
        let waited = deadline.saturating_duration_since(tokio::time::Instant::now());
        let link = |e: io::Error| RawError::Link(e.to_string());
        let io = async {
            let mut chunk = [0u8; 256];
            loop {
                loop {
                    match take(&self.buf) {
                        Take::Done(answer, used) => {
                            // At least one byte, so that a caller reading answer after answer
                            // (a broadcast) cannot take the same one for ever.
                            let used = used.max(1).min(self.buf.len());
                            self.buf.drain(..used);
                            return Ok(answer);
                        }
                        Take::Skip(_) if self.buf.is_empty() => break,
                        // At least one byte, so that a scanner that skips nothing cannot spin.
                        Take::Skip(n) => {
                            self.buf.drain(..n.clamp(1, self.buf.len()));
                        }
                        Take::NeedMore => break,
                    }
                }
                if self.buf.len() >= MAX_BUFFER {
                    let excess = self.buf.len() - MAX_BUFFER / 2;
                    self.buf.drain(..excess);
                }
                let n = self.stream.read(&mut chunk).await.map_err(link)?;
                if n == 0 {
                    return Err(RawError::Link("the line closed the connection".into()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        match tokio::time::timeout_at(deadline, io).await {
            Ok(r) => r,
            Err(_) => Err(RawError::NoAnswer(waited)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scanner for frames `<len> bytes…`, where a zero byte is noise.
    fn length_prefixed(buf: &[u8]) -> Take<Vec<u8>> {
        match buf.first() {
            None => Take::NeedMore,
            Some(0) => Take::Skip(1),
            Some(&n) if buf.len() > usize::from(n) => {
                Take::Done(buf[1..=usize::from(n)].to_vec(), usize::from(n) + 1)
            }
            Some(_) => Take::NeedMore,
        }
    }

    async fn peer(answer: &'static [u8]) -> (Endpoint, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 3];
            s.read_exact(&mut got).await.unwrap();
            // In pieces, with noise first, as a serial server passes a line's bytes on.
            for piece in answer.chunks(2) {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            got
        });
        (Endpoint::RtuOverTcp(addr), task)
    }

    #[tokio::test]
    async fn an_answer_arriving_in_pieces_after_noise_is_found_and_the_request_went_out() {
        let (endpoint, task) = peer(&[0, 0, 3, b'a', b'b', b'c']).await;
        let mut link = RawLink::open(&endpoint, Duration::from_secs(2), None)
            .await
            .unwrap();
        let got = link
            .exchange(b"req", Duration::from_secs(2), length_prefixed)
            .await
            .unwrap();
        assert_eq!(got, b"abc");
        assert_eq!(task.await.unwrap(), b"req");
    }

    #[tokio::test]
    async fn a_late_answer_waiting_on_the_line_is_not_taken_for_the_next_requests() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::SerialServer(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // The answer to a request that timed out, arriving before the next one.
            s.write_all(&[1, b'x']).await.unwrap();
            let mut got = [0u8; 3];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&[3, b'a', b'b', b'c']).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        let mut link = RawLink::open(&endpoint, Duration::from_secs(2), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = link
            .exchange(b"req", Duration::from_secs(2), length_prefixed)
            .await
            .unwrap();
        assert_eq!(got, b"abc");
    }

    #[tokio::test]
    async fn a_peer_that_never_completes_an_answer_is_no_answer_not_a_link_failure() {
        let (endpoint, _task) = peer(&[9, b'a']).await;
        let mut link = RawLink::open(&endpoint, Duration::from_secs(2), None)
            .await
            .unwrap();
        let got = link
            .exchange(b"req", Duration::from_millis(100), length_prefixed)
            .await;
        assert!(matches!(got, Err(RawError::NoAnswer(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_line_that_streams_bytes_without_an_answer_keeps_its_buffer_capped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::SerialServer(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 3];
            s.read_exact(&mut got).await.unwrap();
            // 1 MiB that a scanner keeps waiting on: a meter stuck talking, a wrong baud rate.
            for _ in 0..256 {
                if s.write_all(&[0x68; 4096]).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let mut link = RawLink::open(&endpoint, Duration::from_secs(2), None)
            .await
            .unwrap();
        let mut most = 0;
        let got = link
            .exchange(b"req", Duration::from_millis(500), |buf: &[u8]| {
                most = most.max(buf.len());
                Take::<()>::NeedMore
            })
            .await;
        assert!(matches!(got, Err(RawError::NoAnswer(_))), "{got:?}");
        // At most the cap and one read's chunk before it is cut back.
        assert!(most >= MAX_BUFFER, "only {most} bytes arrived");
        assert!(most < MAX_BUFFER + 256, "the buffer grew to {most} bytes");
        assert!(link.buf.len() < MAX_BUFFER + 256);
    }

    #[tokio::test]
    async fn a_closed_connection_is_a_link_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::RtuOverTcp(listener.local_addr().unwrap().to_string());
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let mut link = RawLink::open(&endpoint, Duration::from_secs(2), None)
            .await
            .unwrap();
        let got = link
            .exchange(b"req", Duration::from_secs(2), length_prefixed)
            .await;
        assert!(matches!(got, Err(RawError::Link(_))), "{got:?}");
    }
}
