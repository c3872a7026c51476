//! Opening a Modbus line (TCP, RTU on a serial port, RTU through a serial server) and making one
//! read on it, with a timeout and the failure told apart: the link (reconnect), a late or garbled
//! answer (the line's state is unknown: reopen it), or the device refusing (keep the link).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tokio_serial::SerialPortBuilderExt;

use super::de::{DeStream, DriverEnable};
use super::plan::ReadBlock;
use crate::config::Parity;
use crate::profile::{Function, SerialDefaults};

/// Where a bus's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP (MBAP framing).
    Tcp(String),
    /// RTU frames over a TCP connection to a serial server / DTU.
    RtuOverTcp(String),
    /// A meter line's raw bytes through a serial server in transparent mode (DL/T 645).
    SerialServer(String),
    /// RTU on a local serial port.
    Serial { path: PathBuf, line: SerialDefaults },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::RtuOverTcp(a) => write!(f, "rtu-over-tcp://{a}"),
            Endpoint::SerialServer(a) => write!(f, "serial-server://{a}"),
            Endpoint::Serial { path, line } => write!(
                f,
                "{} {} {}{}{}",
                path.display(),
                line.baud,
                line.data_bits,
                line.parity,
                line.stop_bits
            ),
        }
    }
}

/// Opens the line within `timeout`. A local serial port with a transceiver switched by a GPIO
/// gets its driver-enable pin in `de`; any other endpoint refuses one, as a serial server's own
/// port does its direction switching itself.
pub async fn connect(
    endpoint: &Endpoint,
    timeout: Duration,
    de: Option<&DriverEnable>,
) -> io::Result<Context> {
    if de.is_some() && !matches!(endpoint, Endpoint::Serial { .. }) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{endpoint}: a driver-enable pin needs a local serial port"),
        ));
    }
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Endpoint::RtuOverTcp(addr) | Endpoint::SerialServer(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(tokio_modbus::client::rtu::attach(stream))
            }
            Endpoint::Serial { path, line } => {
                let port = open_serial(path, line)?;
                Ok(match de {
                    Some(de) => tokio_modbus::client::rtu::attach(DeStream::new(port, de.clone())),
                    None => tokio_modbus::client::rtu::attach(port),
                })
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(not_connected(endpoint, timeout)))
}

/// Opening `endpoint` took longer than `timeout`.
pub fn not_connected(endpoint: &Endpoint, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no connection to {endpoint} within {} ms",
            timeout.as_millis()
        ),
    )
}

/// Opens a local serial port with a line's settings.
pub fn open_serial(path: &Path, line: &SerialDefaults) -> io::Result<tokio_serial::SerialStream> {
    tokio_serial::new(path.to_string_lossy(), line.baud)
        .data_bits(match line.data_bits {
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match line.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match line.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        })
        .open_native_async()
        .map_err(io::Error::other)
}

/// Why a read failed, in the terms the scheduler acts on.
#[derive(Debug, Error)]
pub enum ReadError {
    /// No answer in time. The device may be gone; a late answer may still arrive, so the line
    /// must be reopened before the next request.
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The device answered with a Modbus exception; the link is fine.
    #[error("device refused: {0}")]
    Exception(ExceptionCode),
    /// An answer that does not belong to the request (another unit, another function, the
    /// wrong length): the line's framing can no longer be trusted.
    #[error("garbled answer: {0}")]
    Protocol(String),
    /// The connection itself failed.
    #[error("link error: {0}")]
    Link(#[from] io::Error),
}

/// A read's answer: registers, or bits for coils and discrete inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Reads one block from `unit` within `timeout`.
pub async fn read(
    ctx: &mut Context,
    unit: u8,
    block: &ReadBlock,
    timeout: Duration,
) -> Result<Answer, ReadError> {
    ctx.set_slave(Slave(unit));
    let request = match block.function {
        Function::Holding => Request::ReadHoldingRegisters(block.start, block.count),
        Function::Input => Request::ReadInputRegisters(block.start, block.count),
        Function::Coil => Request::ReadCoils(block.start, block.count),
        Function::Discrete => Request::ReadDiscreteInputs(block.start, block.count),
    };
    // tokio-modbus's Reader helpers debug_assert the answer's length; a misbehaving device must
    // not be able to panic the hub, so the answer is checked here instead.
    let answer = match tokio::time::timeout(timeout, ctx.call(request)).await {
        Err(_) => return Err(ReadError::Timeout(timeout.as_millis())),
        Ok(Err(tokio_modbus::Error::Transport(e))) => return Err(ReadError::Link(e)),
        Ok(Err(tokio_modbus::Error::Protocol(e))) => {
            return Err(ReadError::Protocol(e.to_string()))
        }
        Ok(Ok(Err(code))) => return Err(ReadError::Exception(code)),
        Ok(Ok(Ok(r))) => r,
    };
    let want = usize::from(block.count);
    match answer {
        Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
            if w.len() == want {
                Ok(Answer::Words(w))
            } else {
                Err(ReadError::Protocol(format!(
                    "asked for {want} registers, got {}",
                    w.len()
                )))
            }
        }
        Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) => {
            // Bits come padded to whole bytes.
            if b.len() >= want {
                b.truncate(want);
                Ok(Answer::Bits(b))
            } else {
                Err(ReadError::Protocol(format!(
                    "asked for {want} bits, got {}",
                    b.len()
                )))
            }
        }
        other => Err(ReadError::Protocol(format!("unexpected answer {other:?}"))),
    }
}
