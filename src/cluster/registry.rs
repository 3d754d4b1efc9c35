//! The node registry: what a node says about itself in Redis, and what a heartbeat's answer
//! means. No I/O here; [`super`] moves the bytes.
//!
//! Each node keeps one key, `signalbox:node:NAME`, holding its [`NodeInfo`] as JSON with an
//! expiry of `node_timeout`, and its name in the set `signalbox:nodes`. A heartbeat is one Lua
//! script, so it is atomic and one round trip: it renews the node's key (handing back what the
//! key held before, which tells whether another process uses the same name), adds the name to
//! the set, and returns the entries of every name in the set whose key is still there, removing
//! the names whose key expired. Expiry runs on Redis's clock, so the nodes' clocks never matter.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PortRange;

/// The set of the names of registered nodes.
pub const NODES_KEY: &str = "signalbox:nodes";
/// Prefix of each node's own key (`signalbox:node:NAME`).
pub const NODE_KEY_PREFIX: &str = "signalbox:node:";

/// KEYS: the set, this node's key. ARGV: name, entry, expiry in ms, key prefix. Returns the key's
/// previous value (or nil) and the entries of the nodes alive.
pub const HEARTBEAT_SCRIPT: &str = r#"
local previous = redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3], 'GET')
redis.call('SADD', KEYS[1], ARGV[1])
local alive = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local entry = redis.call('GET', ARGV[4] .. name)
  if entry then
    table.insert(alive, entry)
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return {previous, alive}
"#;

/// KEYS: the set, this node's key. ARGV: name, this process's instance id. Removes the node
/// unless another process has taken its name since.
pub const LEAVE_SCRIPT: &str = r#"
local entry = redis.call('GET', KEYS[2])
if entry then
  local ok, node = pcall(cjson.decode, entry)
  if ok and type(node) == 'table' and node['instance'] ~= ARGV[2] then
    return 0
  end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"#;

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `[cluster] node_name`.
    pub name: String,
    /// Random per process: tells a restarted node, or two nodes given one name, apart.
    pub instance: String,
    pub version: String,
    /// `HOST[:PORT]` of the node's HTTPS listener, as browsers reach it.
    pub public: String,
    /// The node's TURN relay addresses; empty when its TURN server is off.
    pub relays: Vec<RelayAddress>,
    /// The node's relay port range, `FIRST-LAST`; empty when its TURN server is off.
    pub relay_ports: String,
    pub load: Load,
}

/// One relay address: where the relay sockets are bound, and the address peers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAddress {
    pub local: IpAddr,
    pub advertised: IpAddr,
}

/// How busy a node is, as at its last heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub peers: i64,
    pub ws_connections: i64,
    pub allocations: i64,
}

/// The registry as one heartbeat saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The nodes alive, this one included, by name.
    pub nodes: Vec<NodeInfo>,
    /// Entries that are not a [`NodeInfo`] (a node of another version, or something else
    /// writing under our keys); they are left alone and not counted as nodes.
    pub unreadable: usize,
    /// The instance of another process that held this node's name until this heartbeat.
    pub name_taken_by: Option<String>,
}

/// How often a node renews its entry: three times within `node_timeout`, so one lost or slow
/// heartbeat never makes a live node look dead.
pub fn heartbeat_interval(node_timeout: Duration) -> Duration {
    node_timeout / 3
}

/// Reads the answer of [`HEARTBEAT_SCRIPT`] for the node `own`.
pub fn read_heartbeat(own: &NodeInfo, previous: Option<&str>, entries: &[String]) -> View {
    let name_taken_by = previous
        .and_then(|p| serde_json::from_str::<NodeInfo>(p).ok())
        .filter(|p| p.instance != own.instance)
        .map(|p| p.instance);
    let mut nodes = Vec::with_capacity(entries.len());
    let mut unreadable = 0;
    for entry in entries {
        match serde_json::from_str::<NodeInfo>(entry) {
            Ok(node) => nodes.push(node),
            Err(_) => unreadable += 1,
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    View {
        nodes,
        unreadable,
        name_taken_by,
    }
}

/// The relay addresses (local and advertised) of every node but the process `own_instance`,
/// each with its node's relay port range: the peers the TURN policy lets through (rule 2a).
/// A node whose range does not parse offers none.
pub fn other_relays(view: &View, own_instance: &str) -> Vec<(IpAddr, PortRange)> {
    let mut list = Vec::new();
    for node in view.nodes.iter().filter(|n| n.instance != own_instance) {
        let Ok(ports) = node.relay_ports.parse::<PortRange>() else {
            continue;
        };
        for relay in &node.relays {
            list.push((relay.local, ports));
            list.push((relay.advertised, ports));
        }
    }
    list.sort_by_key(|(ip, r)| (*ip, r.first, r.last));
    list.dedup();
    list
}

/// Which nodes have gone, from one heartbeat's view to the next, for the signaling of rooms that
/// live on them or of connections they held. A node gone from one view may only have missed a
/// beat (a Redis that restarted empty is filled again by the nodes' next heartbeats), so it
/// counts as gone once it is missing from two views in a row; a name that comes back with
/// another instance id is a restarted process, gone at once.
#[derive(Debug, Clone, Default)]
pub struct Departures {
    /// Every other node seen, by name, with its instance id.
    known: std::collections::HashMap<String, String>,
    /// Known nodes missing from the last view.
    missing: std::collections::HashSet<String>,
}

impl Departures {
    /// Takes a successful heartbeat's view; returns the `(name, instance)` of nodes gone.
    pub fn update(&mut self, view: &View, own_instance: &str) -> Vec<(String, String)> {
        let now: std::collections::HashMap<&str, &str> = view
            .nodes
            .iter()
            .filter(|n| n.instance != own_instance)
            .map(|n| (n.name.as_str(), n.instance.as_str()))
            .collect();
        let mut gone = Vec::new();
        let mut missing = std::collections::HashSet::new();
        for (name, instance) in &self.known {
            match now.get(name.as_str()) {
                Some(i) if i == instance => {}
                Some(_) => gone.push((name.clone(), instance.clone())),
                None if self.missing.contains(name) => gone.push((name.clone(), instance.clone())),
                None => {
                    missing.insert(name.clone());
                }
            }
        }
        for (name, _) in &gone {
            self.known.remove(name);
        }
        for (name, instance) in now {
            self.known.insert(name.to_owned(), instance.to_owned());
        }
        self.missing = missing;
        gone.sort();
        gone
    }

    /// After Redis was unreachable: what was missing before may have beaten meanwhile.
    pub fn forgive(&mut self) {
        self.missing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, instance: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            instance: instance.into(),
            version: "0.1.0".into(),
            public: format!("{name}.example.org"),
            relays: vec![RelayAddress {
                local: "10.0.0.1".parse().expect("address"),
                advertised: "203.0.113.1".parse().expect("address"),
            }],
            relay_ports: "49152-65535".into(),
            load: Load::default(),
        }
    }

    fn json(n: &NodeInfo) -> String {
        serde_json::to_string(n).expect("serializes")
    }

    #[test]
    fn the_alive_nodes_come_back_sorted_by_name() {
        let own = node("b", "1");
        let view = read_heartbeat(&own, None, &[json(&own), json(&node("a", "2"))]);
        let names: Vec<_> = view.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(view.nodes[0], node("a", "2"));
        assert_eq!((view.unreadable, view.name_taken_by), (0, None));
    }

    #[test]
    fn an_entry_that_is_not_a_node_is_counted_and_skipped() {
        let own = node("a", "1");
        let view = read_heartbeat(&own, None, &[json(&own), "{\"name\":5}".into()]);
        assert_eq!(view.nodes, [own]);
        assert_eq!(view.unreadable, 1);
    }

    #[test]
    fn another_process_with_the_same_name_is_noticed_but_our_own_last_entry_is_not() {
        let own = node("a", "mine");
        let view = read_heartbeat(&own, Some(&json(&node("a", "theirs"))), &[json(&own)]);
        assert_eq!(view.name_taken_by.as_deref(), Some("theirs"));
        let view = read_heartbeat(&own, Some(&json(&own)), &[json(&own)]);
        assert_eq!(view.name_taken_by, None);
    }

    #[test]
    fn the_policy_gets_every_other_nodes_relays_with_their_ranges_but_not_ours() {
        let own = node("a", "1");
        let mut other = node("b", "2");
        other.relay_ports = "41000-41999".into();
        let mut broken = node("c", "3");
        broken.relay_ports = "soon".into();
        let view = read_heartbeat(&own, None, &[json(&own), json(&other), json(&broken)]);
        let range: PortRange = "41000-41999".parse().expect("range");
        assert_eq!(
            other_relays(&view, "1"),
            [
                ("10.0.0.1".parse().expect("ip"), range),
                ("203.0.113.1".parse().expect("ip"), range)
            ]
        );
    }

    #[test]
    fn three_heartbeats_fit_in_the_node_timeout() {
        let timeout = Duration::from_secs(10);
        let interval = heartbeat_interval(timeout);
        assert!(interval * 3 <= timeout);
        assert!(interval * 4 > timeout);
    }

    fn view(nodes: &[(&str, &str)]) -> View {
        View {
            nodes: nodes.iter().map(|(n, i)| node(n, i)).collect(),
            ..View::default()
        }
    }

    #[test]
    fn a_node_is_gone_once_it_is_missing_from_two_views_in_a_row() {
        let mut d = Departures::default();
        assert!(d.update(&view(&[("a", "1"), ("b", "2")]), "1").is_empty());
        assert!(d.update(&view(&[("a", "1")]), "1").is_empty());
        // Back in time: a missed beat, not a departure.
        assert!(d.update(&view(&[("a", "1"), ("b", "2")]), "1").is_empty());
        assert!(d.update(&view(&[("a", "1")]), "1").is_empty());
        assert_eq!(
            d.update(&view(&[("a", "1")]), "1"),
            vec![("b".to_owned(), "2".to_owned())]
        );
        // Reported once.
        assert!(d.update(&view(&[("a", "1")]), "1").is_empty());
    }

    #[test]
    fn a_restarted_node_is_gone_at_once_and_its_new_instance_known() {
        let mut d = Departures::default();
        d.update(&view(&[("a", "1"), ("b", "2")]), "1");
        assert_eq!(
            d.update(&view(&[("a", "1"), ("b", "3")]), "1"),
            vec![("b".to_owned(), "2".to_owned())]
        );
        d.update(&view(&[("a", "1")]), "1");
        assert_eq!(
            d.update(&view(&[("a", "1")]), "1"),
            vec![("b".to_owned(), "3".to_owned())]
        );
    }

    #[test]
    fn after_an_outage_a_missing_node_gets_another_beat() {
        let mut d = Departures::default();
        d.update(&view(&[("a", "1"), ("b", "2")]), "1");
        d.update(&view(&[("a", "1")]), "1");
        d.forgive();
        assert!(d.update(&view(&[("a", "1")]), "1").is_empty());
    }
}
