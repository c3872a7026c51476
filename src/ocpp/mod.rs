//! OCPP 1.6J, the language of the park's EV chargers: the RPC frames of OCPP-J, the typed
//! messages of the core profile (and the few commands an operator may send), and the reduction
//! of meter values to readings (pure code); a charger's state between messages (`charger`);
//! the charging log (`sessions`); the central system chargers connect to (`central`).

pub mod central;
pub mod charger;
pub mod frame;
pub mod messages;
pub mod meter;
pub mod sessions;
pub mod sim;
