//! robust-bench, the load generator for MQTT brokers, the journal and the
//! placement center. Each subcommand lives in its own module.

pub mod journal;
pub mod mqtt;
pub mod placement;
