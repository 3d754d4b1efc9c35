//! Thin, allocation-free UDP plumbing for the load generator, the echo peer and the reference
//! forwarder: non-blocking IPv4 sockets, `recvmmsg`/`sendmmsg` batches and an epoll set.
//!
//! The harness must never be the bottleneck of what it measures, so every hot path here moves
//! up to [`BATCH`] datagrams per system call and reuses its buffers. Loopback only: addresses
//! are IPv4 (`sockaddr_in`), which is all the benchmark uses.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;
/// Bytes reserved per datagram slot: a 1,200-byte payload plus headers fits with room to spare.
pub const SLOT: usize = 2048;
/// Headroom left in front of every receive slot, so a forwarder can prepend a 4-byte header
/// in place instead of copying.
pub const HEADROOM: usize = 4;

/// Socket buffer size asked for (the kernel caps it at `net.core.*mem_max` unless we may force).
const SOCKET_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound on loopback (port 0 = ephemeral), with large buffers.
pub fn udp_socket(port: u16, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    set_buffers(&s);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into())?;
    Ok(s.into())
}

fn set_buffers(s: &Socket) {
    // Forcing works as root and lifts the sysctl cap; otherwise take what the kernel grants.
    for (opt, fallback) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = SOCKET_BUFFER as libc::c_int;
        let set = |o| unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                o,
                &v as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set(opt) != 0 {
            set(fallback);
        }
    }
}

/// Raises the open-file limit to its hard maximum (many sockets per run).
pub fn raise_fd_limit() -> u64 {
    unsafe {
        let mut r: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            return r.rlim_cur;
        }
    }
    1024
}

pub fn to_sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    if let SocketAddr::V4(v4) = addr {
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    }
    sa
}

pub fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    ))
}

/// A reusable batch of datagram slots for `recvmmsg`/`sendmmsg`. Each slot has [`HEADROOM`]
/// spare bytes before its data.
pub struct Batch {
    data: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_in; BATCH],
    /// Start offset of each slot's data (HEADROOM, or 0 once a header was prepended).
    starts: [usize; BATCH],
    iov: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            data: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            addrs: unsafe { zeroed() },
            starts: [HEADROOM; BATCH],
            iov: unsafe { zeroed() },
            hdrs: unsafe { zeroed() },
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Datagram `i` (after a receive, or as pushed).
    pub fn get(&self, i: usize) -> &[u8] {
        let base = i * SLOT + self.starts[i];
        &self.data[base..base + self.lens[i]]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let base = i * SLOT + self.starts[i];
        &mut self.data[base..base + self.lens[i]]
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        from_sockaddr(&self.addrs[i])
    }

    pub fn raw_addr(&self, i: usize) -> libc::sockaddr_in {
        self.addrs[i]
    }

    pub fn set_raw_addr(&mut self, i: usize, sa: libc::sockaddr_in) {
        self.addrs[i] = sa;
    }

    /// Strips `n` bytes from the front of datagram `i` (in place, no copy).
    pub fn strip_front(&mut self, i: usize, n: usize) {
        let n = n.min(self.lens[i]);
        self.starts[i] += n;
        self.lens[i] -= n;
    }

    /// Prepends `hdr` in the headroom of datagram `i` (in place, no copy of the payload).
    /// Returns false when the slot has no room left in front.
    pub fn prepend(&mut self, i: usize, hdr: &[u8]) -> bool {
        if self.starts[i] < hdr.len() {
            return false;
        }
        self.starts[i] -= hdr.len();
        self.lens[i] += hdr.len();
        let base = i * SLOT + self.starts[i];
        self.data[base..base + hdr.len()].copy_from_slice(hdr);
        true
    }

    /// Appends a datagram to send to `to` (or on a connected socket when `to` is None).
    /// Returns false when the batch is full or the datagram is too large.
    pub fn push(&mut self, payload: &[u8], to: Option<libc::sockaddr_in>) -> bool {
        if self.len == BATCH || payload.len() > SLOT - HEADROOM {
            return false;
        }
        let i = self.len;
        self.starts[i] = HEADROOM;
        self.lens[i] = payload.len();
        let base = i * SLOT + HEADROOM;
        self.data[base..base + payload.len()].copy_from_slice(payload);
        self.addrs[i] = to.unwrap_or(unsafe { zeroed() });
        self.len += 1;
        true
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many (0 when none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..BATCH {
            self.starts[i] = HEADROOM;
            self.iov[i] = libc::iovec {
                iov_base: self.data[i * SLOT + HEADROOM..].as_mut_ptr() as *mut libc::c_void,
                iov_len: SLOT - HEADROOM,
            };
            self.hdrs[i] = unsafe { zeroed() };
            self.hdrs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            self.hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            self.hdrs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points into buffers owned by `self`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.len = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // A refused earlier send (ICMP) surfaces on the next call; it is not ours.
                io::ErrorKind::ConnectionRefused => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        self.len = n;
        Ok(n)
    }

    /// Sends every datagram in the batch (retrying the rest after a partial send) and clears
    /// it. Returns how many were sent; datagrams the kernel refuses (full buffer) are dropped,
    /// as a real relay would.
    pub fn send(&mut self, fd: RawFd, connected: bool) -> usize {
        let total = self.len;
        for i in 0..total {
            let base = i * SLOT + self.starts[i];
            self.iov[i] = libc::iovec {
                iov_base: self.data[base..].as_mut_ptr() as *mut libc::c_void,
                iov_len: self.lens[i],
            };
            self.hdrs[i] = unsafe { zeroed() };
            if !connected {
                self.hdrs[i].msg_hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
                self.hdrs[i].msg_hdr.msg_namelen =
                    size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            self.hdrs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        let mut sent = 0;
        while done < total {
            // SAFETY: as in `recv`; the range [done, total) is initialised above.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (total - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram the kernel refused and go on with the rest.
                done += 1;
                continue;
            }
            done += n as usize;
            sent += n as usize;
        }
        self.len = 0;
        sent
    }
}

/// Sends one datagram on a connected socket without blocking; false when the kernel refused it.
pub fn send_connected(fd: RawFd, payload: &[u8]) -> bool {
    // SAFETY: plain send of a borrowed buffer.
    let n = unsafe {
        libc::send(
            fd,
            payload.as_ptr() as *const libc::c_void,
            payload.len(),
            libc::MSG_DONTWAIT,
        )
    };
    n == payload.len() as isize
}

/// An epoll set; the token of each registered socket is a caller-chosen `u64`.
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: plain syscall on fds we own.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: plain syscall.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout` (rounded to the next microsecond) and returns the ready tokens.
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<u64>) {
        out.clear();
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` outlives the call; its length bounds what the kernel writes.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts,
                std::ptr::null(),
            )
        };
        for ev in self.events.iter().take(n.max(0) as usize) {
            out.push(ev.u64);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the fd we created.
        unsafe { libc::close(self.fd) };
    }
}

/// A free loopback UDP port (bound and released; good enough for starting servers).
pub fn free_udp_port() -> io::Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// A free loopback TCP port.
pub fn free_tcp_port() -> io::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}
