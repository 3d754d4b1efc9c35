//! Peers lost with their node. In a cluster a room lives on one node, its home, while a
//! member's connection may be held by another node. When that node dies, its connections end
//! with whatever was queued on them and none of them reports its end; the home is told
//! instead, once per connection, through [`Registry::lose`].
//!
//! A lost peer is not made *away* (as after a dropped connection) but removed at once: the
//! others get `peer-left` (and `host-changed`), its place is freed, [`Registry::poll_removed`]
//! reports it so that its TURN credentials are revoked, and signals for it are dropped. Only
//! its resume token outlives it, for `reconnect_grace`: a `join` of the same room with it comes
//! back under the same id and name as a fresh member — past the lobby, as a resume, but within
//! `max_peers`, host only by the usual rules, with `peer-joined` to the others and an ordinary
//! `joined`. A refused return (`room-full`) keeps the token until the grace ends. A room that
//! ended by itself in the meantime is made again; one the host ended, or a direct call's room
//! that was closed, forgets its lost tokens with it.

use std::cmp::Reverse;
use std::time::Instant;

use super::{ConnId, Entrant, Registry};
use crate::signaling::protocol::{PeerId, ResumeToken, RoomId};

/// What brings a lost peer back: everything but its connection and its queue.
#[derive(Debug)]
pub(super) struct Lost {
    room: RoomId,
    name: Option<String>,
    resume: ResumeToken,
    invite: Option<String>,
    deadline: Instant,
}

impl Registry {
    /// The node that held `conn` died at `now`: its peer leaves at once, its token stays good
    /// for `reconnect_grace`. A connection waiting in a lobby is withdrawn; an unknown one, or
    /// one whose peer was resumed elsewhere, changes nothing else.
    pub fn lose(&mut self, conn: ConnId, now: Instant) {
        if self.withdraw(conn) || self.replaced_conns.remove(&conn).is_some() {
            return;
        }
        let Some(id) = self.peers_by_conn.get(&conn).cloned() else {
            return;
        };
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let lost = Lost {
            room: peer.room.clone(),
            name: peer.name.clone(),
            resume: peer.resume.clone(),
            invite: peer.invite.clone(),
            deadline: now + self.config.reconnect_grace,
        };
        self.remove_peer(&id);
        if self.config.reconnect_grace.is_zero() {
            return;
        }
        self.lost_deadlines
            .push(Reverse((lost.deadline, id.clone())));
        self.lost_by_resume.insert(lost.resume.clone(), id.clone());
        self.lost.insert(id, lost);
    }

    /// The peer lost under `resume`, if it was a member of `room`.
    /// Takes in a peer that a node which is gone held in `room` (known from what that node
    /// left in Redis): as if it had been lost here, at `now`. Nothing happens when `id` or
    /// `resume` is in use here already.
    pub fn restore_lost(
        &mut self,
        room: RoomId,
        id: PeerId,
        name: Option<String>,
        resume: ResumeToken,
        now: Instant,
    ) {
        let in_use = self.peers.contains_key(&id)
            || self.lost.contains_key(&id)
            || self.peers_by_resume.contains_key(&resume)
            || self.lost_by_resume.contains_key(&resume);
        if in_use || self.config.reconnect_grace.is_zero() {
            return;
        }
        let lost = Lost {
            room,
            name,
            resume,
            invite: None,
            deadline: now + self.config.reconnect_grace,
        };
        self.lost_deadlines
            .push(Reverse((lost.deadline, id.clone())));
        self.lost_by_resume.insert(lost.resume.clone(), id.clone());
        self.lost.insert(id, lost);
    }

    pub(super) fn lost_in(&self, room: &RoomId, resume: &ResumeToken) -> Option<PeerId> {
        self.lost_by_resume
            .get(resume)
            .filter(|id| self.lost.get(*id).is_some_and(|l| &l.room == room))
            .cloned()
    }

    /// A `join` on `conn` with the token of the lost peer `id`: it enters its room (made
    /// again if it ended) under its old id and name, or gets `room-full` and keeps its token.
    pub(super) fn return_lost(&mut self, conn: ConnId, id: PeerId, now: Instant) {
        let Some(lost) = self.lost.get(&id) else {
            return;
        };
        let room = lost.room.clone();
        let entrant = Entrant {
            conn,
            id: id.clone(),
            resume: lost.resume.clone(),
            name: lost.name.clone(),
            invite: lost.invite.clone(),
        };
        if !self.rooms.contains_key(&room) {
            self.create_room(room.clone(), now);
        }
        if self.enter(room.clone(), entrant, false) {
            self.forget_lost(&id);
        } else if self.rooms.get(&room).is_some_and(|r| r.members.is_empty()) {
            // Only with a `max_peers` of 0, as for a fresh join.
            self.rooms.remove(&room);
        }
    }

    /// Forgets the tokens of lost peers whose grace ended at or before `now`.
    pub(super) fn expire_lost(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _))) = self.lost_deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, id))) = self.lost_deadlines.pop() else {
                break;
            };
            if self.lost.get(&id).is_some_and(|l| l.deadline == deadline) {
                self.forget_lost(&id);
            }
        }
    }

    /// Forgets the tokens of the peers lost from `room` (the host ended it, or it was a
    /// direct call's that is over): nobody may bring it back with them.
    pub(super) fn forget_lost_of(&mut self, room: &RoomId) {
        let ids: Vec<PeerId> = self
            .lost
            .iter()
            .filter(|(_, l)| &l.room == room)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.forget_lost(id);
        }
    }

    /// When the next lost token expires.
    pub(super) fn next_lost_deadline(&self) -> Option<Instant> {
        self.lost_deadlines.peek().map(|Reverse((d, _))| *d)
    }

    fn forget_lost(&mut self, id: &PeerId) {
        if let Some(l) = self.lost.remove(id) {
            self.lost_by_resume.remove(&l.resume);
        }
    }
}

#[cfg(test)]
mod tests;
