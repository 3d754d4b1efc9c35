//! The task that keeps joined peers' TURN credentials fresh, and revokes the credentials and
//! ends the allocations of peers that are gone. A thin shell: the decisions are [`RenewalSchedule`]'s; this task only feeds
//! it the signaling hub's [`PeerEvent`]s and the clock, sends what falls due through the hub,
//! and passes removals to the TURN server. In a cluster it also tells the other nodes what it
//! issued and revoked ([`crate::cluster::turn`]), so the credentials work on every node while
//! the peer is live and on none once it is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::debug;

use super::renewal::RenewalSchedule;
use super::{unix_now, Issuer, UserPart};
use crate::cluster::turn::{Note, Publisher};
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
    cluster: Option<Publisher>,
) {
    let mut service = Service {
        schedule: RenewalSchedule::new(ttl),
        issuer,
        ttl,
        close_user,
        cluster,
    };
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let wake = service
            .schedule
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => service.on_event(event),
                None => break,
            },
            () = tokio::time::sleep_until(wake.into()) => {
                if !service.renew_due(&hub, Instant::now()).await {
                    break;
                }
            }
        }
    }
    debug!("credential service stopped");
}

struct Service {
    schedule: RenewalSchedule<(RoomId, PeerId)>,
    issuer: Arc<Issuer>,
    ttl: Duration,
    close_user: Option<CloseUserFn>,
    /// The other nodes of a cluster.
    cluster: Option<Publisher>,
}

impl Service {
    fn on_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Issued { room, peer } => {
                self.share_issued(&room, &peer);
                self.schedule.issued((room, peer), Instant::now());
            }
            PeerEvent::Removed { room, peer } => {
                self.schedule.forget(&(room.clone(), peer.clone()));
                let separator = self.issuer.minter.separator();
                let user = UserPart::for_peer(room.as_str(), peer.as_str(), separator);
                self.issuer.forget_peer(&user);
                if let Some(cluster) = &self.cluster {
                    cluster.publish(Note::Revoked {
                        user: user.as_str().to_owned(),
                    });
                }
                if let Some(close) = &self.close_user {
                    debug!(
                        user = user.as_str(),
                        "peer gone: closing its TURN allocations"
                    );
                    close(&user);
                }
            }
        }
    }

    /// Sends fresh credentials to every peer whose renewal is due; false when the hub stopped.
    async fn renew_due(&mut self, hub: &HubHandle, now: Instant) -> bool {
        for (room, peer) in self.schedule.handle_timeout(now) {
            let list = self.issuer.ice_servers_for_peer(
                room.as_str(),
                peer.as_str(),
                unix_now(),
                self.ttl,
            );
            if !hub.push_ice_servers(peer.clone(), list).await {
                return false;
            }
            self.share_issued(&room, &peer);
            self.schedule.issued((room, peer), now);
        }
        true
    }

    /// Tells the other nodes that `peer` holds credentials valid for `ttl` from now (as minted:
    /// the expiry is at least the credentials' own, which authentication checks anyway).
    fn share_issued(&self, room: &RoomId, peer: &PeerId) {
        if let Some(cluster) = &self.cluster {
            let user =
                UserPart::for_peer(room.as_str(), peer.as_str(), self.issuer.minter.separator());
            cluster.publish(Note::Issued {
                user: user.as_str().to_owned(),
                expiry: unix_now().saturating_add(self.ttl.as_secs().max(1)),
            });
        }
    }
}
