//! RobustMQ core: the MQTT broker (sans-I/O broker, sessions and router,
//! and the thread-per-core runtime that drives them) and the server that
//! hosts every role.

pub mod acl;
pub mod broker;
pub mod config;
pub mod hash;
pub mod message;
pub mod router;
pub mod runtime;
pub mod session;
