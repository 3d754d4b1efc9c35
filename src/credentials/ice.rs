//! The `iceServers` list a browser passes to `new RTCPeerConnection({iceServers})`.
//!
//! Built from what actually listens (bound ports, so an ephemeral test port or a UDP listener on
//! 443 shows up as it is) and `[server] public_host`. Entries come in the order that gets a call
//! through fastest: `stun:` and `turn:` over UDP first, then TURN over TCP, then plain TCP on the
//! HTTPS port, then TLS on its own port, then TLS on the HTTPS port (one-port mode).
//!
//! The HTTPS port (one-port mode) takes TURN over TCP as well as over TLS, and both are listed:
//! Firefox opens no connection at all for a `turns:` URI whose host is an IP address, so where
//! `public_host` is one, `turn:HOST:<https port>?transport=tcp` is its only way through a network
//! that lets nothing but TCP to that port out. Listeners of the stream transports are
//! added by whoever starts them, through the same [`IceEndpoints::add_turn`] call, and land in
//! their place in that order whatever order they are added in.

use serde::Serialize;

use super::TurnCredential;

/// How a browser reaches the TURN server; the declaration order is the order of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TurnTransport {
    /// `turn:HOST:PORT?transport=udp`
    Udp,
    /// `turn:HOST:PORT?transport=tcp`
    Tcp,
    /// `turn:HOST:PORT?transport=tcp` on the HTTPS port (one-port mode, no TLS).
    TcpOnHttpsPort,
    /// `turns:HOST:PORT?transport=tcp` on the dedicated TLS port.
    Tls,
    /// `turns:HOST:PORT?transport=tcp` on the HTTPS port (one-port mode).
    TlsOnHttpsPort,
}

impl TurnTransport {
    fn uri(self, host: &str, port: u16) -> String {
        match self {
            TurnTransport::Udp => format!("turn:{host}:{port}?transport=udp"),
            TurnTransport::Tcp | TurnTransport::TcpOnHttpsPort => {
                format!("turn:{host}:{port}?transport=tcp")
            }
            TurnTransport::Tls | TurnTransport::TlsOnHttpsPort => {
                format!("turns:{host}:{port}?transport=tcp")
            }
        }
    }
}

/// Where this server's STUN and TURN can be reached from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceEndpoints {
    /// `public_host`, bracketed when it is an IPv6 literal.
    host: String,
    turn: Vec<(TurnTransport, u16)>,
}

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceEndpoints {
    pub fn new(public_host: &str) -> IceEndpoints {
        let host = if public_host.contains(':') && !public_host.starts_with('[') {
            format!("[{public_host}]")
        } else {
            public_host.to_owned()
        };
        IceEndpoints {
            host,
            turn: Vec::new(),
        }
    }

    /// Records a listener. Adding the same transport and port twice (an IPv4 and an IPv6
    /// socket on one port) gives one entry. The HTTPS port ([`TurnTransport::TlsOnHttpsPort`])
    /// also gets its plain-TCP entry, which the one-port listener serves too.
    pub fn add_turn(&mut self, transport: TurnTransport, port: u16) {
        if transport == TurnTransport::TlsOnHttpsPort {
            self.add_one(TurnTransport::TcpOnHttpsPort, port);
        }
        self.add_one(transport, port);
    }

    fn add_one(&mut self, transport: TurnTransport, port: u16) {
        if !self.turn.contains(&(transport, port)) {
            self.turn.push((transport, port));
            // Stable: listeners of one transport keep the order they were configured in.
            self.turn.sort_by_key(|(t, _)| *t);
        }
    }

    /// Each TURN listener browsers can use, with its transport and its URI, in list order.
    pub fn turn_entries(&self) -> Vec<(TurnTransport, String)> {
        self.turn
            .iter()
            .map(|(t, port)| (*t, t.uri(&self.host, *port)))
            .collect()
    }

    pub fn has_turn(&self) -> bool {
        !self.turn.is_empty()
    }

    /// `stun:HOST:PORT` on the first UDP listener (every TURN listener also answers STUN, so
    /// one entry is enough for the browser's server-reflexive candidate).
    pub fn stun_uris(&self) -> Vec<String> {
        self.turn
            .iter()
            .find(|(t, _)| *t == TurnTransport::Udp)
            .map(|(_, port)| format!("stun:{}:{port}", self.host))
            .into_iter()
            .collect()
    }

    /// Every `turn:`/`turns:` URI, in list order (the `uris` of the TURN REST API answer).
    pub fn turn_uris(&self) -> Vec<String> {
        self.turn
            .iter()
            .map(|(t, port)| t.uri(&self.host, *port))
            .collect()
    }

    /// The list for `RTCConfiguration.iceServers`: the STUN entry, then one TURN entry with all
    /// TURN URIs and `credential` (omitted when there is no credential to give).
    pub fn ice_servers(&self, credential: Option<&TurnCredential>) -> Vec<IceServer> {
        let mut list = Vec::with_capacity(2);
        let stun = self.stun_uris();
        if !stun.is_empty() {
            list.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        if let (Some(c), true) = (credential, self.has_turn()) {
            list.push(IceServer {
                urls: self.turn_uris(),
                username: Some(c.username.clone()),
                credential: Some(c.password.clone()),
            });
        }
        list
    }

    /// [`Self::ice_servers`] as a JSON value, the form the signaling messages carry.
    pub fn ice_servers_json(&self, credential: Option<&TurnCredential>) -> serde_json::Value {
        serde_json::to_value(self.ice_servers(credential)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn credential() -> TurnCredential {
        TurnCredential {
            username: "100:r:p".into(),
            password: "pw".into(),
            expiry: 100,
            ttl: 60,
        }
    }

    #[test]
    fn a_udp_listener_gives_a_stun_and_a_turn_entry_with_the_credential() {
        let mut e = IceEndpoints::new("calls.example.org");
        e.add_turn(TurnTransport::Udp, 3478);
        assert_eq!(
            e.ice_servers_json(Some(&credential())),
            json!([
                {"urls": ["stun:calls.example.org:3478"]},
                {"urls": ["turn:calls.example.org:3478?transport=udp"],
                 "username": "100:r:p", "credential": "pw"}
            ])
        );
    }

    #[test]
    fn transports_are_listed_fastest_first_whatever_order_they_start_in() {
        let mut e = IceEndpoints::new("h");
        e.add_turn(TurnTransport::TlsOnHttpsPort, 443);
        e.add_turn(TurnTransport::Tls, 5349);
        e.add_turn(TurnTransport::Tcp, 3478);
        e.add_turn(TurnTransport::Udp, 3478);
        e.add_turn(TurnTransport::Udp, 443);
        assert_eq!(
            e.turn_uris(),
            [
                "turn:h:3478?transport=udp",
                "turn:h:443?transport=udp",
                "turn:h:3478?transport=tcp",
                "turn:h:443?transport=tcp",
                "turns:h:5349?transport=tcp",
                "turns:h:443?transport=tcp",
            ]
        );
        assert_eq!(e.stun_uris(), ["stun:h:3478"]);
    }

    #[test]
    fn the_https_port_is_listed_over_plain_tcp_as_well_as_over_tls() {
        let mut e = IceEndpoints::new("192.0.2.7");
        e.add_turn(TurnTransport::TlsOnHttpsPort, 443);
        assert_eq!(
            e.turn_entries(),
            [
                (
                    TurnTransport::TcpOnHttpsPort,
                    "turn:192.0.2.7:443?transport=tcp".to_owned()
                ),
                (
                    TurnTransport::TlsOnHttpsPort,
                    "turns:192.0.2.7:443?transport=tcp".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn an_ipv4_and_an_ipv6_socket_on_one_port_give_one_entry() {
        let mut e = IceEndpoints::new("h");
        e.add_turn(TurnTransport::Udp, 3478);
        e.add_turn(TurnTransport::Udp, 3478);
        assert_eq!(e.turn_uris().len(), 1);
    }

    #[test]
    fn an_ipv6_public_host_is_bracketed() {
        let mut e = IceEndpoints::new("2001:db8::1");
        e.add_turn(TurnTransport::Udp, 3478);
        assert_eq!(e.stun_uris(), ["stun:[2001:db8::1]:3478"]);
    }

    #[test]
    fn without_turn_listeners_the_list_is_empty() {
        let e = IceEndpoints::new("h");
        assert_eq!(e.ice_servers_json(Some(&credential())), json!([]));
    }
}
