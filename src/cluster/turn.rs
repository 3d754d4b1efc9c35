//! TURN credentials of room peers across nodes.
//!
//! Every node shares `[turn] secrets`, so any node can verify any node's credentials. A room
//! peer's credentials (user part `~ROOM<sep>PEER`) open allocations only while the TURN server's
//! [`LivePeers`] holds the peer, which the node the peer is connected to keeps current. So that
//! they work on every node while the peer is live, and on none once it is gone, each node
//! publishes what it hands out and what it takes back on one Redis channel, [`CHANNEL`], and
//! every other node applies it to its own set: an issue is admitted with its expiry, a
//! revocation (the peer left, was removed, or stayed away past the grace) removes the peer and
//! closes its allocations on that node too.
//!
//! One publisher task sends the notes in the order they were made, and Redis delivers one
//! publisher's messages in order, so a revocation never overtakes the issue it revokes. Pub/sub
//! keeps nothing for a node that is not listening: a node that was cut off from Redis misses
//! the notes of that time. A missed issue means the peer's credentials work on its own node
//! only (the one its `iceServers` name); a missed revocation means they still open allocations
//! on that node until they expire (`[turn] credential_ttl`), as any credential would without
//! the live set. Remote peers may fill at most half of the set, so they can never crowd out the
//! peers of the node itself.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use signalbox_turn_proto::auth::LivePeers;

/// The channel every node publishes its credential notes on, and listens to.
pub const CHANNEL: &str = "signalbox:turn";
/// Notes waiting for the publisher; more are dropped (counted) rather than make signaling wait.
pub const PUBLISH_QUEUE: usize = 16_384;

/// What one node tells the others about a room peer's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "kebab-case")]
pub enum Note {
    /// Credentials for `user` valid through `expiry` (unix seconds) were handed out.
    Issued { user: String, expiry: u64 },
    /// `user` is gone: its credentials open nothing from now on.
    Revoked { user: String },
}

/// A [`Note`] with the process that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's instance id ([`super::registry::NodeInfo::instance`]).
    pub from: String,
    #[serde(flatten)]
    pub note: Note,
}

/// What a node does with a message from [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Admit `user` through `expiry`, if the set has room for another node's peer.
    Admit { user: String, expiry: u64 },
    /// Remove `user` and close its allocations here.
    Revoke { user: String },
}

/// Decides what a message means for the node `own_instance`: nothing for its own notes (it
/// applied them when it made them) and for anything that is not a note about a room peer.
pub fn decide(payload: &[u8], own_instance: &str) -> Result<Option<Action>, String> {
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| format!("not a credential note: {e}"))?;
    if envelope.from == own_instance {
        return Ok(None);
    }
    let user = match &envelope.note {
        Note::Issued { user, .. } | Note::Revoked { user } => user,
    };
    if !user.starts_with(signalbox_turn_proto::auth::PEER_MARKER) {
        return Err(format!("`{user}` is not the user part of a room peer"));
    }
    Ok(Some(match envelope.note {
        Note::Issued { user, expiry } => Action::Admit { user, expiry },
        Note::Revoked { user } => Action::Revoke { user },
    }))
}

/// What the TURN server of this node lends the cluster.
#[derive(Clone)]
pub struct TurnHooks {
    pub live_peers: Arc<LivePeers>,
    /// Closes every allocation whose username has this user part.
    pub close_user: Arc<dyn Fn(&str) + Send + Sync>,
}

/// The sending end: cheap, never waits.
#[derive(Clone)]
pub struct Publisher {
    instance: String,
    tx: mpsc::Sender<String>,
}

impl Publisher {
    /// Queues `note` for the other nodes; dropped (and counted) when the queue is full.
    pub fn publish(&self, note: Note) {
        let envelope = Envelope {
            from: self.instance.clone(),
            note,
        };
        let text = serde_json::to_string(&envelope).expect("a note always serializes");
        if self.tx.try_send(text).is_err() {
            crate::metrics::METRICS.cluster_notes_dropped.inc();
        }
    }
}

/// Starts the publisher and the listener; both end on `shutdown`.
pub fn start(
    client: redis::Client,
    redis: redis::aio::ConnectionManager,
    instance: String,
    turn: TurnHooks,
    shutdown: watch::Receiver<bool>,
) -> Publisher {
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    tokio::spawn(publish_in_order(redis, rx, shutdown.clone()));
    tokio::spawn(listen(client, instance.clone(), turn, shutdown));
    Publisher { instance, tx }
}

async fn publish_in_order(
    mut redis: redis::aio::ConnectionManager,
    mut rx: mpsc::Receiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let text = tokio::select! {
            text = rx.recv() => match text {
                Some(text) => text,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let sent: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(&text)
            .query_async(&mut redis)
            .await;
        match sent {
            Ok(_) => crate::metrics::METRICS.cluster_notes.at(0).inc(),
            Err(e) => {
                crate::metrics::METRICS.cluster_notes_dropped.inc();
                debug!("cluster: credential note not published: {e}");
            }
        }
    }
}

/// Listens on [`CHANNEL`] and applies what the other nodes say.
async fn listen(
    client: redis::Client,
    instance: String,
    turn: TurnHooks,
    shutdown: watch::Receiver<bool>,
) {
    let what = "credential notes";
    super::listen(client, CHANNEL.to_owned(), what, shutdown, move |payload| {
        apply(payload, &instance, &turn);
        true
    })
    .await;
}

fn apply(payload: &[u8], instance: &str, turn: &TurnHooks) {
    use crate::metrics::METRICS;
    match decide(payload, instance) {
        Ok(None) => {}
        Ok(Some(Action::Admit { user, expiry })) => {
            METRICS.cluster_notes.at(1).inc();
            let live = &turn.live_peers;
            if live.len() < live.capacity() / 2 {
                live.insert(&user, expiry, crate::credentials::unix_now());
            } else {
                METRICS.cluster_notes_dropped.inc();
            }
        }
        Ok(Some(Action::Revoke { user })) => {
            METRICS.cluster_notes.at(1).inc();
            turn.live_peers.remove(&user);
            (turn.close_user)(&user);
        }
        Err(e) => {
            METRICS.cluster_notes_dropped.inc();
            debug!("cluster: ignored a message on {CHANNEL}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, note: Note) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            from: from.into(),
            note,
        })
        .expect("serializes")
    }

    #[test]
    fn another_nodes_issue_and_revocation_are_applied() {
        let issued = message(
            "other",
            Note::Issued {
                user: "~room:peer".into(),
                expiry: 1_700_000_600,
            },
        );
        assert_eq!(
            decide(&issued, "mine"),
            Ok(Some(Action::Admit {
                user: "~room:peer".into(),
                expiry: 1_700_000_600
            }))
        );
        let revoked = message(
            "other",
            Note::Revoked {
                user: "~room:peer".into(),
            },
        );
        assert_eq!(
            decide(&revoked, "mine"),
            Ok(Some(Action::Revoke {
                user: "~room:peer".into()
            }))
        );
    }

    #[test]
    fn a_nodes_own_notes_come_back_and_are_ignored() {
        let own = message(
            "mine",
            Note::Revoked {
                user: "~room:peer".into(),
            },
        );
        assert_eq!(decide(&own, "mine"), Ok(None));
    }

    #[test]
    fn only_room_peers_can_be_admitted_or_revoked_this_way() {
        let api_user = message(
            "other",
            Note::Issued {
                user: "synapse".into(),
                expiry: 1,
            },
        );
        assert!(decide(&api_user, "mine").is_err());
        assert!(decide(b"{\"note\":\"launch\"}", "mine").is_err());
        assert!(decide(b"\xff", "mine").is_err());
    }

    #[test]
    fn the_wire_form_is_one_flat_object() {
        let text = String::from_utf8(message(
            "a1",
            Note::Issued {
                user: "~r:p".into(),
                expiry: 5,
            },
        ))
        .expect("utf-8");
        assert_eq!(
            text,
            r#"{"from":"a1","note":"issued","user":"~r:p","expiry":5}"#
        );
    }
}
