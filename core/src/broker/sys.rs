//! `$SYS/brokers/<node>/...` topics: published by core 0 every
//! `sys_interval_secs`, retained, with the counters of every core.

use std::time::{Duration, Instant};

use bytes::Bytes;
use robustmq_protocol::mqtt::QoS;

use super::CoreBroker;

impl CoreBroker {
    pub(super) fn publish_sys(&mut self, now: Instant) {
        let interval = self.ctx.config.sys_interval_secs;
        if self.ctx.core != 0 || interval == 0 || now < self.sys_next {
            return;
        }
        self.sys_next = now + Duration::from_secs(interval);
        let m = self.ctx.metrics.snapshot();
        let uptime = now.saturating_duration_since(self.ctx.started).as_secs();
        let base = format!("$SYS/brokers/{}", self.ctx.node_id);
        let values: [(&str, String); 14] = [
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("uptime", uptime.to_string()),
            ("clients/connected", m.connections.to_string()),
            ("subscriptions/count", m.subscriptions.to_string()),
            ("messages/received", m.messages_received.to_string()),
            ("messages/sent", m.messages_sent.to_string()),
            ("messages/dropped", m.messages_dropped.to_string()),
            ("bytes/received", m.bytes_received.to_string()),
            ("bytes/sent", m.bytes_sent.to_string()),
            ("retained/count", self.retained.len().to_string()),
            // Back-pressure: publishers not read now, subscribers found slow.
            ("publishers/held", m.publishers_held.to_string()),
            ("subscribers/slow", m.slow_subscribers.to_string()),
            ("publishers/hold_waits", m.hold_waits.to_string()),
            // Publishers moved to the core their messages go to.
            ("publishers/moved", m.publishers_moved.to_string()),
        ];
        for (name, value) in values {
            let message = Self::broker_message(
                format!("{base}/{name}"),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
            );
            self.publish_message(message, now);
        }
    }
}
