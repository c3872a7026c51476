//! parkhub: the edge monitoring hub of a digital small/micro-enterprise park.
//!
//! Data flows one way: sources (Modbus today) emit [`reading::Reading`]s into the [`hub::Hub`],
//! which keeps the latest values and hands them to the history [`store`].

pub mod alarm;
pub mod api;
pub mod app;
pub mod cjt188;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dlt645;
pub mod gpio;
pub mod hub;
pub mod live;
pub mod memory;
pub mod modbus;
pub mod mqtt;
pub mod notify;
pub mod ocpp;
pub mod profile;
pub mod random;
pub mod reading;
pub mod service;
pub mod store;
pub mod text;
pub mod throttle;
pub mod timeparse;
pub mod tls;
pub mod uplink;
pub mod users;
