//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, this core's
//! trie, the route index on every core, shared groups on their owner core,
//! and retained messages at subscribe time.
//!
//! A SUBACK is held back until every other core has applied the route
//! updates it caused (and shared groups have their new member), so a client
//! that has its SUBACK receives whatever is published after, on any core.
//! A SUBACK with retained messages to send also waits for every other
//! core's answer to a [`CoreMsg::Sync`], and the retained store is read
//! then: a retained message acknowledged to its publisher on another core
//! before this SUBSCRIBE arrived has reached this core's replica by then.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::mqtt::{
    Packet, Properties, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use robustmq_protocol::topic;

use super::last_match::may_read;
use super::mesh::{CoreMsg, ShareMember};
use super::shared::fnv1a;
use super::{ConnId, CoreBroker, PendingSubAck, RetainedWanted, SessionKey, SubKey, SubValue};
use crate::acl::{Access, ClientInfo};
use crate::session::{Delivery, Subscription};

impl CoreBroker {
    pub(super) fn on_subscribe(
        &mut self,
        conn: ConnId,
        client_id: &ByteString,
        sub: Subscribe,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        let id = sub.properties.subscription_identifiers.first().copied();
        let pending_id = self.next_token;
        self.next_token += 1;
        let mut reason_codes = Vec::with_capacity(sub.filters.len());
        let mut retained = Vec::new();
        let mut share_tokens = 0;
        for f in sub.filters {
            let code = self.subscribe_one(client_id, f.filter, f.options, id, &mut retained);
            if let Some(token) = code.1 {
                self.share_tokens.insert(token, pending_id);
                share_tokens += 1;
            }
            reason_codes.push(code.0);
        }
        if !retained.is_empty() {
            // Retained messages another core applied before this SUBSCRIBE
            // may still be on their way here: wait for every core's answer.
            self.sync_cores();
        }
        let refused = reason_codes.iter().find(|c| c.is_error()).copied();
        let problem_information = self
            .sessions
            .get(client_id)
            .is_some_and(|e| e.problem_information);
        let properties = match refused {
            Some(reason) if problem_information => super::connect::reason_string(reason),
            _ => Properties::default(),
        };
        let packet = Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            properties,
            reason_codes,
        });
        self.pending_subacks.insert(
            pending_id,
            PendingSubAck {
                client_id: client_id.clone(),
                conn,
                packet,
                retained,
                route_seq: self.route_seq,
                share_tokens,
            },
        );
        self.release_after_routes(now);
        Ok(())
    }

    /// One filter of a SUBSCRIBE: the reason code, and the token of a
    /// share join sent to another core.
    fn subscribe_one(
        &mut self,
        client_id: &ByteString,
        filter: ByteString,
        options: robustmq_protocol::mqtt::SubscriptionOptions,
        id: Option<u32>,
        retained: &mut Vec<RetainedWanted>,
    ) -> (ReasonCode, Option<u64>) {
        let config = self.ctx.config.clone();
        let Some(session_key) = self.sessions.key(client_id) else {
            return (ReasonCode::UNSPECIFIED_ERROR, None);
        };
        let entry = self
            .sessions
            .by_key_mut(session_key)
            .expect("the key was just looked up");
        let info = ClientInfo {
            client_id,
            username: entry.username.as_deref(),
            ip: entry.ip.as_deref().copied(),
        };
        // A shared subscription is checked on the filter it shares: to the
        // rules, `$share/g/secret/#` is `secret/#`.
        let checked = match topic::parse_shared(&filter) {
            Ok(Some(share)) => share.filter,
            _ => &filter,
        };
        if !self.ctx.acl.check(&info, Access::Subscribe, checked) {
            tracing::debug!(%client_id, %filter, "subscribe denied by ACL");
            return (ReasonCode::NOT_AUTHORIZED, None);
        }
        if topic::level_count(&filter) > config.max_topic_levels {
            return (ReasonCode::TOPIC_FILTER_INVALID, None);
        }
        let existed = entry.session.subscriptions().contains_key(&filter);
        if !existed && entry.session.subscriptions().len() >= config.max_subscriptions_per_client {
            return (ReasonCode::QUOTA_EXCEEDED, None);
        }
        entry
            .session
            .subscribe(filter.clone(), Subscription { options, id });
        if !existed {
            self.metrics().subscriptions.fetch_add(1, Relaxed);
        }
        let granted = ReasonCode(options.qos as u8);
        if let Ok(Some(share)) = topic::parse_shared(&filter) {
            let key = ByteString::from(format!("{}/{}", share.group, share.filter));
            let member = ShareMember {
                client_id: client_id.clone(),
                core: self.ctx.core,
                options,
                subscription_id: id,
            };
            let owner = self.share_owner(&key);
            if owner == self.ctx.core {
                self.share_join(key, member);
                return (granted, None);
            }
            let token = self.next_token;
            self.next_token += 1;
            self.outbox
                .push(owner, CoreMsg::ShareJoin { key, member, token });
            // Retained messages are not sent for shared subscriptions.
            return (granted, Some(token));
        }
        self.add_client_subscription(session_key, &filter, SubValue { options, id });
        let send_retained = match options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendAtSubscribeIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if send_retained {
            retained.push(RetainedWanted {
                filter,
                options,
                id,
            });
        }
        (granted, None)
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        client_id: &ByteString,
        unsub: Unsubscribe,
        _now: Instant,
    ) -> Result<(), ReasonCode> {
        let Some(session_key) = self.sessions.key(client_id) else {
            return Err(ReasonCode::UNSPECIFIED_ERROR);
        };
        let mut reason_codes = Vec::with_capacity(unsub.filters.len());
        for filter in unsub.filters {
            let existed = self
                .sessions
                .by_key_mut(session_key)
                .is_some_and(|e| e.session.unsubscribe(&filter));
            if existed {
                self.remove_subscription(session_key, client_id, &filter);
                reason_codes.push(ReasonCode::SUCCESS);
            } else {
                reason_codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        if let Some(entry) = self.sessions.by_key_mut(session_key) {
            entry.session.send(Packet::UnsubAck(UnsubAck {
                packet_id: unsub.packet_id,
                properties: Properties::default(),
                reason_codes,
            }));
        }
        Ok(())
    }

    fn share_owner(&self, key: &str) -> usize {
        (fnv1a(key.as_bytes()) % self.ctx.cores as u64) as usize
    }

    fn add_client_subscription(&mut self, session: SessionKey, filter: &str, value: SubValue) {
        if self.trie.insert(filter, SubKey::Client(session), value) {
            self.route_add(filter);
        }
    }

    /// Removes one of a session's subscriptions from the router (the session
    /// itself has already dropped it).
    pub(super) fn remove_subscription(
        &mut self,
        session: SessionKey,
        client_id: &ByteString,
        filter: &str,
    ) {
        self.metrics().subscriptions.fetch_sub(1, Relaxed);
        if let Ok(Some(share)) = topic::parse_shared(filter) {
            let key = ByteString::from(format!("{}/{}", share.group, share.filter));
            let owner = self.share_owner(&key);
            if owner == self.ctx.core {
                self.share_leave(&key, client_id);
            } else {
                self.outbox.push(
                    owner,
                    CoreMsg::ShareLeave {
                        key,
                        client_id: client_id.clone(),
                    },
                );
            }
            return;
        }
        if let Some((_, true)) = self.trie.remove(filter, &SubKey::Client(session)) {
            self.route_remove(filter);
        }
    }

    pub(super) fn share_join(&mut self, key: ByteString, member: ShareMember) {
        let filter = share_filter(&key).to_string();
        if self.groups.join(key.clone(), member)
            && self
                .trie
                .insert(&filter, SubKey::Group(key), SubValue::default())
        {
            self.route_add(&filter);
        }
    }

    pub(super) fn share_leave(&mut self, key: &ByteString, client_id: &str) {
        if !self.groups.leave(key, client_id) {
            return;
        }
        let filter = share_filter(key);
        if let Some((_, true)) = self.trie.remove(filter, &SubKey::Group(key.clone())) {
            self.route_remove(filter);
        }
    }

    pub(super) fn share_joined(&mut self, token: u64, now: Instant) {
        if let Some(pending_id) = self.share_tokens.remove(&token) {
            if let Some(p) = self.pending_subacks.get_mut(&pending_id) {
                p.share_tokens -= 1;
            }
        }
        self.release_after_routes(now);
    }

    fn route_add(&mut self, filter: &str) {
        self.routes.insert(filter, self.ctx.core, ());
        self.broadcast_route(filter, true);
    }

    fn route_remove(&mut self, filter: &str) {
        self.routes.remove(filter, &self.ctx.core);
        self.broadcast_route(filter, false);
    }

    /// Asks every other core for a [`CoreMsg::RouteAck`] of a new route
    /// sequence number, without a route update.
    fn sync_cores(&mut self) {
        if self.ctx.cores == 1 {
            return;
        }
        self.route_seq += 1;
        let (core, seq) = (self.ctx.core, self.route_seq);
        for peer in (0..self.ctx.cores).filter(|c| *c != core) {
            self.outbox.push(peer, CoreMsg::Sync { core, seq });
        }
    }

    fn broadcast_route(&mut self, filter: &str, add: bool) {
        if self.ctx.cores == 1 {
            return;
        }
        self.route_seq += 1;
        let (core, seq) = (self.ctx.core, self.route_seq);
        let filter = ByteString::from(filter);
        for peer in (0..self.ctx.cores).filter(|c| *c != core) {
            let filter = filter.clone();
            let msg = if add {
                CoreMsg::RouteAdd { filter, core, seq }
            } else {
                CoreMsg::RouteRemove { filter, core, seq }
            };
            self.outbox.push(peer, msg);
        }
    }

    /// The route sequence number every other core has acknowledged.
    fn routes_acked(&self) -> u64 {
        (0..self.ctx.cores)
            .filter(|c| *c != self.ctx.core)
            .map(|c| self.route_acked[c])
            .min()
            .unwrap_or(self.route_seq)
    }

    /// Sends what waited for route acknowledgements: share join
    /// confirmations, then SUBACKs (in the order they were asked for).
    pub(super) fn release_after_routes(&mut self, now: Instant) {
        let acked = self.routes_acked();
        while let Some(&(seq, core, token)) = self.after_routes.front() {
            if seq > acked {
                break;
            }
            self.after_routes.pop_front();
            if core == self.ctx.core {
                self.share_joined(token, now);
            } else {
                self.outbox.push(core, CoreMsg::ShareJoined { token });
            }
        }
        let mut ready: Vec<u64> = self
            .pending_subacks
            .iter()
            .filter(|(_, p)| p.route_seq <= acked && p.share_tokens == 0)
            .map(|(id, _)| *id)
            .collect();
        ready.sort_unstable();
        for id in ready {
            let Some(p) = self.pending_subacks.remove(&id) else {
                continue;
            };
            let Some(entry) = self.sessions.get_mut(&p.client_id) else {
                continue;
            };
            if entry.conn != Some(p.conn) {
                continue;
            }
            entry.session.send(p.packet);
            for wanted in p.retained {
                for message in self.retained.matching(&wanted.filter, now) {
                    // The filter is allowed; each retained topic is
                    // checked as a delivery would be.
                    let acl = &self.ctx.acl;
                    if !acl.is_empty() && !may_read(acl, entry, &message.topic) {
                        continue;
                    }
                    entry.session.deliver(
                        Delivery {
                            qos: message.qos.min(wanted.options.qos),
                            message,
                            retain: true,
                            subscription_ids: wanted.id.into_iter().collect(),
                        },
                        now,
                    );
                }
            }
            self.dirty.insert(p.conn);
        }
    }
}

/// The filter part of a `group/filter` share key.
fn share_filter(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, f)| f)
}
