//! A topic trie: topic filters, level by level, each with its subscribers.
//!
//! Matching walks the trie with an explicit stack, never recursion, so a
//! topic with many levels cannot exhaust the thread's stack.

use crate::hash::HashMap;
use std::hash::Hash;

use smallvec::SmallVec;

#[derive(Debug)]
struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    /// The `+` and `#` children, apart: every match looks them up at every
    /// level it visits, and a field costs no hashing.
    plus: Option<Box<Node<K, V>>>,
    hash: Option<Box<Node<K, V>>>,
    subscribers: HashMap<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            plus: None,
            hash: None,
            subscribers: HashMap::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.subscribers.is_empty()
    }

    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_default(&mut self, level: &str) -> &mut Node<K, V> {
        match level {
            "+" => self.plus.get_or_insert_default(),
            "#" => self.hash.get_or_insert_default(),
            _ => self.children.entry(level.into()).or_default(),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

/// A node to visit while matching, with the levels of the topic still to
/// match (`None`: all matched).
type Visit<'t, 'n, K, V> = (&'n Node<K, V>, Option<&'t str>);

/// Topic filters mapped to subscribers `K` with a value `V` each.
#[derive(Debug)]
pub struct TopicTrie<K, V> {
    root: Node<K, V>,
    filters: usize,
    /// Changes with every insert and remove: a match remembered at one
    /// version holds until the next.
    version: u64,
}

impl<K, V> Default for TopicTrie<K, V> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            filters: 0,
            version: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> TopicTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct filters have at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Changes whenever a subscription is inserted or removed, so that a
    /// caller may keep what a topic matched until it does.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Adds or replaces `key`'s subscription to `filter`. Returns whether
    /// the filter had no subscriber before (the first one).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> bool {
        self.version += 1;
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_default(level);
        }
        let first = node.subscribers.is_empty();
        node.subscribers.insert(key, value);
        if first {
            self.filters += 1;
        }
        first
    }

    /// Removes `key`'s subscription to `filter`. Returns the value, and
    /// whether the filter has no subscriber left.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<(V, bool)> {
        self.version += 1;
        let levels: Vec<&str> = filter.split('/').collect();
        let (value, last) = Self::remove_at(&mut self.root, &levels, key)?;
        if last {
            self.filters -= 1;
        }
        Some((value, last))
    }

    /// Walks down to the filter's node, removes the key, then prunes empty
    /// nodes on the way back. Iterative: the path is kept as raw levels and
    /// the trie re-walked per pruned level (depth is bounded by the filter).
    fn remove_at(root: &mut Node<K, V>, levels: &[&str], key: &K) -> Option<(V, bool)> {
        let mut node = &mut *root;
        for level in levels {
            node = node.child_mut(level)?;
        }
        let value = node.subscribers.remove(key)?;
        let last = node.subscribers.is_empty();
        // Prune: from the deepest level up, drop children left empty.
        for depth in (0..levels.len()).rev() {
            let mut parent = &mut *root;
            for level in &levels[..depth] {
                match parent.child_mut(level) {
                    Some(n) => parent = n,
                    None => return Some((value, last)),
                }
            }
            let empty = parent
                .child(levels[depth])
                .is_some_and(|child| child.is_empty());
            if !empty {
                break;
            }
            parent.remove_child(levels[depth]);
        }
        Some((value, last))
    }

    /// Whether `key` subscribes to exactly `filter`.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        node.subscribers.get(key)
    }

    /// Calls `visit` with every subscription whose filter matches `topic`
    /// (a topic name), with the filter's node subscribers. `$` topics are
    /// not matched by a wildcard in the first level.
    pub fn for_each_match(&self, topic: &str, mut visit: impl FnMut(&K, &V)) {
        // Each entry: a node and the levels still to match (`None`: all
        // matched). Inline for the usual depths: no allocation per match.
        let mut stack: SmallVec<[Visit<'_, '_, K, V>; 16]> = SmallVec::new();
        stack.push((&self.root, Some(topic)));
        let dollar = topic.starts_with('$');
        while let Some((node, rest)) = stack.pop() {
            let wildcards_allowed = !(dollar && std::ptr::eq(node, &self.root));
            if wildcards_allowed {
                if let Some(hash) = &node.hash {
                    hash.subscribers.iter().for_each(|(k, v)| visit(k, v));
                }
            }
            let Some(rest) = rest else {
                node.subscribers.iter().for_each(|(k, v)| visit(k, v));
                continue;
            };
            let (level, next) = split_level(rest);
            if wildcards_allowed {
                if let Some(plus) = &node.plus {
                    stack.push((plus, next));
                }
            }
            if let Some(child) = node.children.get(level) {
                stack.push((child, next));
            }
        }
    }
}

/// The first level of `topic` and what follows its `/`, if any. A byte
/// scan: `str::split_once('/')` went through the generic pattern searcher,
/// 3% of the broker's CPU per message for two-level topics.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.bytes().position(|b| b == b'/') {
        // '/' is ASCII: both sides are on character boundaries.
        Some(i) => (&topic[..i], Some(&topic[i + 1..])),
        None => (topic, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use robustmq_protocol::topic::matches;

    fn matched(trie: &TopicTrie<&'static str, ()>, topic: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, _| out.push(*k));
        out.sort();
        out
    }

    #[test]
    fn matches_like_the_specification() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "$SYS/#", "$SYS/+", "a/+/c", "/+", "+/+",
        ];
        let mut trie = TopicTrie::new();
        for f in filters {
            trie.insert(f, f, ());
        }
        for topic in [
            "a/b", "a", "a/b/c", "$SYS/x", "/x", "b", "x/b", "a/", "$SYS",
        ] {
            let mut expected: Vec<&str> = filters
                .iter()
                .copied()
                .filter(|f| matches(f, topic))
                .collect();
            expected.sort();
            assert_eq!(matched(&trie, topic), expected, "topic {topic}");
        }
    }

    #[test]
    fn first_and_last_subscriber_are_reported() {
        let mut trie = TopicTrie::new();
        assert!(trie.insert("a/+", "c1", 1));
        assert!(!trie.insert("a/+", "c2", 2));
        assert!(!trie.insert("a/+", "c1", 3), "replace is not a first");
        assert_eq!(trie.filter_count(), 1);
        assert_eq!(trie.get("a/+", &"c1"), Some(&3));
        assert_eq!(trie.remove("a/+", &"c1"), Some((3, false)));
        assert_eq!(trie.remove("a/+", &"c1"), None);
        assert_eq!(trie.remove("a/+", &"c2"), Some((2, true)));
        assert_eq!(trie.filter_count(), 0);
        let v = trie.version();
        trie.insert("b", "c1", 1);
        assert_ne!(trie.version(), v, "an insert changes the version");
        let v = trie.version();
        trie.remove("b", &"c1");
        assert_ne!(trie.version(), v, "a remove changes the version");
        assert!(trie.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn pruning_keeps_other_branches() {
        let mut trie = TopicTrie::new();
        trie.insert("a/b/c", "x", ());
        trie.insert("a/b", "y", ());
        trie.remove("a/b/c", &"x");
        assert_eq!(matched(&trie, "a/b"), vec!["y"]);
        assert!(matched(&trie, "a/b/c").is_empty());
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        let mut trie = TopicTrie::new();
        trie.insert("#", "all", ());
        let deep = "a/".repeat(50_000) + "z";
        assert_eq!(matched(&trie, &deep), vec!["all"]);
    }
}
