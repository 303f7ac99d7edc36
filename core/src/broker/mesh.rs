//! Messages between cores, and the per-destination outbox that batches
//! them for one send per destination per turn of the loop.

use bytestring::ByteString;
use robustmq_protocol::mqtt::SubscriptionOptions;

use crate::message::SharedMessage;

/// The most messages one core may have sent to another and not yet seen
/// processed: beyond it, the sender stops reading its sockets. It bounds
/// what is on its way between two cores (memory, and how far a held
/// publisher's messages overshoot a congested subscriber).
pub const MESH_WINDOW: usize = 2048;

/// What a batch of messages counts against [`MESH_WINDOW`]: publishes one
/// by one, anything else as one.
pub fn batch_weight(msgs: &[CoreMsg]) -> usize {
    msgs.iter()
        .map(|m| match m {
            CoreMsg::Publish(batch) => batch.len(),
            _ => 1,
        })
        .sum()
}

/// A member of a shared subscription group, as its owner core knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMember {
    /// The member's client id.
    pub client_id: ByteString,
    /// The core that owns the member's session.
    pub core: usize,
    /// Its subscription options.
    pub options: SubscriptionOptions,
    /// Its subscription identifier.
    pub subscription_id: Option<u32>,
}

/// A message from one core's broker to another's.
#[derive(Debug, Clone)]
pub enum CoreMsg {
    /// Messages to match against the receiving core's own trie.
    Publish(Vec<SharedMessage>),
    /// A retained message to store in the receiving core's replica.
    Retain(SharedMessage),
    /// `core` has its first subscriber to `filter`.
    RouteAdd {
        /// The filter.
        filter: ByteString,
        /// The core.
        core: usize,
        /// The sender's route sequence number.
        seq: u64,
    },
    /// `core` lost its last subscriber to `filter`.
    RouteRemove {
        /// The filter.
        filter: ByteString,
        /// The core.
        core: usize,
        /// The sender's route sequence number.
        seq: u64,
    },
    /// Nothing to apply: answered with a [`CoreMsg::RouteAck`] like a
    /// route update. Channels between two cores keep their order, so the
    /// answer comes after everything the receiver sent before it (the
    /// retained messages a SUBSCRIBE must see).
    Sync {
        /// The sender.
        core: usize,
        /// The sender's route sequence number.
        seq: u64,
    },
    /// The sender applied route updates of `core` up to `seq`.
    RouteAck {
        /// The core whose updates are acknowledged.
        core: usize,
        /// Up to this sequence number.
        seq: u64,
    },
    /// Join a shared subscription group owned by the receiver.
    ShareJoin {
        /// `group/filter`.
        key: ByteString,
        /// The member.
        member: ShareMember,
        /// Returned in [`CoreMsg::ShareJoined`].
        token: u64,
    },
    /// The group owner has the member and its routes are in place.
    ShareJoined {
        /// The token of the join.
        token: u64,
    },
    /// Leave a shared subscription group owned by the receiver.
    ShareLeave {
        /// `group/filter`.
        key: ByteString,
        /// The member's client id.
        client_id: ByteString,
    },
    /// A message the group owner picked this member for.
    ShareDeliver {
        /// The member's client id.
        client_id: ByteString,
        /// The message.
        message: SharedMessage,
        /// The member's subscription options.
        options: SubscriptionOptions,
        /// The member's subscription identifier.
        subscription_id: Option<u32>,
    },
    /// A subscriber of the sender holds (or releases) a publisher
    /// connection of the receiver: back-pressure.
    Hold {
        /// The publisher's connection on the receiving core.
        conn: u64,
        /// Hold, or release one hold.
        hold: bool,
    },
    /// The sender applied this many holds (`hold: true`) of the receiver:
    /// the held publishers' messages stopped coming, so the receiver
    /// gives the sender's core its mesh window back (see
    /// `CoreBroker::holds_unconfirmed`).
    HoldsApplied {
        /// How many holds.
        count: u32,
    },
    /// The sender held the session of a client the receiver owns (it was
    /// moved there) and no longer does: it ended.
    SessionGone {
        /// The client id.
        client_id: ByteString,
    },
}

/// Messages waiting to go to each other core.
#[derive(Debug)]
pub struct Outbox {
    per_core: Vec<Vec<CoreMsg>>,
    len: usize,
}

impl Outbox {
    /// An outbox for `cores` cores.
    pub fn new(cores: usize) -> Self {
        Outbox {
            per_core: (0..cores).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    /// Queues a message for `core`.
    pub fn push(&mut self, core: usize, msg: CoreMsg) {
        self.per_core[core].push(msg);
        self.len += 1;
    }

    /// Queues a publish for `core`, joining the batch already waiting.
    pub fn push_publish(&mut self, core: usize, message: SharedMessage) {
        if let Some(CoreMsg::Publish(batch)) = self.per_core[core].last_mut() {
            batch.push(message);
        } else {
            self.per_core[core].push(CoreMsg::Publish(vec![message]));
        }
        self.len += 1;
    }

    /// Confirms one applied hold to `core`, joining a confirmation
    /// already waiting at the end of its queue.
    pub fn push_hold_applied(&mut self, core: usize) {
        if let Some(CoreMsg::HoldsApplied { count }) = self.per_core[core].last_mut() {
            *count += 1;
        } else {
            self.push(core, CoreMsg::HoldsApplied { count: 1 });
        }
    }

    /// How many messages wait (publishes counted one by one).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes everything, by destination.
    pub fn drain(&mut self) -> Vec<(usize, Vec<CoreMsg>)> {
        self.len = 0;
        self.per_core
            .iter_mut()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(core, v)| (core, std::mem::take(v)))
            .collect()
    }
}
