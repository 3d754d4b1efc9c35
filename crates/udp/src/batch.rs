//! recvmmsg/sendmmsg batches over preallocated buffers: one syscall moves up to [`BATCH`]
//! datagrams, and nothing is allocated per packet once the buffers have grown to their
//! working size.
//!
//! Multi-homed hosts: on a socket bound to a wildcard address with packet info on
//! ([`crate::socket::bind_udp`]), each received datagram also reports the local address it was
//! sent to (`IP_PKTINFO` / `IPV6_PKTINFO` control messages, [`RecvBatch::to`]), and a queued
//! datagram may name the local address to send it from ([`SendBatch::push`]), so an answer
//! leaves from the address the request reached instead of the one the kernel would pick. The
//! control-message buffers are part of the batches, allocated with them.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Free bytes kept before each received datagram, so a 4-byte header (TURN ChannelData) can be
/// written in place in front of it.
pub const HEADROOM: usize = 4;

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 32;
/// Largest datagram accepted; anything longer is dropped (MSG_TRUNC). Far above a path MTU.
pub const MAX_DATAGRAM: usize = 4096;
/// One receive slot: headroom for a ChannelData header, then the datagram.
pub const SLOT: usize = HEADROOM + MAX_DATAGRAM;

/// Room for one packet-info control message of either family (`CMSG_SPACE` of an
/// `in6_pktinfo` is 40 bytes on 64-bit Linux), aligned as a `cmsghdr` must be.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

impl Control {
    const EMPTY: Control = Control([0; 64]);
}

/// Receive side: `BATCH` slots. Successive receives fill the free slots, so datagrams read from
/// several relay sockets in one pass stay in place until the sends that point into them are
/// flushed together (one sendmmsg to the clients instead of one per relay socket).
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    /// `lens[i]`: the length of the datagram in slot `i`, which starts at [`HEADROOM`]. Valid
    /// for the slots a [`RecvBatch::recv`] returned, until [`RecvBatch::clear`].
    pub lens: [usize; BATCH],
    /// `from[i]`: the sender of the datagram in slot `i`; `None` when it was longer than
    /// [`MAX_DATAGRAM`] (cut short: drop it) or came from an address family other than IPv4
    /// and IPv6. Valid like [`RecvBatch::lens`].
    pub from: [Option<SocketAddr>; BATCH],
    /// `to[i]`: the local address the datagram in slot `i` was sent to, when the socket
    /// reports it (a wildcard listener with packet info on); `None` otherwise. Valid like
    /// [`RecvBatch::lens`].
    pub to: [Option<IpAddr>; BATCH],
    /// One control-message buffer per slot, for the packet info.
    control: Vec<Control>,
    /// Slots `0..filled` hold datagrams that queued sends may still point into.
    filled: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// All slots free. The `BATCH * SLOT` bytes of buffer (about 128 KiB) are allocated here
    /// once; receives reuse them.
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            lens: [0; BATCH],
            from: [None; BATCH],
            to: [None; BATCH],
            control: vec![Control::EMPTY; BATCH],
            filled: 0,
        }
    }

    /// Free slots left for the next receive.
    pub fn free(&self) -> usize {
        BATCH - self.filled
    }

    /// Makes every slot free again; only after the sends pointing into them are flushed.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// Slot `i` as the core wants it: headroom followed by the datagram.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    /// Slot `i`, headroom included: what a [`Source::Recv`] range indexes into.
    pub fn slot(&self, i: usize) -> &[u8] {
        &self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    /// Reads up to [`Self::free`] datagrams from `fd` into the free slots without blocking and
    /// returns the slots filled. `WouldBlock` means the socket is drained; with no free slot
    /// the range is empty. Truncated datagrams get `from = None`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<std::ops::Range<usize>> {
        let first = self.filled;
        let want = BATCH - first;
        if want == 0 {
            return Ok(first..first);
        }
        // SAFETY: iovec/mmsghdr are plain data; every pointer set below points into
        // `self.bufs` / `self.addrs`, which outlive the call and are not moved during it.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let base = self.bufs.as_mut_ptr();
        for i in 0..want {
            let slot = first + i;
            iov[i].iov_base = unsafe { base.add(slot * SLOT + HEADROOM) }.cast();
            iov[i].iov_len = MAX_DATAGRAM;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[slot] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[slot].0.as_mut_ptr().cast();
            h.msg_controllen = size_of::<Control>() as _;
        }
        // SAFETY: hdrs[..want] describes valid buffers as set up above.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().enumerate().take(n) {
            let slot = first + i;
            self.lens[slot] = h.msg_len as usize;
            self.from[slot] = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                None
            } else {
                to_socket_addr(&self.addrs[slot])
            };
            // SAFETY: the header was filled by recvmmsg; its control pointer and length
            // describe `self.control[slot]`.
            self.to[slot] = unsafe { packet_info(&h.msg_hdr) };
        }
        self.filled = first + n;
        Ok(first..self.filled)
    }
}

/// The destination address in a received datagram's packet-info control message, if any.
///
/// # Safety
/// `h` must come from a successful receive, its control pointer and length describing a
/// buffer that holds what the kernel wrote there.
unsafe fn packet_info(h: &libc::msghdr) -> Option<IpAddr> {
    if h.msg_controllen == 0 {
        return None;
    }
    let mut c = libc::CMSG_FIRSTHDR(h);
    while !c.is_null() {
        let data = libc::CMSG_DATA(c);
        match ((*c).cmsg_level, (*c).cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                let info = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let info = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
        c = libc::CMSG_NXTHDR(h, c);
    }
    None
}

/// Writes a packet-info control message asking to send from `from` into `buf`; returns its
/// length for `msg_controllen`.
fn write_packet_info(buf: &mut Control, from: IpAddr) -> usize {
    buf.0.fill(0);
    let mut h: libc::msghdr = unsafe { zeroed() };
    h.msg_control = buf.0.as_mut_ptr().cast();
    h.msg_controllen = size_of::<Control>() as _;
    // SAFETY: `h` describes `buf`, which is large and aligned enough for one cmsghdr with
    // either pktinfo struct (checked by the const assertion below); CMSG_* only compute
    // offsets inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        let data = libc::CMSG_DATA(c);
        match from {
            IpAddr::V4(ip) => {
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let mut info: libc::in_pktinfo = zeroed();
                info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                std::ptr::write_unaligned(data as *mut libc::in_pktinfo, info);
                libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize
            }
            IpAddr::V6(ip) => {
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let mut info: libc::in6_pktinfo = zeroed();
                info.ipi6_addr.s6_addr = ip.octets();
                std::ptr::write_unaligned(data as *mut libc::in6_pktinfo, info);
                libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize
            }
        }
    }
}

const _: () = assert!(size_of::<libc::cmsghdr>() + size_of::<libc::in6_pktinfo>() + 8 <= 64);

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Where the bytes of a queued datagram live until the batch is flushed.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// A receive slot: `(slot, start, end)` within [`RecvBatch::slot`].
    Recv(usize, usize, usize),
    /// The inbox arena of forwarded packets.
    Inbox(usize, usize),
    /// This batch's own arena (copied STUN responses, Data indications).
    Arena(usize, usize),
}

/// One queued datagram: the socket to send it from, the local address to send it from (for a
/// wildcard socket; `None`: the kernel's choice), where to and its bytes.
struct Pending {
    fd: RawFd,
    from: Option<IpAddr>,
    to: SockAddr,
    src: Source,
}

/// Send side: datagrams queued while a receive batch is processed, flushed with one sendmmsg
/// per run of consecutive datagrams on the same socket.
pub struct SendBatch {
    pending: Vec<Pending>,
    /// The bytes [`Source::Arena`] ranges index into: [`SendBatch::push_copy`] appends here and
    /// [`SendBatch::flush`] empties it.
    pub arena: Vec<u8>,
    /// One control-message buffer per datagram of a sendmmsg, for the source address.
    control: Vec<Control>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            pending: Vec::new(),
            arena: Vec::new(),
            control: vec![Control::EMPTY; BATCH],
        }
    }
}

impl SendBatch {
    /// Queues a datagram for `to` on socket `fd` whose bytes are at `src`; they must stay
    /// there, unchanged, until the next [`SendBatch::flush`]. `from` names the local address
    /// to send from, for a socket bound to a wildcard address (of the socket's family).
    pub fn push(&mut self, fd: RawFd, from: Option<IpAddr>, to: SocketAddr, src: Source) {
        self.pending.push(Pending {
            fd,
            from,
            to: SockAddr::from(to),
            src,
        });
    }

    /// Queues a copy of `bytes`, for a datagram built in a buffer that is reused before the
    /// flush (a STUN response, a Data indication).
    pub fn push_copy(&mut self, fd: RawFd, from: Option<IpAddr>, to: SocketAddr, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.push(fd, from, to, Source::Arena(start, self.arena.len()));
    }

    /// Sends everything queued. Send errors (a full socket buffer, an unreachable peer) drop
    /// the datagram, as a router would.
    pub fn flush(&mut self, recv: &RecvBatch, inbox: &[u8]) {
        let mut i = 0;
        while i < self.pending.len() {
            let fd = self.pending[i].fd;
            let mut j = i;
            while j < self.pending.len() && j - i < BATCH && self.pending[j].fd == fd {
                j += 1;
            }
            send_run(
                &self.pending[i..j],
                &mut self.control,
                &self.arena,
                recv,
                inbox,
            );
            i = j;
        }
        self.pending.clear();
        self.arena.clear();
    }
}

/// Sends one run of datagrams on the same socket (at most [`BATCH`]).
fn send_run(
    run: &[Pending],
    control: &mut [Control],
    arena: &[u8],
    recv: &RecvBatch,
    inbox: &[u8],
) {
    // SAFETY: plain data; the pointers set below point into `recv`, `inbox`, `arena`,
    // `control` and `run`, all borrowed for the duration of the call.
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for ((k, p), c) in run.iter().enumerate().zip(control.iter_mut()) {
        let bytes: &[u8] = match p.src {
            Source::Recv(slot, s, e) => &recv.slot(slot)[s..e],
            Source::Inbox(s, e) => &inbox[s..e],
            Source::Arena(s, e) => &arena[s..e],
        };
        iov[k].iov_base = bytes.as_ptr() as *mut libc::c_void;
        iov[k].iov_len = bytes.len();
        let h = &mut hdrs[k].msg_hdr;
        h.msg_name = p.to.as_ptr() as *mut libc::c_void;
        h.msg_namelen = p.to.len();
        h.msg_iov = &mut iov[k];
        h.msg_iovlen = 1;
        if let Some(from) = p.from {
            let len = write_packet_info(c, from);
            h.msg_control = c.0.as_mut_ptr().cast();
            h.msg_controllen = len as _;
        }
    }
    let mut sent = 0;
    while sent < run.len() {
        // SAFETY: hdrs[sent..run.len()] are initialised above.
        let n = unsafe {
            libc::sendmmsg(
                run[0].fd,
                hdrs.as_mut_ptr().add(sent),
                (run.len() - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            // The first datagram failed (EAGAIN, ECONNREFUSED, …): skip it and go on.
            sent += 1;
        } else {
            sent += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn send_n(from: &std::net::UdpSocket, to: SocketAddr, n: usize, tag: u8) {
        for k in 0..n {
            from.send_to(&[tag, k as u8], to).expect("send");
        }
    }

    #[test]
    fn receives_fill_the_free_slots_until_cleared() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut batch = RecvBatch::new();

        send_n(&tx, to, 3, 1);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("recv"), 0..3);
        send_n(&tx, to, 2, 2);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("recv"), 3..5);
        assert_eq!(batch.free(), BATCH - 5);
        // Earlier datagrams stay where they were.
        assert_eq!(&batch.slot(1)[HEADROOM..HEADROOM + 2], &[1, 1]);
        assert_eq!(&batch.slot(4)[HEADROOM..HEADROOM + 2], &[2, 1]);
        assert_eq!(batch.from[4], Some(tx.local_addr().expect("addr")));
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        // A full batch takes no more until cleared.
        send_n(&tx, to, BATCH, 3);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("recv"), 5..BATCH);
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("recv"), BATCH..BATCH);
        batch.clear();
        assert_eq!(batch.recv(rx.as_raw_fd()).expect("recv"), 0..5);
    }
}
