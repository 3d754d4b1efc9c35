//! The task that keeps joined peers' TURN credentials fresh and ends the allocations of peers
//! that are gone. A thin shell: the decisions are [`RenewalSchedule`]'s; this task only feeds
//! it the signaling hub's [`PeerEvent`]s and the clock, sends what falls due through the hub,
//! and passes removals to the TURN server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::debug;

use super::renewal::RenewalSchedule;
use super::{unix_now, Issuer, UserPart};
use crate::signaling::{HubHandle, IceServersFn, PeerEvent, PeerId, RoomId};

/// Closes every TURN allocation whose username has this user part (`ROOM<sep>PEER`).
pub type CloseUserFn = Arc<dyn Fn(&UserPart) + Send + Sync>;

/// Events waiting for the service; the hub drops (and logs) events beyond this.
pub const EVENT_QUEUE: usize = 65_536;

/// The `iceServers` of `joined`: fresh credentials for that peer, valid for `ttl`.
pub fn ice_servers_fn(issuer: Arc<Issuer>, ttl: Duration) -> IceServersFn {
    Arc::new(move |room: &RoomId, peer: &PeerId| {
        issuer.ice_servers_for_peer(room.as_str(), peer.as_str(), unix_now(), ttl)
    })
}

/// Runs until the hub drops its end of `events` (the server is stopping).
pub async fn run(
    issuer: Arc<Issuer>,
    ttl: Duration,
    hub: HubHandle,
    mut events: mpsc::Receiver<PeerEvent>,
    close_user: Option<CloseUserFn>,
) {
    let mut schedule: RenewalSchedule<(RoomId, PeerId)> = RenewalSchedule::new(ttl);
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let wake = schedule
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(PeerEvent::Issued { room, peer }) => {
                    schedule.issued((room, peer), Instant::now());
                }
                Some(PeerEvent::Removed { room, peer }) => {
                    schedule.forget(&(room.clone(), peer.clone()));
                    if let Some(close) = &close_user {
                        let user = UserPart::for_peer(room.as_str(), peer.as_str(), issuer.minter.separator());
                        debug!(user = user.as_str(), "peer gone: closing its TURN allocations");
                        close(&user);
                    }
                }
            },
            () = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                for (room, peer) in schedule.handle_timeout(now) {
                    let list = issuer.ice_servers_for_peer(room.as_str(), peer.as_str(), unix_now(), ttl);
                    if !hub.push_ice_servers(peer.clone(), list).await {
                        return;
                    }
                    schedule.issued((room, peer), now);
                }
            }
        }
    }
    debug!("credential service stopped");
}
