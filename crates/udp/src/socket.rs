//! Socket set-up for the relay: non-blocking UDP sockets with SO_REUSEPORT for listeners shared
//! by workers, and the process's open-file limit (every allocation holds a relay socket).
//!
//! An IPv6 socket is always IPv6-only: a listener that serves both families is two sockets
//! (the caller binds `0.0.0.0` and `[::]` on one port), so every datagram's addresses keep
//! their own family and no IPv4-mapped form reaches the TURN core. A listener on a wildcard
//! address asks for packet info, so that its answers leave from the address each request was
//! sent to ([`crate::batch`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

/// A non-blocking UDP socket. With `reuse_port` (listeners) several workers share the address,
/// and the socket gets large buffers: it carries every client of the worker, so bursts must
/// not overflow it. Relay sockets keep the kernel defaults, which bounds kernel memory per
/// allocation. A listener on a wildcard address reports each datagram's destination.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        if addr.ip().is_unspecified() {
            set_packet_info(&socket, addr.is_ipv6())?;
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// IP_PKTINFO / IPV6_RECVPKTINFO: receive each datagram's destination address.
fn set_packet_info(socket: &Socket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from the pointer and length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True when this host can open IPv6 sockets (the kernel has IPv6 and it is not disabled).
pub fn ipv6_available() -> bool {
    UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok()
}

/// Every WebSocket, TURN allocation and relay socket is a descriptor, and the usual soft
/// limit (1024) is far below what one server handles: raise the soft limit to the hard one.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur >= lim.rlim_max {
        return;
    }
    let before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        debug!("open file limit raised from {before} to {}", lim.rlim_max);
    } else {
        warn!("cannot raise the open file limit above {before}");
    }
}
