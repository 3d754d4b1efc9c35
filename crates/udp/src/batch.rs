//! recvmmsg/sendmmsg batches over preallocated buffers: one syscall moves up to [`BATCH`]
//! datagrams, and nothing is allocated per packet once the buffers have grown to their
//! working size.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
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
        }
        self.filled = first + n;
        Ok(first..self.filled)
    }
}

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

/// One queued datagram: the socket to send it from, where to and its bytes.
struct Pending {
    fd: RawFd,
    to: SockAddr,
    src: Source,
}

/// Send side: datagrams queued while a receive batch is processed, flushed with one sendmmsg
/// per run of consecutive datagrams on the same socket.
#[derive(Default)]
pub struct SendBatch {
    pending: Vec<Pending>,
    /// The bytes [`Source::Arena`] ranges index into: [`SendBatch::push_copy`] appends here and
    /// [`SendBatch::flush`] empties it.
    pub arena: Vec<u8>,
}

impl SendBatch {
    /// Queues a datagram for `to` on socket `fd` whose bytes are at `src`; they must stay
    /// there, unchanged, until the next [`SendBatch::flush`].
    pub fn push(&mut self, fd: RawFd, to: SocketAddr, src: Source) {
        self.pending.push(Pending {
            fd,
            to: SockAddr::from(to),
            src,
        });
    }

    /// Queues a copy of `bytes`, for a datagram built in a buffer that is reused before the
    /// flush (a STUN response, a Data indication).
    pub fn push_copy(&mut self, fd: RawFd, to: SocketAddr, bytes: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.push(fd, to, Source::Arena(start, self.arena.len()));
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
            self.send_run(&self.pending[i..j], recv, inbox);
            i = j;
        }
        self.pending.clear();
        self.arena.clear();
    }

    fn send_run(&self, run: &[Pending], recv: &RecvBatch, inbox: &[u8]) {
        // SAFETY: plain data; the pointers set below point into `recv`, `inbox`, `self.arena`
        // and `run`, all borrowed for the duration of the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (k, p) in run.iter().enumerate() {
            let bytes: &[u8] = match p.src {
                Source::Recv(slot, s, e) => &recv.slot(slot)[s..e],
                Source::Inbox(s, e) => &inbox[s..e],
                Source::Arena(s, e) => &self.arena[s..e],
            };
            iov[k].iov_base = bytes.as_ptr() as *mut libc::c_void;
            iov[k].iov_len = bytes.len();
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = p.to.as_ptr() as *mut libc::c_void;
            h.msg_namelen = p.to.len();
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
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
