//! Loss, duplicates and reordering from per-publisher sequence numbers.
//!
//! A [`SeqTracker`] keeps one bit per sequence number seen from one
//! publisher (1.25 MB per 10 M messages, grown in steps, never per
//! message), so duplicates are exact. A message whose number is below the
//! highest seen and was not seen before arrived out of order. Loss is
//! known at the end: what the publisher sent and no subscriber of the
//! group received ([`SeqTracker::merge`] joins the members of a shared
//! subscription).

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next number after the highest seen.
    InOrder,
    /// Higher than the next expected: the numbers between are missing so far.
    Gap,
    /// Lower than the highest seen and not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// The numbers seen from one publisher.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    /// One past the highest number seen (0: none yet).
    next: u64,
    /// The lowest number seen.
    lowest: Option<u32>,
    /// Arrivals, duplicates included.
    pub received: u64,
    /// Distinct numbers seen.
    pub unique: u64,
    /// Arrivals of a number already seen.
    pub duplicates: u64,
    /// Arrivals below the highest number seen, first time.
    pub reordered: u64,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    #[inline]
    pub fn record(&mut self, seq: u32) -> Arrival {
        self.received += 1;
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.bits.len() {
            let want = (word + 1).next_power_of_two().max(1024);
            self.bits.resize(want, 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.bits[word] |= bit;
        self.unique += 1;
        self.lowest = Some(self.lowest.map_or(seq, |l| l.min(seq)));
        let s = seq as u64;
        if s + 1 > self.next {
            let in_order = s == self.next;
            self.next = s + 1;
            if in_order {
                Arrival::InOrder
            } else {
                Arrival::Gap
            }
        } else {
            self.reordered += 1;
            Arrival::Reordered
        }
    }

    /// Whether `seq` was seen.
    pub fn seen(&self, seq: u32) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// One past the highest number seen.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Numbers below the highest seen and above the lowest that never
    /// arrived: the loss when the publisher's count is not known (a `sub`
    /// that joined a stream already running).
    pub fn gaps(&self) -> u64 {
        match self.lowest {
            None => 0,
            Some(low) => (self.next - low as u64) - self.unique,
        }
    }

    /// Of the first `sent` numbers, how many never arrived.
    pub fn lost_of(&self, sent: u64) -> u64 {
        let words = (sent / 64) as usize;
        let mut seen: u64 = self
            .bits
            .iter()
            .take(words)
            .map(|w| w.count_ones() as u64)
            .sum();
        let rest = sent % 64;
        if rest > 0 {
            if let Some(w) = self.bits.get(words) {
                seen += (w & ((1u64 << rest) - 1)).count_ones() as u64;
            }
        }
        sent - seen
    }

    /// Joins another member's view of the same publisher (a shared
    /// subscription): a number both saw is a duplicate of the group.
    pub fn merge(&mut self, other: &SeqTracker) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        let mut overlap = 0u64;
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            overlap += (*a & *b).count_ones() as u64;
            *a |= *b;
        }
        self.received += other.received;
        self.duplicates += other.duplicates + overlap;
        self.unique = self.unique + other.unique - overlap;
        self.reordered += other.reordered;
        self.next = self.next.max(other.next);
        self.lowest = match (self.lowest, other.lowest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_nothing_wrong() {
        let mut t = SeqTracker::default();
        for s in 0..10_000 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert_eq!(t.unique, 10_000);
        assert_eq!((t.duplicates, t.reordered, t.gaps()), (0, 0, 0));
        assert_eq!(t.lost_of(10_000), 0);
        assert_eq!(t.lost_of(10_003), 3);
    }

    #[test]
    fn loss_is_what_never_arrived() {
        let mut t = SeqTracker::default();
        for s in (0..100).filter(|s| s % 10 != 3) {
            t.record(s);
        }
        assert_eq!(t.lost_of(100), 10);
        assert_eq!(t.gaps(), 10);
        assert_eq!(t.lost_of(64), 7); // 3, 13, ..., 63
        assert!(!t.seen(13) && t.seen(14));
        // The tail is lost too when the publisher's count is known.
        assert_eq!(t.lost_of(120), 30);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(1), Arrival::InOrder);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!(t.record(2), Arrival::InOrder);
        assert_eq!((t.received, t.unique, t.duplicates), (5, 3, 2));
        assert_eq!(t.reordered, 0);
        assert_eq!(t.lost_of(3), 0);
    }

    #[test]
    fn reordering_is_a_late_first_arrival() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(2), Arrival::Gap);
        assert_eq!(t.gaps(), 1);
        assert_eq!(t.record(1), Arrival::Reordered);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(3), Arrival::InOrder);
        assert_eq!((t.reordered, t.duplicates, t.gaps()), (1, 1, 0));
        assert_eq!(t.lost_of(4), 0);
    }

    #[test]
    fn gaps_start_at_the_first_number_seen() {
        // A subscriber that joined at 1000.
        let mut t = SeqTracker::default();
        for s in 1000..2000 {
            if s != 1500 {
                t.record(s);
            }
        }
        assert_eq!(t.gaps(), 1);
        assert_eq!(t.next(), 2000);
    }

    #[test]
    fn large_numbers_grow_the_bitmap() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(5_000_000), Arrival::Gap);
        assert!(t.seen(5_000_000));
        assert_eq!(t.lost_of(5_000_001), 5_000_000);
    }

    #[test]
    fn merge_joins_shared_subscription_members() {
        let (mut a, mut b) = (SeqTracker::default(), SeqTracker::default());
        for s in 0..100u32 {
            if s % 2 == 0 {
                a.record(s);
            } else {
                b.record(s);
            }
        }
        b.record(4); // delivered to both members
        a.merge(&b);
        assert_eq!(a.unique, 100);
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.received, 101);
        assert_eq!(a.lost_of(100), 0);
        assert_eq!(a.lost_of(101), 1);
        // Member b saw 4 after 99: late for b, counted as reordered.
        assert_eq!(a.reordered, 1);
    }
}
