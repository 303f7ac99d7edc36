//! Broker counters. Each core writes only its own cache-padded slot
//! (relaxed atomics, no sharing on the hot path); readers add them up.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// The counters of one core.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    /// Connections open on this core.
    pub connections: AtomicI64,
    /// Subscriptions held by sessions of this core.
    pub subscriptions: AtomicI64,
    /// PUBLISH packets received from clients.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: AtomicU64,
    /// Bytes read from client sockets.
    pub bytes_received: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_sent: AtomicU64,
    /// Messages dropped (queue full, slow consumer, expired, too large).
    pub messages_dropped: AtomicU64,
    /// Connections refused or closed for bad input.
    pub protocol_errors: AtomicU64,
    /// Subscribers found slow: congested longer than `slow_subscriber_ms`.
    pub slow_subscribers: AtomicU64,
    /// Publisher connections of this core held by back-pressure now.
    pub publishers_held: AtomicI64,
    /// Batches from other cores whose mesh window this core kept because
    /// its holds were not yet applied there.
    pub hold_waits: AtomicU64,
    /// Publisher sessions moved to this core (the core their messages go
    /// to).
    pub publishers_moved: AtomicU64,
}

/// The counters of every core.
#[derive(Debug)]
pub struct Metrics {
    cores: Vec<CachePadded<CoreMetrics>>,
}

/// A sum over all cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Connections open.
    pub connections: i64,
    /// Subscriptions held.
    pub subscriptions: i64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Messages dropped.
    pub messages_dropped: u64,
    /// Protocol errors.
    pub protocol_errors: u64,
    /// Slow subscribers found.
    pub slow_subscribers: u64,
    /// Publisher connections held now.
    pub publishers_held: i64,
    /// Batches whose mesh window was kept until holds were applied.
    pub hold_waits: u64,
    /// Publisher sessions moved between cores.
    pub publishers_moved: u64,
}

impl Metrics {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Self {
        Metrics {
            cores: (0..cores).map(|_| CachePadded::default()).collect(),
        }
    }

    /// The slot of one core.
    pub fn core(&self, core: usize) -> &CoreMetrics {
        &self.cores[core]
    }

    /// Adds up every core.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        for c in &self.cores {
            s.connections += c.connections.load(Relaxed);
            s.subscriptions += c.subscriptions.load(Relaxed);
            s.messages_received += c.messages_received.load(Relaxed);
            s.messages_sent += c.messages_sent.load(Relaxed);
            s.bytes_received += c.bytes_received.load(Relaxed);
            s.bytes_sent += c.bytes_sent.load(Relaxed);
            s.messages_dropped += c.messages_dropped.load(Relaxed);
            s.protocol_errors += c.protocol_errors.load(Relaxed);
            s.slow_subscribers += c.slow_subscribers.load(Relaxed);
            s.publishers_held += c.publishers_held.load(Relaxed);
            s.hold_waits += c.hold_waits.load(Relaxed);
            s.publishers_moved += c.publishers_moved.load(Relaxed);
        }
        s
    }
}
