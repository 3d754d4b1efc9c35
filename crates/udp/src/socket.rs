//! Socket set-up for the relay: non-blocking UDP sockets with SO_REUSEPORT for listeners shared
//! by workers, and the process's open-file limit (every allocation holds a relay socket).

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

/// A non-blocking UDP socket. With `reuse_port` (listeners) several workers share the address,
/// and the socket gets large buffers: it carries every client of the worker, so bursts must
/// not overflow it. Relay sockets keep the kernel defaults, which bounds kernel memory per
/// allocation.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
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
