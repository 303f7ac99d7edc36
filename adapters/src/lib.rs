//! RobustMQ storage adapters and connectors.
//!
//! Not built yet. This crate is intentionally empty and exports nothing.
