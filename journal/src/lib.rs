//! RobustMQ Journal Engine: append-only shards made of segments.
//!
//! Work in progress (see the Journal Engine issue). Until it lands, the
//! `journal` role refuses to start rather than pretend to store anything.

pub mod config;
pub mod role;
