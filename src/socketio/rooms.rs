//! The rooms of the Socket.IO vocabularies: a plain state machine with no I/O, keyed by any id.
//!
//! A socket is in at most one room; rooms hold at most [`ROOM_SIZE`] sockets, as in the apps
//! these vocabularies come from (one call between two browsers). Joining a second room leaves
//! the first. An empty room disappears, so the number of rooms never exceeds the number of
//! connected sockets, which the connection caps bound.

use std::collections::HashMap;
use std::hash::Hash;

/// Sockets in one room.
pub const ROOM_SIZE: usize = 2;
/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 128;

/// What a `join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined<K> {
    /// The room did not exist: the socket is alone in it.
    Created,
    /// The socket joined `others`, who were there before it.
    Joined { others: Vec<K> },
    /// The room already holds [`ROOM_SIZE`] sockets; nothing changed.
    Full,
}

/// Why a room name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("a room name is a string of 1 to 128 bytes without control characters")]
    BadName,
}

/// Rooms and who is in them.
#[derive(Debug)]
pub struct Rooms<K> {
    members_by_room: HashMap<String, Vec<K>>,
    room_by_socket: HashMap<K, String>,
}

impl<K: Clone + Eq + Hash> Default for Rooms<K> {
    fn default() -> Self {
        Rooms {
            members_by_room: HashMap::new(),
            room_by_socket: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Rooms<K> {
    /// Puts `socket` in `room` (leaving any other room first), unless the room is full.
    /// Joining the room it is already in is [`Joined::Joined`] with the others there.
    pub fn join(&mut self, socket: &K, room: &str) -> Result<Joined<K>, RoomError> {
        if !is_valid_name(room) {
            return Err(RoomError::BadName);
        }
        if self.room_of(socket) == Some(room) {
            let others = self.others(socket).unwrap_or_default();
            return Ok(Joined::Joined { others });
        }
        let len = self.members_by_room.get(room).map_or(0, Vec::len);
        if len >= ROOM_SIZE {
            return Ok(Joined::Full);
        }
        self.leave(socket);
        let members = self.members_by_room.entry(room.to_owned()).or_default();
        let others = members.clone();
        members.push(socket.clone());
        self.room_by_socket.insert(socket.clone(), room.to_owned());
        Ok(match others.is_empty() {
            true => Joined::Created,
            false => Joined::Joined { others },
        })
    }

    /// Takes `socket` out of its room; returns the room and who is left in it.
    pub fn leave(&mut self, socket: &K) -> Option<(String, Vec<K>)> {
        let room = self.room_by_socket.remove(socket)?;
        let members = self.members_by_room.get_mut(&room)?;
        members.retain(|m| m != socket);
        let left = members.clone();
        if left.is_empty() {
            self.members_by_room.remove(&room);
        }
        Some((room, left))
    }

    pub fn room_of(&self, socket: &K) -> Option<&str> {
        self.room_by_socket.get(socket).map(String::as_str)
    }

    /// The other sockets of `socket`'s room; `None` when it is in none.
    pub fn others(&self, socket: &K) -> Option<Vec<K>> {
        let room = self.room_by_socket.get(socket)?;
        let members = self.members_by_room.get(room)?;
        Some(members.iter().filter(|m| *m != socket).cloned().collect())
    }

    /// The other sockets of `room`, if `socket` is in it; `None` otherwise.
    pub fn others_in(&self, socket: &K, room: &str) -> Option<Vec<K>> {
        (self.room_of(socket) == Some(room))
            .then(|| self.others(socket))
            .flatten()
    }

    pub fn room_count(&self) -> usize {
        self.members_by_room.len()
    }
}

fn is_valid_name(room: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&room.len()) && !room.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_creates_the_second_joins_the_third_finds_it_full() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.join(&1, "r"), Ok(Joined::Created));
        assert_eq!(rooms.join(&2, "r"), Ok(Joined::Joined { others: vec![1] }));
        assert_eq!(rooms.join(&3, "r"), Ok(Joined::Full));
        assert_eq!(rooms.room_of(&3), None);
        assert_eq!(rooms.others(&1), Some(vec![2]));
    }

    #[test]
    fn a_socket_that_leaves_frees_its_place_and_an_empty_room_goes() {
        let mut rooms = Rooms::default();
        rooms.join(&1, "r").expect("valid");
        rooms.join(&2, "r").expect("valid");
        assert_eq!(rooms.leave(&1), Some(("r".to_owned(), vec![2])));
        assert_eq!(rooms.join(&3, "r"), Ok(Joined::Joined { others: vec![2] }));
        rooms.leave(&2);
        rooms.leave(&3);
        assert_eq!(rooms.room_count(), 0);
        assert_eq!(rooms.leave(&3), None);
    }

    #[test]
    fn joining_another_room_leaves_the_first() {
        let mut rooms = Rooms::default();
        rooms.join(&1, "a").expect("valid");
        assert_eq!(rooms.join(&1, "b"), Ok(Joined::Created));
        assert_eq!(rooms.room_count(), 1);
        assert_eq!(rooms.room_of(&1), Some("b"));
    }

    #[test]
    fn signals_need_the_sender_to_be_in_the_named_room() {
        let mut rooms = Rooms::default();
        rooms.join(&1, "a").expect("valid");
        rooms.join(&2, "a").expect("valid");
        rooms.join(&3, "b").expect("valid");
        assert_eq!(rooms.others_in(&3, "a"), None);
        assert_eq!(rooms.others_in(&1, "a"), Some(vec![2]));
    }

    #[test]
    fn room_names_are_bounded_and_printable() {
        let mut rooms = Rooms::default();
        assert_eq!(rooms.join(&1, ""), Err(RoomError::BadName));
        assert_eq!(rooms.join(&1, "a\nb"), Err(RoomError::BadName));
        assert_eq!(
            rooms.join(&1, &"x".repeat(MAX_ROOM_LEN + 1)),
            Err(RoomError::BadName)
        );
        assert_eq!(rooms.join(&1, "Raum ä 1"), Ok(Joined::Created));
    }
}
