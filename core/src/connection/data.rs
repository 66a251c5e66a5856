//! Typed per-connection data (bun-ws-router's `getData` / `setData`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// A map holding at most one value of each type.
///
/// Each connection has one, reached through [`crate::ConnectionHandle::data`] and
/// friends; a transport's authentication hook fills one in at the handshake
/// ([`crate::connection::Connection::data`]).
#[derive(Default)]
pub struct DataMap {
    values: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl DataMap {
    /// An empty map.
    pub fn new() -> Self {
        DataMap::default()
    }

    /// Stores `value`, returning the value of the same type it replaces.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.values
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// The value of type `T`, if set.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref())
    }

    /// The value of type `T`, mutably, if set.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.values
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut())
    }

    /// The value of type `T`, inserting `T::default()` first if unset.
    pub fn get_or_default<T: Default + Send + Sync + 'static>(&mut self) -> &mut T {
        let slot = self
            .values
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        if !slot.is::<T>() {
            *slot = Box::new(T::default());
        }
        match slot.downcast_mut::<T>() {
            Some(value) => value,
            None => unreachable!("slot holds a T: checked above"),
        }
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.values
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast::<T>().ok().map(|b| *b))
    }

    /// Moves every value of `other` into `self`.
    pub fn extend(&mut self, other: DataMap) {
        self.values.extend(other.values);
    }
}

impl fmt::Debug for DataMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataMap")
            .field("len", &self.values.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Session {
        user: String,
    }

    #[test]
    fn values_are_keyed_by_type() {
        let mut map = DataMap::new();
        assert_eq!(map.insert(Session { user: "ada".into() }), None);
        map.insert(7u32);
        assert_eq!(map.get::<Session>().map(|s| s.user.as_str()), Some("ada"));
        assert_eq!(map.get::<u32>(), Some(&7));
        map.get_or_default::<Session>().user.push('!');
        assert_eq!(
            map.remove::<Session>(),
            Some(Session {
                user: "ada!".into()
            })
        );
        assert_eq!(map.get::<Session>(), None);
        assert_eq!(*map.get_or_default::<u64>(), 0);
    }
}
