//! RobustMQ protocol: the MQTT codec, topic names and filters, and the
//! internal wire schemas. No I/O, no clock.

pub mod wire;
