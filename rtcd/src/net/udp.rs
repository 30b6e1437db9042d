//! Batched UDP I/O for one engine shard: `recvmmsg` into buffers the shard keeps for its life
//! (no allocation per datagram), one `sendmmsg` per drain for the datagrams of many
//! destinations, and UDP GSO (`UDP_SEGMENT`) for runs of equal-size datagrams to one
//! destination, falling back to plain batches where the kernel refuses it.

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use nix::{
    errno::Errno,
    sys::socket::{self, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage},
};
use tokio::{io::Interest, net::UdpSocket};

/// Largest datagram read (a longer one arrives truncated and is dropped).
pub const MAX_DATAGRAM: usize = 2048;
/// Datagrams per `recvmmsg` / `sendmmsg`.
pub const BATCH: usize = 32;
/// Segments in one GSO send, at most (the kernel's `UDP_MAX_SEGMENTS` is 64 or more).
const GSO_MAX_SEGMENTS: usize = 64;
/// Payload bytes in one GSO send, at most (one UDP datagram's limit, with room for headers).
const GSO_MAX_BYTES: usize = 60_000;

/// What one `recv` call read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Datagrams handed to the callback.
    pub datagrams: usize,
    /// Datagrams dropped because they were longer than [`MAX_DATAGRAM`].
    pub truncated: usize,
}

/// Reads a socket `BATCH` datagrams per system call into buffers reused for every call.
pub struct Receiver {
    bufs: Box<[u8]>,
    hdrs: MultiHeaders<SockaddrStorage>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            hdrs: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl Receiver {
    /// Reads what the socket holds, up to [`BATCH`] datagrams in one `recvmmsg`, and calls `f`
    /// with each sender and payload. `WouldBlock` when nothing is waiting (the socket's
    /// readiness is then cleared, so `readable().await` waits for more).
    pub fn recv(&mut self, sock: &UdpSocket, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<Received> {
        let fd = sock.as_raw_fd();
        let mut got = [(0usize, None::<SocketAddr>); BATCH];
        let mut truncated = 0;
        let n = sock.try_io(Interest::READABLE, || {
            let mut chunks = self.bufs.chunks_mut(MAX_DATAGRAM);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let msgs = socket::recvmmsg(fd, &mut self.hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            let mut n = 0;
            for (slot, msg) in got.iter_mut().zip(msgs) {
                let whole = !msg.flags.contains(MsgFlags::MSG_TRUNC);
                if !whole {
                    truncated += 1;
                }
                *slot = (msg.bytes, msg.address.and_then(to_std).filter(|_| whole));
                n += 1;
            }
            Ok(n)
        })?;
        let mut datagrams = 0;
        for (i, (len, from)) in got.iter().take(n).enumerate() {
            let Some(from) = from else { continue };
            let start = i * MAX_DATAGRAM;
            if let Some(data) = self.bufs.get(start..start + len.min(&MAX_DATAGRAM)) {
                f(*from, data);
                datagrams += 1;
            }
        }
        Ok(Received { datagrams, truncated })
    }
}

fn to_std(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// One datagram waiting to be sent.
#[derive(Debug)]
struct Outgoing {
    socket: usize,
    destination: SocketAddr,
    data: Vec<u8>,
}

/// What a [`Sender::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: usize,
    /// Datagrams dropped (socket buffer full, or refused).
    pub failed: usize,
    /// System calls made.
    pub syscalls: usize,
    /// Datagrams that left in GSO runs.
    pub segmented: usize,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, o: Self) {
        self.datagrams += o.datagrams;
        self.failed += o.failed;
        self.syscalls += o.syscalls;
        self.segmented += o.segmented;
    }
}

/// Collects one drain's datagrams and sends them with as few system calls as it can.
pub struct Sender {
    queue: Vec<Outgoing>,
    hdrs: MultiHeaders<SockaddrStorage>,
    addrs: Vec<Option<SockaddrStorage>>,
    gso: bool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued", &self.queue.len())
            .field("gso", &self.gso)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender; `gso` false never tries UDP GSO.
    pub fn new(gso: bool) -> Self {
        Self {
            queue: Vec::with_capacity(BATCH),
            hdrs: MultiHeaders::preallocate(BATCH, None),
            addrs: Vec::with_capacity(BATCH),
            gso,
        }
    }

    /// Whether GSO is still on (the kernel may have refused it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Queues a datagram for the socket at `socket` in the slice given to [`Self::flush`].
    pub fn push(&mut self, socket: usize, destination: SocketAddr, data: Vec<u8>) {
        self.queue.push(Outgoing {
            socket,
            destination,
            data,
        });
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued, in order per destination, and empties the queue. `fd_of` gives
    /// the socket for an index given to [`Self::push`]; a datagram for an unknown index counts
    /// as failed.
    pub fn flush(&mut self, fd_of: impl Fn(usize) -> Option<RawFd>) -> Sent {
        let mut queue = std::mem::take(&mut self.queue);
        let mut sent = Sent::default();
        let mut i = 0;
        while i < queue.len() {
            let s = queue[i].socket;
            let end = queue[i..]
                .iter()
                .position(|o| o.socket != s)
                .map_or(queue.len(), |k| i + k);
            match fd_of(s) {
                Some(fd) => sent += self.send_socket(fd, &queue[i..end]),
                None => sent.failed += end - i,
            }
            i = end;
        }
        queue.clear();
        self.queue = queue;
        sent
    }

    /// One socket's datagrams: GSO runs where they form, `sendmmsg` batches between them.
    fn send_socket(&mut self, fd: RawFd, items: &[Outgoing]) -> Sent {
        let mut sent = Sent::default();
        let mut pending = 0;
        let mut k = 0;
        while k < items.len() {
            let run = if self.gso { gso_run(&items[k..]) } else { 1 };
            if run < 2 {
                k += 1;
                continue;
            }
            sent += self.send_batches(fd, &items[pending..k]);
            match send_gso(fd, &items[k..k + run]) {
                Ok(()) => {
                    sent.datagrams += run;
                    sent.segmented += run;
                    sent.syscalls += 1;
                }
                Err(Errno::EAGAIN) => {
                    sent.failed += run;
                    sent.syscalls += 1;
                }
                Err(e) => {
                    if matches!(
                        e,
                        Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP
                    ) {
                        tracing::info!(error = %e, "the kernel refuses UDP GSO here: sending datagrams one by one");
                        self.gso = false;
                    }
                    sent += self.send_batches(fd, &items[k..k + run]);
                }
            }
            k += run;
            pending = k;
        }
        sent += self.send_batches(fd, &items[pending..]);
        sent
    }

    /// `sendmmsg` in batches of [`BATCH`]. A full socket buffer drops the rest (as UDP
    /// would); a datagram the kernel refuses is skipped and counted.
    fn send_batches(&mut self, fd: RawFd, items: &[Outgoing]) -> Sent {
        let mut sent = Sent::default();
        let mut start = 0;
        while start < items.len() {
            let chunk = &items[start..items.len().min(start + BATCH)];
            self.addrs.clear();
            self.addrs
                .extend(chunk.iter().map(|o| Some(SockaddrStorage::from(o.destination))));
            let iovs: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|j| [IoSlice::new(chunk.get(j).map_or(&[][..], |o| &o.data))]);
            let none: [ControlMessage<'_>; 0] = [];
            sent.syscalls += 1;
            let result = socket::sendmmsg(
                fd,
                &mut self.hdrs,
                iovs[..chunk.len()].iter(),
                &self.addrs,
                none,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(Iterator::count);
            match result {
                Ok(n) if n > 0 => {
                    sent.datagrams += n;
                    start += n;
                }
                Ok(_) | Err(Errno::EAGAIN) => {
                    sent.failed += items.len() - start;
                    break;
                }
                Err(_) => {
                    sent.failed += 1;
                    start += 1;
                }
            }
        }
        sent
    }
}

/// How many datagrams from the front of `items` form one GSO send: same socket and
/// destination, all of the first one's size except a shorter last one.
fn gso_run(items: &[Outgoing]) -> usize {
    let Some(first) = items.first() else { return 0 };
    let size = first.data.len();
    if size == 0 {
        return 1;
    }
    let mut n = 1;
    let mut bytes = size;
    for o in &items[1..] {
        let len = o.data.len();
        if o.destination != first.destination
            || len == 0
            || len > size
            || n == GSO_MAX_SEGMENTS
            || bytes + len > GSO_MAX_BYTES
        {
            break;
        }
        n += 1;
        bytes += len;
        if len < size {
            break;
        }
    }
    n
}

fn send_gso(fd: RawFd, run: &[Outgoing]) -> Result<(), Errno> {
    let (Some(first), true) = (run.first(), run.len() <= GSO_MAX_SEGMENTS) else {
        return Err(Errno::EINVAL);
    };
    let segment = u16::try_from(first.data.len()).map_err(|_| Errno::EINVAL)?;
    let iovs: [IoSlice<'_>; GSO_MAX_SEGMENTS] =
        std::array::from_fn(|j| IoSlice::new(run.get(j).map_or(&[][..], |o| &o.data)));
    let total: usize = run.iter().map(|o| o.data.len()).sum();
    let n = socket::sendmsg(
        fd,
        &iovs[..run.len()],
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::MSG_DONTWAIT,
        Some(&SockaddrStorage::from(first.destination)),
    )?;
    if n == total { Ok(()) } else { Err(Errno::EIO) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(dest: &str, len: usize) -> Outgoing {
        Outgoing {
            socket: 0,
            destination: dest.parse().unwrap(),
            data: vec![7; len],
        }
    }

    #[test]
    fn gso_runs_take_equal_sizes_to_one_destination_and_a_shorter_last() {
        let a = "127.0.0.1:1000";
        let b = "127.0.0.1:2000";
        assert_eq!(gso_run(&[]), 0);
        assert_eq!(gso_run(&[out(a, 100)]), 1);
        assert_eq!(gso_run(&[out(a, 100), out(a, 100), out(a, 100)]), 3);
        assert_eq!(gso_run(&[out(a, 100), out(a, 100), out(a, 60), out(a, 60)]), 3);
        assert_eq!(gso_run(&[out(a, 100), out(a, 120)]), 1);
        assert_eq!(gso_run(&[out(a, 100), out(b, 100)]), 1);
        let many: Vec<_> = (0..100).map(|_| out(a, 100)).collect();
        assert_eq!(gso_run(&many), GSO_MAX_SEGMENTS);
        let big: Vec<_> = (0..60).map(|_| out(a, 1200)).collect();
        assert_eq!(gso_run(&big), GSO_MAX_BYTES / 1200);
    }

    /// Real sockets on loopback: every datagram of a mixed drain (singles to several
    /// receivers, an equal-size burst, a burst with a shorter tail) arrives whole, in order per
    /// receiver, with fewer system calls than datagrams; the receiver reads them in batches.
    #[tokio::test]
    async fn a_drain_arrives_whole_and_in_order_with_and_without_gso() {
        for gso in [true, false] {
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let rx1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let rx2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (d1, d2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
            let mut s = Sender::new(gso);
            let mut expect1 = Vec::new();
            let mut expect2 = Vec::new();
            let mut seq = 0u8;
            let mut push = |s: &mut Sender, d: SocketAddr, len: usize, exp: &mut Vec<Vec<u8>>| {
                seq += 1;
                let data = vec![seq; len];
                exp.push(data.clone());
                s.push(0, d, data);
            };
            push(&mut s, d1, 90, &mut expect1);
            push(&mut s, d2, 90, &mut expect2);
            for _ in 0..10 {
                push(&mut s, d1, 1100, &mut expect1);
            }
            push(&mut s, d1, 700, &mut expect1);
            for _ in 0..5 {
                push(&mut s, d2, 1000, &mut expect2);
            }
            push(&mut s, d2, 1200, &mut expect2);
            let total = expect1.len() + expect2.len();
            let sent = s.flush(|i| (i == 0).then(|| tx.as_raw_fd()));
            assert_eq!(sent.datagrams, total, "{sent:?}");
            assert_eq!(sent.failed, 0);
            assert!(sent.syscalls < total, "{sent:?}");
            if s.gso() {
                assert_eq!(sent.segmented, 16, "{sent:?}");
            }
            assert!(s.is_empty());
            for (rx, expect) in [(&rx1, &expect1), (&rx2, &expect2)] {
                let mut r = Receiver::default();
                let mut got = Vec::new();
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while got.len() < expect.len() && tokio::time::Instant::now() < deadline {
                    let _ = tokio::time::timeout_at(deadline, rx.readable()).await;
                    match r.recv(rx, |from, data| {
                        assert_eq!(from, tx.local_addr().unwrap());
                        got.push(data.to_vec());
                    }) {
                        Ok(n) => assert_eq!(n.truncated, 0),
                        Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                    }
                }
                assert_eq!(&got, expect, "gso={gso}");
            }
        }
    }

    #[tokio::test]
    async fn an_oversize_datagram_is_dropped_and_counted_not_cut() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.send_to(&vec![1u8; MAX_DATAGRAM + 10], rx.local_addr().unwrap())
            .await
            .unwrap();
        tx.send_to(&[2u8; 10], rx.local_addr().unwrap()).await.unwrap();
        let mut r = Receiver::default();
        let mut got = Vec::new();
        let mut truncated = 0;
        for _ in 0..50 {
            rx.readable().await.unwrap();
            if let Ok(n) = r.recv(&rx, |_, d| got.push(d.to_vec())) {
                truncated += n.truncated;
            }
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got, vec![vec![2u8; 10]]);
        assert_eq!(truncated, 1);
    }

    #[tokio::test]
    async fn a_destination_the_kernel_refuses_is_counted_and_the_rest_still_go() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut s = Sender::new(true);
        // An IPv6 destination on an IPv4 socket: the kernel refuses that one datagram.
        s.push(0, "[::1]:9".parse().unwrap(), vec![1; 50]);
        s.push(0, rx.local_addr().unwrap(), vec![2; 50]);
        s.push(1, rx.local_addr().unwrap(), vec![3; 50]);
        let sent = s.flush(|i| (i == 0).then(|| tx.as_raw_fd()));
        assert_eq!((sent.datagrams, sent.failed), (1, 2), "{sent:?}");
        let mut buf = [0u8; 100];
        let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &[2u8; 50]);
    }
}
