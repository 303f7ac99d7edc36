//! RobustMQ core: the MQTT broker and the server that hosts every role.
//!
//! The broker itself is being built (see the broker issue); today this crate
//! holds the server configuration and the role launcher.

pub mod acl;
pub mod broker;
pub mod config;
pub mod message;
pub mod router;
pub mod runtime;
pub mod session;
