//! What a core counts, as plain fields it owns.
//!
//! The core never touches a global: it adds to these fields (no atomics, no lock on the data
//! path), and the IO layer reads [`crate::server::Core::counters`] after each pass and publishes
//! what grew. Each labelled family is a [`Tally`] indexed by a label enum, so a metric's label
//! values come from the enum ([`Label::ALL`], [`Label::name`]) and no caller picks an index.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Sub;

use crate::allocation::Transport;

/// A label value of one counter family: a small closed set, in a fixed order.
pub trait Label: Copy + 'static {
    /// Every value, in the order metrics list them.
    const ALL: &'static [Self];
    /// Position in [`Label::ALL`].
    fn index(self) -> usize;
    /// The label value as exposed to monitoring.
    fn name(self) -> &'static str;
}

/// Most values a label may have.
const MAX_LABELS: usize = 8;

/// One count per value of the label `L`.
pub struct Tally<L> {
    counts: [u64; MAX_LABELS],
    label: PhantomData<L>,
}

impl<L: Label> Tally<L> {
    /// Adds `n` to the count of `label`.
    pub fn add(&mut self, label: L, n: u64) {
        self.counts[label.index()] = self.counts[label.index()].wrapping_add(n);
    }

    /// Adds one to the count of `label`.
    pub fn inc(&mut self, label: L) {
        self.add(label, 1);
    }

    /// Takes one from the count of `label` (live figures), never below zero.
    pub fn dec(&mut self, label: L) {
        self.counts[label.index()] = self.counts[label.index()].saturating_sub(1);
    }

    /// The count of `label`.
    pub fn get(&self, label: L) -> u64 {
        self.counts[label.index()]
    }

    /// Every label with its count, in [`Label::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL.iter().map(|&l| (l, self.get(l)))
    }
}

impl<L> Default for Tally<L> {
    fn default() -> Self {
        Tally {
            counts: [0; MAX_LABELS],
            label: PhantomData,
        }
    }
}

impl<L> Clone for Tally<L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L> Copy for Tally<L> {}

impl<L> PartialEq for Tally<L> {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}

impl<L> Eq for Tally<L> {}

impl<L: Label + fmt::Debug> fmt::Debug for Tally<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<L> Sub for Tally<L> {
    type Output = Tally<L>;

    /// Growth since `earlier` (wrapping, like the counts themselves).
    fn sub(self, earlier: Self) -> Tally<L> {
        let mut counts = [0; MAX_LABELS];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = self.counts[i].wrapping_sub(earlier.counts[i]);
        }
        Tally {
            counts,
            label: PhantomData,
        }
    }
}

/// Defines a label enum with its metric names.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn index(self) -> usize {
                self as usize
            }

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

labels! {
    /// Which way relayed data went.
    RelayPath {
        /// From a client to a peer through the kernel.
        ClientToPeer = "client_to_peer",
        /// From a peer to a client.
        PeerToClient = "peer_to_client",
        /// From one of our allocations to another, without the kernel.
        InMemory = "in_memory",
    }
}

labels! {
    /// Why a request failed authentication.
    AuthFailure {
        /// No integrity: the first request of every client (answered with a challenge).
        Missing = "missing",
        /// Wrong realm, username or integrity.
        BadCredentials = "bad_credentials",
        /// The REST credential's expiry has passed.
        Expired = "expired",
        /// The nonce is not ours or too old.
        StaleNonce = "stale_nonce",
        /// USERNAME, REALM or NONCE missing next to an integrity attribute.
        BadRequest = "bad_request",
        /// Credentials minted for a room peer that has left (or was removed).
        DepartedPeer = "departed_peer",
    }
}

labels! {
    /// Why a peer address was refused (403, or 443 for the family).
    PeerRefusal {
        /// A special-purpose range (loopback, private, link-local, documentation …).
        SpecialRange = "special_range",
        /// `[turn] denied_peer_ranges`.
        DeniedRange = "denied_peer_ranges",
        /// This host itself: one of its addresses (except a live relayed address) or one of
        /// the server's listener ports. The label keeps its first name for existing dashboards.
        OwnListener = "own_listener",
        /// The peer's family differs from the relayed address's.
        FamilyMismatch = "family_mismatch",
    }
}

labels! {
    /// Which quota refused an allocation (486).
    QuotaScope {
        /// `[turn] user_quota`.
        User = "user",
        /// `[turn] total_quota`.
        Total = "total",
        /// `[turn] max_allocations_per_ip`.
        Address = "address",
    }
}

labels! {
    /// Transport label of the per-transport allocation figures.
    TransportLabel {
        /// UDP.
        Udp = "udp",
        /// TCP.
        Tcp = "tcp",
        /// TLS.
        Tls = "tls",
    }
}

impl From<Transport> for TransportLabel {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Udp => TransportLabel::Udp,
            Transport::Tcp => TransportLabel::Tcp,
            Transport::Tls => TransportLabel::Tls,
        }
    }
}

/// Everything one core counted since it started. Totals only grow; the `*_active` figures are
/// the core's live state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Binding requests answered.
    pub stun_bindings: u64,
    /// Relayed packets by path.
    pub relayed_packets: Tally<RelayPath>,
    /// Relayed payload bytes by path.
    pub relayed_bytes: Tally<RelayPath>,
    /// Failed authentications by reason.
    pub auth_failures: Tally<AuthFailure>,
    /// Refused peers by reason.
    pub peer_refusals: Tally<PeerRefusal>,
    /// Allocations refused by a quota.
    pub quota_refusals: Tally<QuotaScope>,
    /// Unauthenticated requests left unanswered by the rate limiter.
    pub rate_limited: u64,
    /// Allocations created, by transport.
    pub allocations_created: Tally<TransportLabel>,
    /// Allocations that expired (not deleted by their client), by transport.
    pub allocations_expired: Tally<TransportLabel>,
    /// Live allocations, by transport.
    pub allocations_active: Tally<TransportLabel>,
    /// Live permissions.
    pub permissions_active: u64,
    /// Live channel bindings (including those in their quarantine).
    pub channels_active: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_per_label_and_subtracts_to_the_growth() {
        let mut t = Tally::<RelayPath>::default();
        t.inc(RelayPath::InMemory);
        let before = t;
        t.add(RelayPath::InMemory, 4);
        t.inc(RelayPath::ClientToPeer);
        let growth = t - before;
        assert_eq!(growth.get(RelayPath::InMemory), 4);
        assert_eq!(growth.get(RelayPath::ClientToPeer), 1);
        assert_eq!(growth.get(RelayPath::PeerToClient), 0);
    }

    #[test]
    fn label_names_follow_the_declared_order() {
        let names: Vec<_> = AuthFailure::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(
            names,
            [
                "missing",
                "bad_credentials",
                "expired",
                "stale_nonce",
                "bad_request",
                "departed_peer"
            ]
        );
        assert!(AuthFailure::ALL
            .iter()
            .enumerate()
            .all(|(i, l)| l.index() == i));
    }
}
