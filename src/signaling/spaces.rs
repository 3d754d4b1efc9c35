//! Spaces and direct calls: who is online in a space, and calls from one person to another
//! that end, when accepted, in a private two-person room of the [room registry](super::rooms).
//!
//! A plain state machine in the same sans-IO style as the registry: inputs are method calls
//! with `now` passed in where time matters, the ids, resume tokens and call secrets it hands
//! out come in from the shell (the core has no RNG), outputs are [`Output`] values taken with
//! [`Spaces::poll_output`], and [`Spaces::poll_timeout`] says when [`Spaces::handle_timeout`]
//! wants to run. The hub owns it next to the registry and carries out the room outputs
//! ([`Output::OpenRoom`], [`Output::CloseRoom`]) on the registry.
//!
//! Presence rules:
//! - `hello` makes the connection a *person* of one space (one space per connection); it gets
//!   `people`, the others `person-joined`. A person is *connected* or *away* (its connection
//!   dropped less than `reconnect_grace` ago); an away person stays listed and keeps its call.
//! - A `hello` with the resume token of a person of the same space gets that person back (same
//!   id, no `person-left`/`person-joined`); an accepted call is announced again with
//!   `call-accepted`, so the client joins (resumes) its room as after the first accept, and a
//!   call that started ringing for it while it was away with `ring`.
//! - `leave-space`, an eviction, or the grace running out removes the person for good: the
//!   others get `person-left`.
//!
//! Call rules:
//! - A person has at most one call at a time, ringing or accepted; while it has one it is
//!   *busy*, and everyone else in the space sees `person-busy`. A `call` to a busy person is
//!   answered `call-busy`; a `call` from a busy person is refused (`already-joined`).
//! - A ring ends with `accept`, `decline`, the caller's `cancel`, `ring_timeout` (missed), or
//!   either side's connection ending (cancelled when the caller went, missed when the callee
//!   did): a ring does not wait for a resume. A person who is away can be rung (it still looks
//!   present); if it resumes before the ring ends, it gets the `ring` then.
//! - An accepted call has a private room: only its two people may join it, each with its own
//!   token, under its person id. Both must be in it within `join_timeout` of the accept. The
//!   call ends when either side leaves the room (`leave`, also before joining it), leaves the
//!   space, or is gone past the grace: the room is closed (the other side first gets
//!   `peer-left` when it was in the room) and both get `call-ended`.
//! - A person can block another for as long as the blocker is in the space. A blocked caller's
//!   ring is not shown to the callee: the caller sees it ring (and the callee busy, to it
//!   alone) until it is missed, as if nobody answered, so the block is not revealed.

mod calls;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::protocol::{
    CallId, CallToken, ErrorCode, PeerId, People, PersonInfo, ResumeToken, RoomId, ServerMessage,
    SpaceId,
};
use super::rooms::ConnId;
use calls::Call;

/// Rooms of ended calls remembered (to refuse late joins clearly); the oldest are forgotten.
const ENDED_ROOMS_KEPT: usize = 4096;

/// The limits of spaces and calls.
#[derive(Debug, Clone)]
pub struct SpacesConfig {
    /// Most people in one space (away ones included); more get `room-full`.
    pub max_people: usize,
    /// How long an away person keeps its place, id and accepted call.
    pub reconnect_grace: Duration,
    /// How long a call rings before it is missed.
    pub ring_timeout: Duration,
    /// Calls one person may make per minute on average, and as many at once.
    pub ring_rate: u32,
    /// How long both sides have to join the room of an accepted call.
    pub join_timeout: Duration,
    /// Most people one person may block at once.
    pub max_blocks: usize,
}

/// A `hello`, as the shell hands it to the core.
#[derive(Debug, Clone)]
pub struct HelloRequest {
    pub space: SpaceId,
    pub name: String,
    pub resume: Option<ResumeToken>,
    /// The access rule's answer: `Ok(Some(name))` fixes the display name, `Err(why)` refuses
    /// (`forbidden`). Not consulted for a resume.
    pub admission: Result<Option<String>, String>,
}

/// Id and resume token for a new person, made by the shell.
#[derive(Debug, Clone)]
pub struct FreshPerson {
    pub id: PeerId,
    pub resume: ResumeToken,
}

/// What a new call is known by, made by the shell: its id, its private room, and the tokens
/// of the caller and the callee for that room.
#[derive(Debug, Clone)]
pub struct FreshCall {
    pub id: CallId,
    pub room: RoomId,
    pub caller_token: CallToken,
    pub callee_token: CallToken,
}

/// Who may join a call's private room, as [`Spaces::admit_to_room`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEntry {
    /// The person's id: its peer id in the room.
    pub id: PeerId,
    pub name: String,
    /// The person's resume token: the room's resume token too.
    pub resume: ResumeToken,
}

/// What the core asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `msg` on connection `conn`.
    Send { conn: ConnId, msg: ServerMessage },
    /// Close `conn`: its person was resumed on another connection.
    Close { conn: ConnId },
    /// Create the private room of a call that was just accepted, empty and unlocked.
    OpenRoom { room: RoomId },
    /// The call of `room` ended: remove `departing` from it (the others get `peer-left`), then
    /// everyone else without a word, and delete the room.
    CloseRoom {
        room: RoomId,
        departing: Option<PeerId>,
    },
}

/// How many calls ended which way, for the metrics (the shell publishes the growth).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Indexed like [`crate::metrics::CALL_OUTCOMES`].
    pub by_outcome: [u64; 6],
}

/// Indexes into [`CallCounts::by_outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted = 0,
    Declined = 1,
    Busy = 2,
    Cancelled = 3,
    Missed = 4,
    Ended = 5,
}

#[derive(Debug)]
enum Presence {
    Connected(ConnId),
    Away { deadline: Instant },
}

#[derive(Debug)]
struct Person {
    space: SpaceId,
    name: String,
    resume: ResumeToken,
    presence: Presence,
    /// The call it makes or takes, ringing or accepted (a silent ring only on the caller).
    call: Option<CallId>,
    rings: RingBucket,
    blocked: HashSet<PeerId>,
    /// How its last call ended, if that happened while it was away: told when it resumes, so
    /// a client never has to guess whether the call it left behind is still on.
    ended_while_away: Option<ServerMessage>,
}

/// People in arrival order; a space is bounded by `max_people`.
#[derive(Debug, Default)]
struct Space {
    people: Vec<PeerId>,
}

/// What a timer entry is for; entries that no longer match are skipped when they come up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Away(PeerId),
    Call(CallId),
}

#[derive(Debug)]
pub struct Spaces {
    config: SpacesConfig,
    spaces: HashMap<SpaceId, Space>,
    people: HashMap<PeerId, Person>,
    people_by_conn: HashMap<ConnId, PeerId>,
    people_by_resume: HashMap<ResumeToken, PeerId>,
    calls: HashMap<CallId, Call>,
    calls_by_room: HashMap<RoomId, CallId>,
    ended_rooms: HashSet<RoomId>,
    ended_rooms_order: VecDeque<RoomId>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    outputs: VecDeque<Output>,
    counts: CallCounts,
}

impl Spaces {
    pub fn new(config: SpacesConfig) -> Spaces {
        Spaces {
            config,
            spaces: HashMap::new(),
            people: HashMap::new(),
            people_by_conn: HashMap::new(),
            people_by_resume: HashMap::new(),
            calls: HashMap::new(),
            calls_by_room: HashMap::new(),
            ended_rooms: HashSet::new(),
            ended_rooms_order: VecDeque::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            counts: CallCounts::default(),
        }
    }

    /// `{"type":"hello"}` on `conn`. `fresh` is used unless `resume` names a person of the space.
    pub fn hello(&mut self, conn: ConnId, req: HelloRequest, fresh: FreshPerson, now: Instant) {
        if self.people_by_conn.contains_key(&conn) {
            let message = "already in a space; send leave-space first";
            self.error(conn, ErrorCode::AlreadyJoined, message);
            return;
        }
        let resumable = req
            .resume
            .as_ref()
            .and_then(|t| self.people_by_resume.get(t).cloned())
            .filter(|id| self.people.get(id).is_some_and(|p| p.space == req.space));
        if let Some(id) = resumable {
            self.resume(conn, id);
            return;
        }
        let fixed_name = match req.admission {
            Ok(name) => name,
            Err(why) => {
                self.error(conn, ErrorCode::Forbidden, why);
                return;
            }
        };
        let count = self.spaces.get(&req.space).map_or(0, |s| s.people.len());
        if count >= self.config.max_people {
            let message = format!(
                "space `{}` is full ({} people)",
                req.space.as_str(),
                self.config.max_people
            );
            self.error(conn, ErrorCode::RoomFull, message);
            return;
        }
        let name = fixed_name.unwrap_or(req.name);
        self.enter(conn, req.space, name, fresh, now);
    }

    /// `{"type":"leave-space"}`: the person is gone for good; `conn` may say `hello` again.
    pub fn leave_space(&mut self, conn: ConnId) {
        match self.people_by_conn.get(&conn).cloned() {
            Some(id) => self.remove_person(&id),
            None => self.error(conn, ErrorCode::NotJoined, "not in a space"),
        }
    }

    /// `conn` ended without `leave-space`: its rings end, the person is away for the grace.
    pub fn disconnect(&mut self, conn: ConnId, now: Instant) {
        let Some(id) = self.people_by_conn.remove(&conn) else {
            return;
        };
        if self.config.reconnect_grace.is_zero() {
            self.end_ringing(&id);
            self.remove_person(&id);
            return;
        }
        let deadline = now + self.config.reconnect_grace;
        if let Some(p) = self.people.get_mut(&id) {
            p.presence = Presence::Away { deadline };
            self.timers
                .push(Reverse((deadline, Timer::Away(id.clone()))));
        }
        // Away first, so how the ring ends is kept for the resume, not sent to a closed socket.
        self.end_ringing(&id);
    }

    /// The server cut `conn` off (it stopped reading): its person leaves at once.
    pub fn evict(&mut self, conn: ConnId) {
        if let Some(id) = self.people_by_conn.get(&conn).cloned() {
            self.remove_person(&id);
        }
    }

    /// Whether a `hello` of `space` with `resume` would get an existing person back.
    pub fn is_resumable(&self, space: &SpaceId, resume: &ResumeToken) -> bool {
        self.people_by_resume
            .get(resume)
            .and_then(|id| self.people.get(id))
            .is_some_and(|p| &p.space == space)
    }

    /// Runs what is due at `now`: away people past the grace leave, rings are missed,
    /// accepted calls whose room was not joined in time end.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Away(id) => {
                    let due = self.people.get(&id).is_some_and(
                        |p| matches!(p.presence, Presence::Away { deadline } if deadline == at),
                    );
                    if due {
                        self.remove_person(&id);
                    }
                }
                Timer::Call(call) => self.call_deadline(&call, at),
            }
        }
    }

    /// When [`Spaces::handle_timeout`] should run next. May be early.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Calls by outcome since the start.
    pub fn counts(&self) -> CallCounts {
        self.counts
    }

    /// People in all spaces, away ones included.
    /// Whether `conn` is a person of a space.
    pub fn has_person(&self, conn: ConnId) -> bool {
        self.people_by_conn.contains_key(&conn)
    }

    /// Every space that has people.
    pub fn space_ids(&self) -> impl Iterator<Item = &SpaceId> {
        self.spaces.keys()
    }

    pub fn people_count(&self) -> usize {
        self.people.len()
    }

    /// A new person: `people` to it, `person-joined` to the others.
    fn enter(
        &mut self,
        conn: ConnId,
        space: SpaceId,
        name: String,
        fresh: FreshPerson,
        now: Instant,
    ) {
        let id = fresh.id;
        let me = PersonInfo {
            id: id.clone(),
            name: name.clone(),
            busy: false,
        };
        let others = self.person_infos(&space, &id);
        for other in &others {
            let msg = ServerMessage::PersonJoined {
                person: Box::new(me.clone()),
            };
            self.send_to_person(&other.id, msg);
        }
        self.spaces
            .entry(space.clone())
            .or_default()
            .people
            .push(id.clone());
        self.people_by_conn.insert(conn, id.clone());
        self.people_by_resume
            .insert(fresh.resume.clone(), id.clone());
        self.people.insert(
            id.clone(),
            Person {
                space: space.clone(),
                name,
                resume: fresh.resume.clone(),
                presence: Presence::Connected(conn),
                call: None,
                rings: RingBucket::new(self.config.ring_rate, now),
                blocked: HashSet::new(),
                ended_while_away: None,
            },
        );
        let people = People {
            space,
            you: id,
            people: others,
            resume: fresh.resume,
            call: None,
        };
        self.send(conn, ServerMessage::People(Box::new(people)));
    }

    /// `id` comes back on `conn`: `people` again, and its call announced again.
    fn resume(&mut self, conn: ConnId, id: PeerId) {
        let Some(person) = self.people.get_mut(&id) else {
            return;
        };
        let previous = std::mem::replace(&mut person.presence, Presence::Connected(conn));
        let (space, resume) = (person.space.clone(), person.resume.clone());
        let ended = person.ended_while_away.take();
        self.people_by_conn.insert(conn, id.clone());
        if let Presence::Connected(old) = previous {
            self.people_by_conn.remove(&old);
            self.outputs.push_back(Output::Close { conn: old });
            self.end_ringing(&id);
        }
        let people = People {
            people: self.person_infos(&space, &id),
            space,
            you: id.clone(),
            resume,
            call: self.accepted_call_of(&id),
        };
        self.send(conn, ServerMessage::People(Box::new(people)));
        if let Some(ended) = ended {
            self.send(conn, ended);
        }
        self.announce_call(&id);
    }

    /// Removes a person for good: its call ends, the others get `person-left`.
    fn remove_person(&mut self, id: &PeerId) {
        if let Some(call) = self.people.get(id).and_then(|p| p.call.clone()) {
            self.end_call_of_leaver(&call, id);
        }
        let Some(person) = self.people.remove(id) else {
            return;
        };
        self.people_by_resume.remove(&person.resume);
        if let Presence::Connected(conn) = person.presence {
            self.people_by_conn.remove(&conn);
        }
        let Some(space) = self.spaces.get_mut(&person.space) else {
            return;
        };
        space.people.retain(|p| p != id);
        if space.people.is_empty() {
            self.spaces.remove(&person.space);
            return;
        }
        let others = space.people.clone();
        for other in &others {
            self.send_to_person(other, ServerMessage::PersonLeft { id: id.clone() });
        }
    }

    /// Everyone in `space` but `except`, in arrival order.
    fn person_infos(&self, space: &SpaceId, except: &PeerId) -> Vec<PersonInfo> {
        let Some(s) = self.spaces.get(space) else {
            return Vec::new();
        };
        s.people
            .iter()
            .filter(|id| *id != except)
            .filter_map(|id| {
                self.people.get(id).map(|p| PersonInfo {
                    id: id.clone(),
                    name: p.name.clone(),
                    busy: p.call.is_some(),
                })
            })
            .collect()
    }

    /// `person-busy` about `id` to everyone else in its space.
    fn broadcast_busy(&mut self, id: &PeerId) {
        let Some(person) = self.people.get(id) else {
            return;
        };
        let busy = person.call.is_some();
        let Some(space) = self.spaces.get(&person.space) else {
            return;
        };
        let others: Vec<PeerId> = space.people.iter().filter(|p| *p != id).cloned().collect();
        for other in &others {
            let msg = ServerMessage::PersonBusy {
                id: id.clone(),
                busy,
            };
            self.send_to_person(other, msg);
        }
    }

    /// The person on `conn`, or the error `not-joined` to it.
    fn person_on(&mut self, conn: ConnId) -> Option<PeerId> {
        let id = self.people_by_conn.get(&conn).cloned();
        if id.is_none() {
            self.error(conn, ErrorCode::NotJoined, "say hello to a space first");
        }
        id
    }

    /// Space events go to connected people only: one that comes back gets `people` instead.
    /// Sends to a connected person; of what an away person misses, only how a call of its
    /// ended is kept (the last such message), for its resume.
    fn send_to_person(&mut self, to: &PeerId, msg: ServerMessage) {
        let Some(person) = self.people.get_mut(to) else {
            return;
        };
        match person.presence {
            Presence::Connected(conn) => self.send(conn, msg),
            Presence::Away { .. } if msg.ends_a_call() => person.ended_while_away = Some(msg),
            Presence::Away { .. } => {}
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMessage) {
        self.outputs.push_back(Output::Send { conn, msg });
    }

    fn error(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        self.send(conn, ServerMessage::error(code, message));
    }

    fn count(&mut self, outcome: Outcome) {
        self.counts.by_outcome[outcome as usize] += 1;
    }
}

/// A person's ring allowance: `rate` calls a minute on average and as many at once, on the
/// core's virtual time.
#[derive(Debug)]
struct RingBucket {
    tokens: f64,
    last: Instant,
}

impl RingBucket {
    fn new(rate: u32, now: Instant) -> RingBucket {
        RingBucket {
            tokens: f64::from(rate),
            last: now,
        }
    }

    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let rate = f64::from(rate);
        self.tokens = (self.tokens + elapsed * rate / 60.0).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
