//! Modbus meters: decoding (pure), request planning (pure), the line and its scheduler, and a
//! simulator of meter lines for the demo, tests and benchmarks.

pub mod bus;
pub mod de;
pub mod decode;
pub mod link;
pub mod plan;
pub mod raw;
pub mod sim;

pub use bus::{ModbusBus, Poller};
pub use link::Endpoint;
