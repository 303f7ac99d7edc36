//! Routing state of one core: the topic trie of its own sessions'
//! subscriptions, the replicated route index (filter -> cores), and the
//! retained messages.

pub mod retained;
pub mod trie;

pub use retained::RetainedStore;
pub use trie::TopicTrie;
