//! `--netns`: each node in a network namespace of its own (root only), so that a node's
//! traffic goes through a network stack and an interface of its own as between two hosts.
//!
//! Node `i` gets namespace `sbb-PID-nI` and a veth pair: the namespace's end has the node's
//! address, this host's end the address the benchmark's clients and Redis use on that link
//! (a /30 per node in `10.(200 + PID % 50).I.0`). The nodes reach each other only through
//! Redis, so nothing is routed or forwarded. Deleting a namespace deletes its veth pair; a
//! watchdog shell deletes the namespaces if the benchmark dies without doing it itself.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};

/// One node's namespace and link addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNet {
    pub ns: String,
    /// This host's end of the link: the clients' source and Redis's address for this node.
    pub host_ip: Ipv4Addr,
    /// The node's end, inside the namespace.
    pub node_ip: Ipv4Addr,
    host_if: String,
    node_if: String,
}

/// Names and addresses for `nodes` nodes of the benchmark process `pid`.
pub fn plan(pid: u32, nodes: usize) -> Vec<NodeNet> {
    let second = 200 + (pid % 50) as u8;
    (1..=nodes)
        .map(|i| {
            let third = i as u8;
            NodeNet {
                ns: format!("sbb-{pid}-n{i}"),
                host_ip: Ipv4Addr::new(10, second, third, 1),
                node_ip: Ipv4Addr::new(10, second, third, 2),
                // Interface names hold at most 15 bytes: "sbb" + 7 digits + "h" + 1.
                host_if: format!("sbb{}h{i}", pid % 10_000_000),
                node_if: format!("sbb{}c{i}", pid % 10_000_000),
            }
        })
        .collect()
}

/// The namespaces of a run; deleted when dropped.
pub struct Namespaces {
    created: Vec<String>,
    watchdog: Option<Child>,
}

impl Namespaces {
    pub fn create(nets: &[NodeNet]) -> anyhow::Result<Namespaces> {
        let mut made = Namespaces {
            created: Vec::new(),
            watchdog: None,
        };
        for n in nets {
            ip(&["netns", "add", &n.ns])?;
            made.created.push(n.ns.clone());
            ip(&[
                "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.node_if, "netns",
                &n.ns,
            ])?;
            ip(&[
                "addr",
                "add",
                &format!("{}/30", n.host_ip),
                "dev",
                &n.host_if,
            ])?;
            ip(&["link", "set", &n.host_if, "up"])?;
            let node_addr = format!("{}/30", n.node_ip);
            ip(&["-n", &n.ns, "addr", "add", &node_addr, "dev", &n.node_if])?;
            ip(&["-n", &n.ns, "link", "set", &n.node_if, "up"])?;
            ip(&["-n", &n.ns, "link", "set", "lo", "up"])?;
        }
        made.watchdog = Some(watchdog(&made.created)?);
        Ok(made)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.created {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("signalbox-bench: {e:#}");
            }
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// Runs `ip ARGS`; its error output becomes the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A shell that waits for this process to end, then deletes the namespaces; a normal end
/// kills it first. Not tied to this process: it has to outlive it.
fn watchdog(namespaces: &[String]) -> anyhow::Result<Child> {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; for ns in {}; do ip netns del \"$ns\"; done",
        std::process::id(),
        namespaces.join(" ")
    );
    use std::os::unix::process::CommandExt as _;
    Command::new("sh")
        .args(["-c", &script])
        // Its own process group: a Ctrl-C to the benchmark must not stop it too.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the namespace watchdog")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_its_own_namespace_link_and_slash_30() {
        let nets = plan(4_194_303, 3);
        assert_eq!(nets.len(), 3);
        assert_eq!(nets[0].ns, "sbb-4194303-n1");
        assert_eq!(nets[2].host_ip, Ipv4Addr::new(10, 203, 3, 1));
        assert_eq!(nets[2].node_ip, Ipv4Addr::new(10, 203, 3, 2));
        for n in &nets {
            assert!(n.host_if.len() <= 15 && n.node_if.len() <= 15, "{n:?}");
            assert_ne!(n.host_if, n.node_if);
        }
        let mut links: Vec<&str> = nets.iter().map(|n| n.host_if.as_str()).collect();
        links.dedup();
        assert_eq!(links.len(), 3);
    }
}
