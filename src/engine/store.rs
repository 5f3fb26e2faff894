//! The tuple store and the rules for which tuples a node accepts. Store-if-new as CZMQ does it:
//! a tuple is a duplicate only when its key is held with the same value.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::wire::MAX_KEY_LEN;

/// Why a tuple was refused. Refused tuples change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    /// Keys name something; an empty one cannot be looked up or printed.
    #[error("key is empty")]
    EmptyKey,
    /// The wire's key length is one byte.
    #[error("key is {len} bytes; at most 255")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// Keys are single words on the text pipe.
    #[error("key {key:?} contains whitespace or a control character")]
    BadKeyChar {
        /// The refused key.
        key: String,
    },
    /// A value is the rest of a pipe line, so it may hold spaces but not line breaks.
    #[error("value for key {key:?} contains a control character")]
    BadValueChar {
        /// The key whose value was refused.
        key: String,
    },
    /// The node's limit on value size.
    #[error("value for key {key:?} is {len} bytes; this node takes at most {max}")]
    ValueTooLong {
        /// The key whose value was refused.
        key: String,
        /// The value's length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The node's limit on how many tuples it holds.
    #[error("store is full ({max} tuples)")]
    StoreFull {
        /// The configured limit.
        max: usize,
    },
}

/// Checks a tuple against this node's rules (see `proto/zgp.md`).
pub fn validate(key: &str, value: &str, max_value_bytes: usize) -> Result<(), TupleError> {
    if key.is_empty() {
        return Err(TupleError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TupleError::KeyTooLong { len: key.len() });
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TupleError::BadKeyChar {
            key: key.to_owned(),
        });
    }
    if value.len() > max_value_bytes {
        return Err(TupleError::ValueTooLong {
            key: key.to_owned(),
            len: value.len(),
            max: max_value_bytes,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(TupleError::BadValueChar {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Every tuple a node holds, ordered by key so listings and resyncs are deterministic.
#[derive(Debug, Default)]
pub struct Store {
    tuples: BTreeMap<Arc<str>, Arc<str>>,
}

impl Store {
    /// Stores the tuple unless the key is already held with this value. Returns whether it was
    /// new. `max_tuples` bounds the store: a new key past it is refused.
    pub fn insert_if_new(
        &mut self,
        key: &Arc<str>,
        value: &Arc<str>,
        max_tuples: usize,
    ) -> Result<bool, TupleError> {
        let full = self.tuples.len() >= max_tuples;
        match self.tuples.get_mut(key) {
            Some(held) if held == value => Ok(false),
            Some(held) => {
                *held = Arc::clone(value);
                Ok(true)
            }
            None if full => Err(TupleError::StoreFull { max: max_tuples }),
            None => {
                self.tuples.insert(Arc::clone(key), Arc::clone(value));
                Ok(true)
            }
        }
    }

    /// The value held for `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<str>> {
        self.tuples.get(key)
    }

    /// How many tuples are held.
    pub fn len(&self) -> usize {
        self.tuples.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.tuples.is_empty()
    }

    /// Every tuple, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.tuples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn same_value_is_a_duplicate_and_a_new_value_replaces() {
        let mut store = Store::default();
        assert_eq!(store.insert_if_new(&arc("k"), &arc("a"), 10), Ok(true));
        assert_eq!(store.insert_if_new(&arc("k"), &arc("a"), 10), Ok(false));
        assert_eq!(store.insert_if_new(&arc("k"), &arc("b"), 10), Ok(true));
        assert_eq!(store.get("k").map(|v| &**v), Some("b"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_full_store_refuses_new_keys_but_takes_new_values() {
        let mut store = Store::default();
        assert_eq!(store.insert_if_new(&arc("a"), &arc("1"), 1), Ok(true));
        assert_eq!(
            store.insert_if_new(&arc("b"), &arc("1"), 1),
            Err(TupleError::StoreFull { max: 1 })
        );
        assert_eq!(store.insert_if_new(&arc("a"), &arc("2"), 1), Ok(true));
    }

    #[test]
    fn keys_that_cannot_be_a_pipe_word_are_refused() {
        assert_eq!(validate("", "v", 100), Err(TupleError::EmptyKey));
        assert!(matches!(
            validate("a b", "v", 100),
            Err(TupleError::BadKeyChar { .. })
        ));
        assert!(matches!(
            validate("a\nb", "v", 100),
            Err(TupleError::BadKeyChar { .. })
        ));
        assert!(matches!(
            validate(&"k".repeat(256), "v", 100),
            Err(TupleError::KeyTooLong { len: 256 })
        ));
        assert!(matches!(
            validate("k", "line\nbreak", 100),
            Err(TupleError::BadValueChar { .. })
        ));
        assert!(matches!(
            validate("k", "toolong", 3),
            Err(TupleError::ValueTooLong { .. })
        ));
        assert_eq!(
            validate("tcp://10.0.0.1:9000", "orders service", 100),
            Ok(())
        );
    }
}
