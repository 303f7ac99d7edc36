//! RobustMQ Placement Center: the cluster metadata service (Raft).
//!
//! Work in progress (see the Placement Center issue). Until it lands, the
//! `placement` role refuses to start rather than pretend to agree on anything.

pub mod config;
pub mod role;
