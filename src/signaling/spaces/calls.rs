//! The call half of [`Spaces`]: ringing, the answers to a ring, blocks, and the private room
//! of an accepted call (who may join it, and the end of the call when someone leaves it).
//!
//! Every end of a call goes through [`Spaces::finish_ring`] or [`Spaces::finish_accepted`],
//! which take the call out of both people, tell both sides, count the outcome and announce
//! the busy change: no path leaves a person busy without a call.

use std::cmp::Reverse;
use std::time::Instant;

use super::{FreshCall, Outcome, Output, RoomEntry, Spaces, Timer, ENDED_ROOMS_KEPT};
use crate::signaling::protocol::{
    CallAccepted, CallId, CallToken, ErrorCode, PeerId, ResumeToken, Ring, RoomId, ServerMessage,
};
use crate::signaling::rooms::ConnId;

#[derive(Debug)]
pub(super) struct Call {
    caller: PeerId,
    callee: PeerId,
    audio_only: bool,
    room: RoomId,
    caller_token: CallToken,
    callee_token: CallToken,
    state: CallState,
}

#[derive(Debug)]
pub(super) enum CallState {
    /// `silent`: the callee blocked the caller and is never told.
    Ringing { deadline: Instant, silent: bool },
    /// Waiting for both sides to join the room until `deadline` (`None` once both did).
    Accepted {
        deadline: Option<Instant>,
        in_room: [bool; 2],
    },
}

impl Spaces {
    /// `{"type":"call"}` from `conn` to `to`. `fresh` names the call if it rings.
    pub fn call(
        &mut self,
        conn: ConnId,
        to: &PeerId,
        audio_only: bool,
        fresh: FreshCall,
        now: Instant,
    ) {
        let Some(me) = self.person_on(conn) else {
            return;
        };
        let rate = self.config.ring_rate;
        let allowed = self
            .people
            .get_mut(&me)
            .is_some_and(|p| p.rings.take(rate, now));
        if !allowed {
            let message = format!("more than {rate} calls per minute; call again later");
            self.error(conn, ErrorCode::RateLimited, message);
            return;
        }
        let Some((silent, target_busy)) = self.target(conn, &me, to) else {
            return;
        };
        if self.people.get(&me).is_some_and(|p| p.call.is_some()) {
            let message = "you are already ringing or in a call; cancel or hang up first";
            self.error(conn, ErrorCode::AlreadyJoined, message);
            return;
        }
        if target_busy {
            self.count(Outcome::Busy);
            self.send(conn, ServerMessage::CallBusy { call: fresh.id });
            return;
        }
        self.ring(conn, me, to.clone(), audio_only, silent, fresh, now);
    }

    /// `{"type":"accept"}`: the callee takes the call; both get `call-accepted`.
    pub fn accept(&mut self, conn: ConnId, call: &CallId, now: Instant) {
        if !self.rings_for(conn, call, Side::Callee) {
            return;
        }
        let deadline = now + self.config.join_timeout;
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        c.state = CallState::Accepted {
            deadline: Some(deadline),
            in_room: [false, false],
        };
        let room = c.room.clone();
        self.calls_by_room.insert(room.clone(), call.clone());
        self.timers
            .push(Reverse((deadline, Timer::Call(call.clone()))));
        self.count(Outcome::Accepted);
        self.outputs.push_back(Output::OpenRoom { room });
        if let Some(c) = self.calls.get(call) {
            let (caller, callee) = (c.caller.clone(), c.callee.clone());
            self.announce_accepted(&caller);
            self.announce_accepted(&callee);
        }
    }

    /// `{"type":"decline","call":C}`: the callee refuses; both get `call-declined`.
    pub fn decline(&mut self, conn: ConnId, call: &CallId) {
        if self.rings_for(conn, call, Side::Callee) {
            self.finish_ring(call, Outcome::Declined);
        }
    }

    /// `{"type":"cancel"}`: the caller stops ringing; both get `call-cancelled`.
    pub fn cancel(&mut self, conn: ConnId, call: &CallId) {
        if self.rings_for(conn, call, Side::Caller) {
            self.finish_ring(call, Outcome::Cancelled);
        }
    }

    /// `{"type":"block"}`: calls from `id` no longer ring for the person on `conn`.
    pub fn block(&mut self, conn: ConnId, id: &PeerId) {
        let Some(me) = self.person_on(conn) else {
            return;
        };
        if self.target(conn, &me, id).is_none() {
            return;
        }
        let max = self.config.max_blocks;
        let people = &self.people;
        let Some(blocked) = self.people.get(&me).map(|p| {
            let mut b = p.blocked.clone();
            b.retain(|x| people.contains_key(x));
            b
        }) else {
            return;
        };
        if blocked.len() >= max && !blocked.contains(id) {
            let message = format!("you may block at most {max} people at once");
            self.error(conn, ErrorCode::BadRequest, message);
            return;
        }
        if let Some(p) = self.people.get_mut(&me) {
            p.blocked = blocked;
            p.blocked.insert(id.clone());
        }
    }

    /// `{"type":"unblock"}`: undoes a `block` (nothing happens when `id` was not blocked).
    pub fn unblock(&mut self, conn: ConnId, id: &PeerId) {
        let Some(me) = self.person_on(conn) else {
            return;
        };
        if let Some(p) = self.people.get_mut(&me) {
            p.blocked.remove(id);
        }
    }

    /// A `leave` from `conn` while it is in no room: hangs up its accepted call, if it has one
    /// (a side may hang up before it joined the call's room). Returns whether it did.
    pub fn hang_up(&mut self, conn: ConnId) -> bool {
        let Some(me) = self.people_by_conn.get(&conn).cloned() else {
            return false;
        };
        let Some(call) = self.people.get(&me).and_then(|p| p.call.clone()) else {
            return false;
        };
        let accepted = self
            .calls
            .get(&call)
            .is_some_and(|c| matches!(c.state, CallState::Accepted { .. }));
        if accepted {
            self.finish_accepted(&call, Some(me));
        }
        accepted
    }

    /// Whether `conn` may join `room`: `None` when `room` is no call's room (the ordinary rules
    /// apply), `Some(Ok(entry))` for a side of the call with its token (or its resume token),
    /// `Some(Err(why))` for anyone else (`forbidden`).
    pub fn admit_to_room(
        &self,
        conn: ConnId,
        room: &RoomId,
        token: Option<&str>,
        resume: Option<&ResumeToken>,
    ) -> Option<Result<RoomEntry, String>> {
        if self.ended_rooms.contains(room) {
            return Some(Err(format!(
                "the call of room `{}` has ended",
                room.as_str()
            )));
        }
        let call = self.calls.get(self.calls_by_room.get(room)?)?;
        let refused = || {
            Err(format!(
                "room `{}` is a private call room: only its two people may join, with their token",
                room.as_str()
            ))
        };
        let Some(me) = self.people_by_conn.get(&conn) else {
            return Some(refused());
        };
        let own_token = if *me == call.caller {
            &call.caller_token
        } else if *me == call.callee {
            &call.callee_token
        } else {
            return Some(refused());
        };
        let Some(person) = self.people.get(me) else {
            return Some(refused());
        };
        let token_ok = token == Some(own_token.as_str());
        if !token_ok && resume != Some(&person.resume) {
            return Some(refused());
        }
        Some(Ok(RoomEntry {
            id: me.clone(),
            name: person.name.clone(),
            resume: person.resume.clone(),
        }))
    }

    /// `peer` joined (or resumed in) `room`; once both sides did, the call has no deadline.
    pub fn entered_room(&mut self, room: &RoomId, peer: &PeerId) {
        let Some(call) = self.calls_by_room.get(room) else {
            return;
        };
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        let side = usize::from(*peer == c.callee);
        if let CallState::Accepted { deadline, in_room } = &mut c.state {
            in_room[side] = true;
            if in_room[0] && in_room[1] {
                *deadline = None;
            }
        }
    }

    /// `peer` is gone from `room` for good (it left, was removed, or stayed away past the
    /// grace): if `room` is a call's, the call ends.
    pub fn left_room(&mut self, room: &RoomId, _peer: &PeerId) {
        if let Some(call) = self.calls_by_room.get(room).cloned() {
            self.finish_accepted(&call, None);
        }
    }

    /// Whether `room` is the room of a call in progress.
    pub fn is_call_room(&self, room: &RoomId) -> bool {
        self.calls_by_room.contains_key(room)
    }

    /// A ring or an accepted call reached its deadline `at`.
    pub(super) fn call_deadline(&mut self, call: &CallId, at: Instant) {
        let Some(c) = self.calls.get(call) else {
            return;
        };
        match c.state {
            CallState::Ringing { deadline, .. } if deadline == at => {
                self.finish_ring(call, Outcome::Missed)
            }
            CallState::Accepted {
                deadline: Some(d), ..
            } if d == at => self.finish_accepted(call, None),
            _ => {}
        }
    }

    /// `id`'s connection ended or was replaced: a ring it makes is cancelled, one it takes is
    /// missed. An accepted call waits for the resume.
    pub(super) fn end_ringing(&mut self, id: &PeerId) {
        let Some(call) = self.people.get(id).and_then(|p| p.call.clone()) else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let CallState::Ringing { .. } = c.state {
            let outcome = if c.caller == *id {
                Outcome::Cancelled
            } else {
                Outcome::Missed
            };
            self.finish_ring(&call, outcome);
        }
    }

    /// `leaver` leaves its space for good while it has `call`.
    pub(super) fn end_call_of_leaver(&mut self, call: &CallId, leaver: &PeerId) {
        let ringing = self
            .calls
            .get(call)
            .is_some_and(|c| matches!(c.state, CallState::Ringing { .. }));
        if ringing {
            self.end_ringing(leaver);
        } else {
            self.finish_accepted(call, Some(leaver.clone()));
        }
    }

    /// On resume: `call-accepted` again for an accepted call, `ring` again for a call that
    /// started ringing for `id` while it was away.
    pub(super) fn announce_call(&mut self, id: &PeerId) {
        let Some(call) = self.people.get(id).and_then(|p| p.call.clone()) else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if matches!(c.state, CallState::Ringing { silent: false, .. }) && c.callee == *id {
            let ring = Ring {
                call,
                from: c.caller.clone(),
                name: self
                    .people
                    .get(&c.caller)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                audio_only: c.audio_only,
            };
            self.send_to_person(id, ServerMessage::Ring(Box::new(ring)));
            return;
        }
        self.announce_accepted(id);
    }

    /// The accepted call `id` is in, if any.
    pub(super) fn accepted_call_of(&self, id: &PeerId) -> Option<CallId> {
        let call = self.people.get(id)?.call.clone()?;
        let accepted = matches!(self.calls.get(&call)?.state, CallState::Accepted { .. });
        accepted.then_some(call)
    }

    /// `call-accepted` to `id` if it has an accepted call.
    pub(super) fn announce_accepted(&mut self, id: &PeerId) {
        let Some(call) = self.people.get(id).and_then(|p| p.call.clone()) else {
            return;
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if !matches!(c.state, CallState::Accepted { .. }) {
            return;
        }
        let (token, peer) = if *id == c.caller {
            (c.caller_token.clone(), c.callee.clone())
        } else {
            (c.callee_token.clone(), c.caller.clone())
        };
        let msg = ServerMessage::CallAccepted(Box::new(CallAccepted {
            call: call.clone(),
            room: c.room.clone(),
            token,
            peer,
            audio_only: c.audio_only,
        }));
        self.send_to_person(id, msg);
    }

    /// The person `to` for a call or block from `me`: `Some((blocks me, busy))`, or the error
    /// `unknown-person` to `conn`.
    fn target(&mut self, conn: ConnId, me: &PeerId, to: &PeerId) -> Option<(bool, bool)> {
        let space = self.people.get(me).map(|p| p.space.clone());
        let found = self
            .people
            .get(to)
            .filter(|t| Some(&t.space) == space.as_ref() && to != me)
            .map(|t| (t.blocked.contains(me), t.call.is_some()));
        if found.is_none() {
            let message = if to == me {
                "you cannot call or block yourself".to_owned()
            } else {
                format!("no other person `{to}` in your space")
            };
            self.error(conn, ErrorCode::UnknownPerson, message);
        }
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn ring(
        &mut self,
        conn: ConnId,
        me: PeerId,
        to: PeerId,
        audio_only: bool,
        silent: bool,
        fresh: FreshCall,
        now: Instant,
    ) {
        let deadline = now + self.config.ring_timeout;
        let id = fresh.id;
        let name = self.people.get(&me).map(|p| p.name.clone());
        self.calls.insert(
            id.clone(),
            Call {
                caller: me.clone(),
                callee: to.clone(),
                audio_only,
                room: fresh.room,
                caller_token: fresh.caller_token,
                callee_token: fresh.callee_token,
                state: CallState::Ringing { deadline, silent },
            },
        );
        self.timers
            .push(Reverse((deadline, Timer::Call(id.clone()))));
        if let Some(p) = self.people.get_mut(&me) {
            p.call = Some(id.clone());
        }
        self.send(conn, ServerMessage::Ringing { call: id.clone() });
        if silent {
            let msg = ServerMessage::PersonBusy { id: to, busy: true };
            self.send(conn, msg);
        } else {
            if let Some(p) = self.people.get_mut(&to) {
                p.call = Some(id.clone());
            }
            let ring = Ring {
                call: id,
                from: me.clone(),
                name: name.unwrap_or_default(),
                audio_only,
            };
            self.send_to_person(&to, ServerMessage::Ring(Box::new(ring)));
            self.broadcast_busy(&to);
        }
        self.broadcast_busy(&me);
    }

    /// Whether `call` rings and `conn`'s person is its `side` (a silent ring does not ring for
    /// the callee); otherwise the error `not-ringing` to `conn`.
    fn rings_for(&mut self, conn: ConnId, call: &CallId, side: Side) -> bool {
        let Some(me) = self.person_on(conn) else {
            return false;
        };
        let ok = self
            .calls
            .get(call)
            .is_some_and(|c| match (&c.state, side) {
                (CallState::Ringing { .. }, Side::Caller) => c.caller == me,
                (CallState::Ringing { silent, .. }, Side::Callee) => c.callee == me && !silent,
                _ => false,
            });
        if !ok {
            let message = format!("no call `{call}` is ringing for you");
            self.error(conn, ErrorCode::NotRinging, message);
        }
        ok
    }

    /// Ends a ringing call with `outcome`, told to both sides (to the caller alone when silent).
    fn finish_ring(&mut self, call: &CallId, outcome: Outcome) {
        let Some(c) = self.calls.remove(call) else {
            return;
        };
        let silent = matches!(c.state, CallState::Ringing { silent: true, .. });
        let msg = match outcome {
            Outcome::Declined => ServerMessage::CallDeclined { call: call.clone() },
            Outcome::Cancelled => ServerMessage::CallCancelled { call: call.clone() },
            _ => ServerMessage::CallMissed { call: call.clone() },
        };
        self.count(outcome);
        self.clear_call(&c.caller, call);
        self.send_to_person(&c.caller, msg.clone());
        if silent {
            if self.people.get(&c.callee).is_some_and(|p| p.call.is_none()) {
                let busy = ServerMessage::PersonBusy {
                    id: c.callee.clone(),
                    busy: false,
                };
                self.send_to_person(&c.caller, busy);
            }
        } else {
            self.clear_call(&c.callee, call);
            self.send_to_person(&c.callee, msg);
            self.broadcast_busy(&c.callee);
        }
        self.broadcast_busy(&c.caller);
    }

    /// Ends an accepted call: its room closes (`departing` leaves it first, so the other sees
    /// `peer-left` before `call-ended`), both sides get `call-ended` and are no longer busy.
    fn finish_accepted(&mut self, call: &CallId, departing: Option<PeerId>) {
        let Some(c) = self.calls.remove(call) else {
            return;
        };
        self.calls_by_room.remove(&c.room);
        self.remember_ended(c.room.clone());
        self.count(Outcome::Ended);
        self.outputs.push_back(Output::CloseRoom {
            room: c.room,
            departing,
        });
        for side in [&c.caller, &c.callee] {
            self.clear_call(side, call);
            self.send_to_person(side, ServerMessage::CallEnded { call: call.clone() });
        }
        self.broadcast_busy(&c.caller);
        self.broadcast_busy(&c.callee);
    }

    fn clear_call(&mut self, id: &PeerId, call: &CallId) {
        if let Some(p) = self.people.get_mut(id) {
            if p.call.as_ref() == Some(call) {
                p.call = None;
            }
        }
    }

    fn remember_ended(&mut self, room: RoomId) {
        if self.ended_rooms.insert(room.clone()) {
            self.ended_rooms_order.push_back(room);
        }
        while self.ended_rooms_order.len() > ENDED_ROOMS_KEPT {
            if let Some(old) = self.ended_rooms_order.pop_front() {
                self.ended_rooms.remove(&old);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}
