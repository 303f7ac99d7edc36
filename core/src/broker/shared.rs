//! Shared subscription groups owned by this core: members on any core, and
//! the strategy that picks one member per message.

use crate::hash::HashMap;

use bytestring::ByteString;

use super::mesh::ShareMember;
use crate::config::SharedStrategy;

/// One `$share/group/filter` group.
#[derive(Debug, Default)]
pub struct Group {
    members: Vec<ShareMember>,
    next: usize,
    sticky: Option<ByteString>,
}

impl Group {
    /// Adds or replaces a member.
    pub fn join(&mut self, member: ShareMember) {
        match self
            .members
            .iter_mut()
            .find(|m| m.client_id == member.client_id)
        {
            Some(m) => *m = member,
            None => self.members.push(member),
        }
    }

    /// Removes a member; returns whether the group is now empty.
    pub fn leave(&mut self, client_id: &str) -> bool {
        self.members.retain(|m| &*m.client_id != client_id);
        if self.sticky.as_deref() == Some(client_id) {
            self.sticky = None;
        }
        self.members.is_empty()
    }

    /// The member count.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Picks the member for one message. `random` is a fresh random number,
    /// `publisher` the publishing client id.
    pub fn pick(
        &mut self,
        strategy: SharedStrategy,
        random: u64,
        publisher: &str,
    ) -> Option<&ShareMember> {
        if self.members.is_empty() {
            return None;
        }
        let n = self.members.len();
        let i = match strategy {
            SharedStrategy::RoundRobin => {
                let i = self.next % n;
                self.next = self.next.wrapping_add(1);
                i
            }
            SharedStrategy::Random => (random % n as u64) as usize,
            SharedStrategy::HashClientId => (fnv1a(publisher.as_bytes()) % n as u64) as usize,
            SharedStrategy::Sticky => {
                let current = self
                    .sticky
                    .as_ref()
                    .and_then(|s| self.members.iter().position(|m| m.client_id == *s));
                match current {
                    Some(i) => i,
                    None => {
                        let i = (random % n as u64) as usize;
                        self.sticky = Some(self.members[i].client_id.clone());
                        i
                    }
                }
            }
        };
        self.members.get(i)
    }
}

/// The groups this core owns, by `group/filter`.
#[derive(Debug, Default)]
pub struct SharedGroups {
    groups: HashMap<ByteString, Group>,
}

impl SharedGroups {
    /// Adds a member; returns whether the group is new.
    pub fn join(&mut self, key: ByteString, member: ShareMember) -> bool {
        let group = self.groups.entry(key).or_default();
        let new = group.is_empty();
        group.join(member);
        new
    }

    /// Removes a member; returns whether the group is gone.
    pub fn leave(&mut self, key: &str, client_id: &str) -> bool {
        let Some(group) = self.groups.get_mut(key) else {
            return false;
        };
        if group.leave(client_id) {
            self.groups.remove(key);
            return true;
        }
        false
    }

    /// A group by key.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Group> {
        self.groups.get_mut(key)
    }
}

/// A stable hash for picking owners and members (stable across processes
/// and versions, unlike `std`'s randomly seeded hasher): FNV-1a, then
/// MurmurHash3's 64-bit finalizer. FNV-1a alone is weak in its low bits,
/// which `% cores` takes: bit k of it depends only on bits 0..=k of the
/// bytes, so with two cores a client's core was the parity of its bytes'
/// low bits, and `bench-pub-7` and `bench-sub-7` (`p` and `s` differ
/// there) always landed on different cores.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(hash)
}

/// Makes every bit of the result depend on every bit of `h`.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value the test clients' copies of the hash are checked against
    /// (core/tests/paho/common.py).
    #[test]
    fn the_owner_hash_of_a_known_id() {
        assert_eq!(fnv1a(b"robustmq"), 0x8dc8_b19f_678a_f3ac);
    }

    /// Ids that differ in one character land on either core about as
    /// often as a coin says, whatever the character's low bit.
    #[test]
    fn ids_that_differ_in_one_letter_spread_over_the_cores() {
        let same = (0..1000)
            .filter(|i| {
                let a = fnv1a(format!("bench-pub-{i}").as_bytes()) % 2;
                let b = fnv1a(format!("bench-sub-{i}").as_bytes()) % 2;
                a == b
            })
            .count();
        assert!(
            (400..=600).contains(&same),
            "{same} of 1000 on the same core"
        );
        for cores in [2u64, 3, 4, 8] {
            let mut counts = vec![0usize; cores as usize];
            for i in 0..8000 {
                counts[(fnv1a(format!("sensor-{i:05}").as_bytes()) % cores) as usize] += 1;
            }
            let fair = 8000 / cores as usize;
            assert!(
                counts
                    .iter()
                    .all(|&c| c > fair * 9 / 10 && c < fair * 11 / 10),
                "{cores} cores: {counts:?}"
            );
        }
    }

    fn member(id: &'static str) -> ShareMember {
        ShareMember {
            client_id: ByteString::from_static(id),
            core: 0,
            options: Default::default(),
            subscription_id: None,
        }
    }

    #[test]
    fn strategies() {
        let mut g = Group::default();
        for id in ["a", "b", "c"] {
            g.join(member(id));
        }
        let rr: Vec<_> = (0..6)
            .map(|_| {
                g.pick(SharedStrategy::RoundRobin, 0, "p")
                    .unwrap()
                    .client_id
                    .clone()
            })
            .collect();
        assert_eq!(rr, ["a", "b", "c", "a", "b", "c"]);
        let first = g
            .pick(SharedStrategy::Sticky, 7, "p")
            .unwrap()
            .client_id
            .clone();
        for r in 0..10 {
            assert_eq!(
                g.pick(SharedStrategy::Sticky, r, "p").unwrap().client_id,
                first
            );
        }
        g.leave(&first);
        assert_ne!(
            g.pick(SharedStrategy::Sticky, 1, "p").unwrap().client_id,
            first
        );
        let h1 = g
            .pick(SharedStrategy::HashClientId, 0, "pub-1")
            .unwrap()
            .client_id
            .clone();
        let h2 = g
            .pick(SharedStrategy::HashClientId, 9, "pub-1")
            .unwrap()
            .client_id
            .clone();
        assert_eq!(h1, h2, "same publisher, same member");
        assert!(g.pick(SharedStrategy::Random, 5, "p").is_some());
    }

    #[test]
    fn groups_report_first_and_last() {
        let mut groups = SharedGroups::default();
        assert!(groups.join(ByteString::from_static("g/t"), member("a")));
        assert!(!groups.join(ByteString::from_static("g/t"), member("b")));
        assert!(!groups.leave("g/t", "a"));
        assert!(groups.leave("g/t", "b"));
        assert!(!groups.leave("g/t", "b"));
    }
}
