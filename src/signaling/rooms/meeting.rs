//! The meeting half of the registry: the lobby (knock, admit, decline, time out), the host's
//! actions (lock, remove, ask to mute, end) and the bar on removed peers.
//!
//! Every host action is checked the same way first ([`Registry::host_of`]): the sender must be
//! a connected member (`not-joined` otherwise) and the room's host (`not-host`); a target that
//! is not in the lobby or the room is `unknown-peer`. A success is not acknowledged on its own:
//! its effect is the answer (`joined` and `peer-joined` for an admit, `peer-left` for a
//! removal, `room-locked` for lock and unlock, `ended` for the end).
//!
//! Knocks are rate-limited per room by a token bucket ([`KNOCK_BURST`] at once, then one per
//! [`KNOCK_EVERY`]), so a flood of joins to a locked room reaches the host as a trickle and
//! the joins over the limit get `rate-limited`.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::{ConnId, Entrant, JoinRequest, Peer, Presence, Registry, Waiting};
use crate::signaling::protocol::{
    ErrorCode, HostAction, MediaKind, MuteTarget, PeerId, RoomId, ServerMessage,
};

/// Knocks a room takes at once.
pub const KNOCK_BURST: u32 = 10;
/// After the burst, one more knock per this interval.
pub const KNOCK_EVERY: Duration = Duration::from_secs(1);

/// A room's knock allowance: a token bucket on the registry's virtual time.
#[derive(Debug)]
pub(super) struct KnockBucket {
    available: u32,
    refilled_at: Instant,
}

impl KnockBucket {
    pub(super) fn new(now: Instant) -> KnockBucket {
        KnockBucket {
            available: KNOCK_BURST,
            refilled_at: now,
        }
    }

    /// Takes one knock if the room has one left at `now`.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = (elapsed.as_nanos() / KNOCK_EVERY.as_nanos()).min(u128::from(KNOCK_BURST));
        let earned = u32::try_from(earned).unwrap_or(KNOCK_BURST);
        if earned > 0 {
            self.available = (self.available + earned).min(KNOCK_BURST);
            self.refilled_at = if self.available == KNOCK_BURST {
                now
            } else {
                self.refilled_at + KNOCK_EVERY * earned
            };
        }
        if self.available == 0 {
            return false;
        }
        self.available -= 1;
        true
    }
}

impl Registry {
    /// A host-only message from `conn`.
    pub fn host_action(&mut self, conn: ConnId, action: HostAction) {
        let Some((host, room)) = self.host_of(conn) else {
            return;
        };
        match action {
            HostAction::Lock => self.set_locked(&room, true),
            HostAction::Unlock => self.set_locked(&room, false),
            HostAction::Admit(peer) => self.admit(conn, &room, &peer),
            HostAction::Decline(peer) => self.decline(conn, &room, &peer),
            HostAction::Remove(peer) => self.remove(conn, &host, &peer),
            HostAction::MuteRequest { target, kind } => {
                self.mute_request(conn, &host, target, kind)
            }
            HostAction::End => self.end(&room),
        }
    }

    /// Whether the room of `req` bars this connection, resume token or invitation.
    pub(super) fn is_barred(&self, conn: ConnId, req: &JoinRequest) -> bool {
        let Some(room) = self.rooms.get(&req.room) else {
            return false;
        };
        let b = &room.barred;
        b.conns.contains(&conn)
            || req.resume.as_ref().is_some_and(|t| b.resumes.contains(t))
            || req.invite.as_ref().is_some_and(|i| b.invites.contains(i))
    }

    /// Puts `entrant` in the lobby of the locked `room` and tells the host.
    pub(super) fn knock(&mut self, room: RoomId, entrant: Entrant, now: Instant) {
        let max_waiting = self.config.max_waiting;
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if r.waiting.len() >= max_waiting {
            let message = format!(
                "the lobby of room `{}` is full ({max_waiting} waiting)",
                room.as_str()
            );
            self.error(entrant.conn, ErrorCode::RoomFull, message);
            return;
        }
        if !r.knocks.take(now) {
            let message = format!(
                "too many people are knocking on room `{}`; try again in a few seconds",
                room.as_str()
            );
            self.error(entrant.conn, ErrorCode::RateLimited, message);
            return;
        }
        let id = entrant.id;
        r.waiting.push(id.clone());
        let host = r.host.clone();
        let deadline = now + self.config.lobby_timeout;
        self.lobby_deadlines.push(Reverse((deadline, id.clone())));
        self.waiting_by_conn.insert(entrant.conn, id.clone());
        self.send(entrant.conn, ServerMessage::Waiting { id: id.clone() });
        let knock = ServerMessage::Knock {
            peer: id.clone(),
            name: entrant.name.clone(),
        };
        self.waiting.insert(
            id,
            Waiting {
                room,
                name: entrant.name,
                conn: entrant.conn,
                resume: entrant.resume,
                invite: entrant.invite,
                deadline,
            },
        );
        if let Some(host) = host {
            self.send_to_peer(&host, knock);
        }
    }

    /// `conn` was waiting and leaves the lobby (it left or its connection ended): the host
    /// gets `knock-withdrawn`. Returns whether `conn` was waiting.
    pub(super) fn withdraw(&mut self, conn: ConnId) -> bool {
        let Some(id) = self.waiting_by_conn.get(&conn).cloned() else {
            return false;
        };
        if let Some(w) = self.take_waiting(&id) {
            self.tell_host(&w.room, ServerMessage::KnockWithdrawn { peer: id });
        }
        true
    }

    /// Turns away waiting peers whose `lobby_timeout` ended at or before `now`.
    pub(super) fn expire_lobby(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _))) = self.lobby_deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, id))) = self.lobby_deadlines.pop() else {
                break;
            };
            if self.waiting.get(&id).is_none_or(|w| w.deadline != deadline) {
                continue;
            }
            if let Some(w) = self.take_waiting(&id) {
                let message = "nobody let you in before the lobby timed out";
                self.error(w.conn, ErrorCode::LobbyTimeout, message);
                self.tell_host(&w.room, ServerMessage::KnockWithdrawn { peer: id });
            }
        }
    }

    /// Sends `host` a `knock` for every peer waiting in its room (a new host, or one that
    /// came back, learns who is waiting).
    pub(super) fn replay_knocks(&mut self, host: &PeerId) {
        let Some(room) = self.peers.get(host).map(|p| p.room.clone()) else {
            return;
        };
        let waiting = self
            .rooms
            .get(&room)
            .map(|r| r.waiting.clone())
            .unwrap_or_default();
        for id in waiting {
            let name = self.waiting.get(&id).and_then(|w| w.name.clone());
            self.send_to_peer(host, ServerMessage::Knock { peer: id, name });
        }
    }

    /// Removes a room whose members are all gone: peers still waiting get `ended`. The bar
    /// on removed peers ends with it.
    pub(super) fn end_room(&mut self, room: &RoomId) {
        let Some(r) = self.rooms.remove(room) else {
            return;
        };
        for id in r.waiting {
            if let Some(w) = self.waiting.remove(&id) {
                self.waiting_by_conn.remove(&w.conn);
                self.send(w.conn, ServerMessage::Ended);
            }
        }
    }

    /// The host's id and room for a host action from `conn`, or the error it gets.
    fn host_of(&mut self, conn: ConnId) -> Option<(PeerId, RoomId)> {
        let Some(id) = self.peers_by_conn.get(&conn).cloned() else {
            self.error(conn, ErrorCode::NotJoined, "join a room first");
            return None;
        };
        let room = self.peers.get(&id).map(|p| p.room.clone())?;
        if self.rooms.get(&room).is_some_and(|r| r.hostless) {
            self.error(conn, ErrorCode::NotHost, "a direct call's room has no host");
            return None;
        }
        if self.rooms.get(&room).and_then(|r| r.host.as_ref()) != Some(&id) {
            self.error(conn, ErrorCode::NotHost, "only the room's host can do that");
            return None;
        }
        Some((id, room))
    }

    fn set_locked(&mut self, room: &RoomId, locked: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.locked = locked;
        let members = r.members.clone();
        for m in &members {
            self.send_to_peer(m, ServerMessage::RoomLocked { locked });
        }
        if !locked {
            self.admit_while_room(room);
        }
    }

    /// After an unlock, everyone waiting comes in, in order, while there is room.
    fn admit_while_room(&mut self, room: &RoomId) {
        let waiting = self
            .rooms
            .get(room)
            .map(|r| r.waiting.clone())
            .unwrap_or_default();
        for id in waiting {
            if !self.has_place(room) {
                break;
            }
            self.let_in(&id);
        }
    }

    fn admit(&mut self, host_conn: ConnId, room: &RoomId, peer: &PeerId) {
        if !self.is_waiting_in(peer, room) {
            self.no_such_waiting(host_conn, peer);
            return;
        }
        if !self.has_place(room) {
            let message = format!(
                "room `{}` is full ({} peers); `{peer}` keeps waiting",
                room.as_str(),
                self.config.max_peers
            );
            self.error(host_conn, ErrorCode::RoomFull, message);
            return;
        }
        self.let_in(peer);
    }

    fn decline(&mut self, host_conn: ConnId, room: &RoomId, peer: &PeerId) {
        if !self.is_waiting_in(peer, room) {
            self.no_such_waiting(host_conn, peer);
            return;
        }
        if let Some(w) = self.take_waiting(peer) {
            let message = "the host did not let you in";
            self.error(w.conn, ErrorCode::Declined, message);
        }
    }

    fn remove(&mut self, host_conn: ConnId, host: &PeerId, peer: &PeerId) {
        let Some(target) = self.other_member(host, peer) else {
            let message = format!("no other peer `{peer}` in your room");
            self.error(host_conn, ErrorCode::UnknownPeer, message);
            return;
        };
        let conn = match target.presence {
            Presence::Connected(c) => Some(c),
            Presence::Away { .. } => None,
        };
        let resume = target.resume.clone();
        let invite = target.invite.clone();
        let room = target.room.clone();
        if let Some(r) = self.rooms.get_mut(&room) {
            r.barred.conns.extend(conn);
            r.barred.resumes.insert(resume);
            r.barred.invites.extend(invite);
        }
        if let Some(c) = conn {
            self.error(c, ErrorCode::Removed, "the host removed you from the room");
        }
        self.remove_peer(peer);
    }

    fn mute_request(&mut self, conn: ConnId, host: &PeerId, target: MuteTarget, kind: MediaKind) {
        let msg = ServerMessage::MuteRequest {
            from: host.clone(),
            kind,
        };
        let targets = match target {
            MuteTarget::All => self.room_members_of(host),
            MuteTarget::Peer(peer) => {
                if self.other_member(host, &peer).is_none() {
                    let message = format!("no other peer `{peer}` in your room");
                    self.error(conn, ErrorCode::UnknownPeer, message);
                    return;
                }
                vec![peer]
            }
        };
        for t in targets.iter().filter(|t| *t != host) {
            self.send_to_peer(t, msg.clone());
        }
    }

    /// `end`: everyone in the room and its lobby gets `ended`; the members are gone for good
    /// (their credentials and allocations end as on a leave), without `peer-left`, and peers
    /// lost from it cannot come back.
    fn end(&mut self, room: &RoomId) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let members = r.members.clone();
        self.forget_lost_of(room);
        for m in &members {
            self.send_to_peer(m, ServerMessage::Ended);
        }
        self.end_room(room);
        for m in &members {
            self.remove_peer(m);
        }
    }

    /// Makes the waiting `peer` a member: `joined` to it, `peer-joined` to the others.
    fn let_in(&mut self, peer: &PeerId) {
        let Some(w) = self.take_waiting(peer) else {
            return;
        };
        let entrant = Entrant {
            conn: w.conn,
            id: peer.clone(),
            resume: w.resume,
            name: w.name,
            invite: w.invite,
        };
        self.enter(w.room, entrant, false);
    }

    /// Takes `peer` out of the lobby (its deadline is skipped when it comes up).
    fn take_waiting(&mut self, peer: &PeerId) -> Option<Waiting> {
        let w = self.waiting.remove(peer)?;
        self.waiting_by_conn.remove(&w.conn);
        if let Some(r) = self.rooms.get_mut(&w.room) {
            r.waiting.retain(|id| id != peer);
        }
        Some(w)
    }

    fn tell_host(&mut self, room: &RoomId, msg: ServerMessage) {
        if let Some(host) = self.rooms.get(room).and_then(|r| r.host.clone()) {
            self.send_to_peer(&host, msg);
        }
    }

    fn is_waiting_in(&self, peer: &PeerId, room: &RoomId) -> bool {
        self.waiting.get(peer).is_some_and(|w| &w.room == room)
    }

    fn no_such_waiting(&mut self, host_conn: ConnId, peer: &PeerId) {
        let message = format!("nobody `{peer}` is waiting to join your room");
        self.error(host_conn, ErrorCode::UnknownPeer, message);
    }

    fn has_place(&self, room: &RoomId) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.len() < self.config.max_peers)
    }

    /// `peer` if it is a member of `host`'s room other than the host itself.
    fn other_member(&self, host: &PeerId, peer: &PeerId) -> Option<&Peer> {
        let room = &self.peers.get(host)?.room;
        self.peers
            .get(peer)
            .filter(|p| &p.room == room && peer != host)
    }

    fn room_members_of(&self, peer: &PeerId) -> Vec<PeerId> {
        self.peers
            .get(peer)
            .and_then(|p| self.rooms.get(&p.room))
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
