//! OCPP 1.6J, the language of the park's EV chargers: the RPC frames of OCPP-J, the typed
//! messages of the core profile (and the few commands an operator may send), and the reduction
//! of meter values to readings. Pure code: the WebSocket side lives elsewhere.

pub mod frame;
pub mod messages;
pub mod meter;
