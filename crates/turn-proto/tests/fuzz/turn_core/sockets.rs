//! Fake relay sockets: ports are handed out from a worker's slice of the range, and every
//! misuse of the interface by the core is recorded for the invariants.

use std::net::{IpAddr, SocketAddr};

use signalbox_turn_proto::allocation::AllocId;
use signalbox_turn_proto::ports::PortRange;
use signalbox_turn_proto::server::RelaySockets;

/// A relay socket the world saw opened: the `alloc` of [`Op::FromPeer`] counts these.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relayed {
    pub(crate) worker: usize,
    pub(crate) id: AllocId,
    pub(crate) local: SocketAddr,
    pub(crate) public: SocketAddr,
}

/// Relay sockets of one worker: the lowest free port of its slice of the range.
pub(crate) struct Sockets {
    pub(crate) ports: PortRange,
    pub(crate) open: Vec<(AllocId, SocketAddr)>,
    pub(crate) opened: Vec<(AllocId, SocketAddr)>,
    /// The first misuse of the socket interface by the core (opened twice, closed unopened).
    pub(crate) misuse: Option<String>,
}

impl RelaySockets for Sockets {
    fn open(&mut self, id: AllocId, ip: IpAddr, even_port: bool) -> std::io::Result<SocketAddr> {
        if self.open.iter().any(|(i, _)| *i == id) {
            self.misuse
                .get_or_insert(format!("the relay socket of {id:?} was opened twice"));
        }
        let free = (self.ports.first..=self.ports.last).find(|p| {
            (!even_port || p % 2 == 0)
                && !self
                    .open
                    .iter()
                    .any(|(_, a)| a.port() == *p && a.is_ipv4() == ip.is_ipv4())
        });
        let Some(port) = free else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "no free relay port",
            ));
        };
        let local = SocketAddr::new(ip, port);
        self.open.push((id, local));
        self.opened.push((id, local));
        Ok(local)
    }

    fn close(&mut self, id: AllocId) {
        match self.open.iter().position(|(i, _)| *i == id) {
            Some(i) => {
                self.open.remove(i);
            }
            None => {
                self.misuse.get_or_insert(format!(
                    "the relay socket of {id:?} was closed but was not open"
                ));
            }
        }
    }
}
