//! The invariants, checked on every transmission and after every operation:
//! - **refused destination**: nothing leaves through a relay socket (`Action::Send` via
//!   `Via::Relay`) or is handed to another worker (`Action::Forward`) for a destination the peer
//!   policy refuses ([`refused_destination`]);
//! - **quota**: live allocations per user and in total never exceed `user_quota` and
//!   `total_quota`;
//! - **relay sockets**: every live allocation has exactly its relay socket open, the live-relay
//!   index marks exactly the open ones, and the core never closes a socket twice;
//! - **malformed**: answers parse as STUN, data to a client is well-formed ChannelData, byte
//!   ranges lie inside the buffer, transmissions go to known clients through the right socket;
//! - and no panic (the harness catches those).
//!
//! Each failure message starts with the invariant's name and a colon: the harness shrinks a
//! failing input while that name stays the same.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use signalbox_stun::MessageRef;
use signalbox_turn_proto::policy::{PeerPolicy, PeerRefusal, Verdict};
use signalbox_turn_proto::server::{Action, Payload, RelayPlan, Via, MAX_LEGACY_CHANNEL};

use super::tables::{addr, CLIENTS, STREAM_LISTENER, UDP_LISTENER};
use super::world::World;

/// Why the relay must not send to `to`, or `None` when it may.
///
/// The one place the fuzz target decides what a refused destination is, written against
/// [`PeerPolicy::check`] as it stands: an address is "ours" when it is the relayed transport
/// address of a live allocation ([`RelayPlan::ours`]), and the policy says the rest. When the
/// policy learns more (the host's own addresses, per-packet rules), only this function changes.
pub(crate) fn refused_destination(
    policy: &PeerPolicy,
    plan: &RelayPlan,
    to: SocketAddr,
) -> Option<PeerRefusal> {
    match policy.check(to, plan.ours(to).is_some()) {
        Verdict::Allowed => None,
        Verdict::Denied(why) => Some(why),
    }
}

impl World {
    /// The invariants on one transmission of worker `w`; `buf` is the buffer it names.
    pub(crate) fn check_action(&self, w: usize, action: Action, buf: &[u8]) -> Result<(), String> {
        match action {
            Action::Nothing => Ok(()),
            Action::Send {
                via: Via::Relay(id),
                to,
                payload,
            } => {
                let bytes = self.payload(w, payload, buf)?;
                if let Some(why) = refused_destination(&self.policy, &self.plan, to) {
                    return Err(format!(
                        "refused destination: worker {w} sends {} bytes through the relay \
                         socket of {id:?} to {to}, which the peer policy refuses: {}",
                        bytes.len(),
                        why.describe()
                    ));
                }
                if !self.sockets[w].open.iter().any(|(i, _)| *i == id) {
                    return Err(format!(
                        "relay sockets: worker {w} sends to {to} through the relay socket of \
                         {id:?}, which is not open"
                    ));
                }
                Ok(())
            }
            Action::Send { via, to, payload } => {
                let bytes = self.payload(w, payload, buf)?;
                let listener = match via {
                    Via::Listener(l) => (l == addr(UDP_LISTENER)).then_some(l),
                    Via::Stream(l) => (l == addr(STREAM_LISTENER)).then_some(l),
                    Via::Relay(_) => None,
                };
                if listener.is_none() || !CLIENTS.iter().any(|c| addr(c) == to) {
                    return Err(format!("malformed: a transmission {via:?} to {to}"));
                }
                match payload {
                    Payload::Scratch => MessageRef::parse(bytes)
                        .map(|_| ())
                        .map_err(|e| format!("malformed: an answer to {to} does not parse: {e}")),
                    Payload::Input { .. } => well_formed_channel_data(bytes)
                        .map_err(|e| format!("malformed: data to {to}: {e}")),
                }
            }
            Action::Forward {
                worker,
                from,
                to,
                start,
                end,
            } => {
                if let Some(why) = refused_destination(&self.policy, &self.plan, to) {
                    return Err(format!(
                        "refused destination: worker {w} forwards a packet from {from} to \
                         worker {worker} for {to}, which the peer policy refuses: {}",
                        why.describe()
                    ));
                }
                if worker == w || worker >= self.cores.len() {
                    return Err(format!(
                        "malformed: worker {w} forwards to worker {worker} of {}",
                        self.cores.len()
                    ));
                }
                buf.get(start..end)
                    .map(|_| ())
                    .ok_or_else(|| format!("malformed: forwarded range {start}..{end}"))
            }
        }
    }

    pub(crate) fn payload<'b>(
        &'b self,
        w: usize,
        payload: Payload,
        buf: &'b [u8],
    ) -> Result<&'b [u8], String> {
        match payload {
            Payload::Scratch => Ok(self.cores[w].scratch()),
            Payload::Input { start, end } => buf.get(start..end).ok_or_else(|| {
                format!(
                    "malformed: range {start}..{end} of a {}-byte buffer",
                    buf.len()
                )
            }),
        }
    }

    /// The invariants on the state after an operation.
    pub(crate) fn check_state(&self) -> Result<(), String> {
        let mut per_user: BTreeMap<&str, u32> = BTreeMap::new();
        let mut total = 0u32;
        for (w, (core, sockets)) in self.cores.iter().zip(&self.sockets).enumerate() {
            if let Some(m) = &sockets.misuse {
                return Err(format!("relay sockets: worker {w}: {m}"));
            }
            for (id, local) in &sockets.open {
                let Some(a) = core.table().get(*id) else {
                    return Err(format!(
                        "relay sockets: worker {w} keeps the relay socket {local} of {id:?} \
                         open after its allocation ended"
                    ));
                };
                if a.relay_local != Some(*local) {
                    return Err(format!(
                        "relay sockets: {id:?} is bound to {local} but records {:?}",
                        a.relay_local
                    ));
                }
                if !self.plan.live.contains(*local) {
                    return Err(format!(
                        "relay sockets: {local} is open but not in the live-relay index"
                    ));
                }
                *per_user.entry(&*a.user).or_default() += 1;
                total += 1;
            }
            if core.table().len() != sockets.open.len() {
                return Err(format!(
                    "relay sockets: worker {w} has {} allocations and {} relay sockets",
                    core.table().len(),
                    sockets.open.len()
                ));
            }
        }
        for r in &self.history {
            let open = self
                .sockets
                .iter()
                .any(|s| s.open.iter().any(|(_, l)| *l == r.local));
            if !open && self.plan.live.contains(r.local) {
                return Err(format!(
                    "relay sockets: {} was closed but is still in the live-relay index",
                    r.local
                ));
            }
        }
        if total > self.config.total_quota() {
            return Err(format!(
                "quota: {total} live allocations, total_quota is {}",
                self.config.total_quota()
            ));
        }
        let user_quota = self.config.user_quota();
        if let Some((user, n)) = per_user.iter().find(|(_, n)| **n > user_quota) {
            return Err(format!(
                "quota: user {user} holds {n} live allocations, user_quota is {user_quota}"
            ));
        }
        Ok(())
    }
}

/// ChannelData as the core writes it towards a client: a channel number this server accepts
/// and a length field equal to the data that follows.
fn well_formed_channel_data(bytes: &[u8]) -> Result<(), String> {
    let [c0, c1, l0, l1, data @ ..] = bytes else {
        return Err(format!("{} bytes are no ChannelData", bytes.len()));
    };
    let number = u16::from_be_bytes([*c0, *c1]);
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    if !(0x4000..=MAX_LEGACY_CHANNEL).contains(&number) || len != data.len() {
        return Err(format!(
            "ChannelData 0x{number:04x} declares {len} bytes and carries {}",
            data.len()
        ));
    }
    Ok(())
}
