//! CJ/T 188-2004 water meters on RS-485 or M-Bus, through a serial server or a local port:
//! frames, requests and what the answers say (pure, [`frame`]), and a simulated line of meters
//! for tests and the demo ([`sim`]).
//!
//! Shaped as `dlt645` is: `frame::scan` finds frames in whatever bytes a line delivers (wake-ups,
//! noise, our own echo, other meters' answers), and the line code around it owns only I/O.
//! Where the public sources disagree (the byte order of a DI, the status bits), the choice and
//! its reasons are written where it is made, and a device can override the DI order.

pub mod frame;
pub mod poller;
pub mod sim;
