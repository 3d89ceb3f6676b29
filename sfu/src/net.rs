//! The node's one UDP socket: the routing index that tells which connection a datagram
//! belongs to ([`Router`], without IO), and batched sends ([`send_batch`], `sendmmsg`).
//!
//! Every peer connection of the node shares one port, so demultiplexing is ours: a
//! datagram goes to the connection its source address is known for, else to the one
//! whose local ICE ufrag its STUN request names (the SFU is ICE lite: the client's
//! checks come first, and an ICE restart may move the client to new ports).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Datagrams per `sendmmsg` (and per receive batch).
pub const BATCH: usize = 64;
/// The UDP socket's receive and send buffers: one socket carries every peer, and the
/// kernel's default 208 KiB overflows (dropping a publisher's packets, lost for every
/// subscriber) whenever the receiving task is descheduled for a few milliseconds.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// The local ufrag a STUN request is for: the first half of its USERNAME attribute.
pub fn stun_local_ufrag(b: &[u8]) -> Option<&str> {
    if b.len() < 20 || b[0] > 1 || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let end = (20 + usize::from(u16::from_be_bytes([b[2], b[3]]))).min(b.len());
    let mut at = 20;
    while at + 4 <= end {
        let ty = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let v = b.get(at + 4..at + 4 + len)?;
        if ty == 0x0006 {
            let user = std::str::from_utf8(v).ok()?;
            return user.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// The routing index over one socket. `K` names a connection.
pub struct Router<K> {
    by_addr: HashMap<SocketAddr, K>,
    by_ufrag: HashMap<String, K>,
    /// What each connection is known by, to forget it when it closes.
    keys: HashMap<K, (Vec<SocketAddr>, Vec<String>)>,
}

impl<K> Default for Router<K> {
    fn default() -> Self {
        Router { by_addr: HashMap::new(), by_ufrag: HashMap::new(), keys: HashMap::new() }
    }
}

impl<K: Copy + Eq + Hash> Router<K> {
    /// Connection `conn` answers to `ufrag` (a second one after an ICE restart).
    pub fn add_ufrag(&mut self, conn: K, ufrag: String) {
        if self.by_ufrag.insert(ufrag.clone(), conn).is_none() {
            self.keys.entry(conn).or_default().1.push(ufrag);
        }
    }

    /// The connection datagram `b` from `from` belongs to; learns `from` when a STUN
    /// request names a known ufrag.
    pub fn route(&mut self, from: SocketAddr, b: &[u8]) -> Option<K> {
        if let Some(&c) = self.by_addr.get(&from) {
            return Some(c);
        }
        let c = *self.by_ufrag.get(stun_local_ufrag(b)?)?;
        self.by_addr.insert(from, c);
        self.keys.entry(c).or_default().0.push(from);
        Some(c)
    }

    /// Forgets connection `conn`.
    pub fn remove(&mut self, conn: K) {
        if let Some((addrs, ufrags)) = self.keys.remove(&conn) {
            for a in addrs {
                self.by_addr.remove(&a);
            }
            for u in ufrags {
                self.by_ufrag.remove(&u);
            }
        }
    }

    /// Connections known.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no connection is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Sets the socket's buffers to [`SOCKET_BUFFER`]: the forced variants pass
/// `net.core.rmem_max` when running as root; otherwise the plain ones cap there.
pub fn size_buffers(sock: &impl AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = sock.as_fd();
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
}

/// Sends `datagrams` with one `sendmmsg` per [`BATCH`] (a partial send goes on with the
/// rest; a full socket buffer is waited out). Datagrams to different peers share a call,
/// which is what batching across peers means here (GSO would need one destination).
pub fn send_batch<B: AsRef<[u8]>>(sock: &impl AsRawFd, datagrams: &[(SocketAddr, B)]) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    for chunk in datagrams.chunks(BATCH) {
        let mut done = 0;
        let mut again = 0;
        while done < chunk.len() {
            let rest = &chunk[done..];
            let addrs: Vec<Option<SockaddrStorage>> =
                rest.iter().map(|(a, _)| Some(SockaddrStorage::from(*a))).collect();
            let iovs: Vec<[std::io::IoSlice<'_>; 1]> =
                rest.iter().map(|(_, b)| [std::io::IoSlice::new(b.as_ref())]).collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(rest.len(), None);
            let cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(sock.as_raw_fd(), &mut headers, &iovs, &addrs, cmsgs, MsgFlags::empty()) {
                Ok(r) => done += r.count().max(1),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) if again < 1000 => {
                    again += 1;
                    std::thread::yield_now();
                }
                // One unreachable peer (ICMP refused) must not stop the others: skip it.
                Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::EHOSTUNREACH) => done += 1,
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stun_usernames_route_to_the_local_ufrag_and_addresses_are_learnt() {
        // A binding request with USERNAME "abcd:wxyz" (then padding) and nothing else.
        let mut b = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        b.extend_from_slice(&[7; 12]);
        b.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        b.extend_from_slice(b"abcd:wxyz\0\0\0");
        assert_eq!(stun_local_ufrag(&b), Some("abcd"));
        assert_eq!(stun_local_ufrag(&b[..19]), None);
        let mut rtp = b.clone();
        rtp[0] = 0x80;
        assert_eq!(stun_local_ufrag(&rtp), None);
        let mut r = Router::default();
        r.add_ufrag(7u64, "abcd".into());
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        assert_eq!(r.route(from, &rtp), None);
        assert_eq!(r.route(from, &b), Some(7));
        // Learnt: later packets (SRTP, not STUN) from that address go there too.
        assert_eq!(r.route(from, &rtp), Some(7));
        // An ICE restart: a second ufrag, a new port; both lead to the connection.
        r.add_ufrag(7, "efgh".into());
        let mut b2 = b.clone();
        b2[24..28].copy_from_slice(b"efgh");
        let moved: SocketAddr = "127.0.0.1:5001".parse().expect("addr");
        assert_eq!(r.route(moved, &b2), Some(7));
        assert_eq!(r.route(moved, &rtp), Some(7));
        r.remove(7);
        assert!(r.is_empty());
        assert_eq!(r.route(from, &rtp), None);
        assert_eq!(r.route(moved, &b2), None);
    }

    #[test]
    fn malformed_stun_is_not_routed() {
        // Lengths that run past the datagram, a non-UTF-8 username.
        let mut b = vec![0x00, 0x01, 0xff, 0xff, 0x21, 0x12, 0xa4, 0x42];
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, b'a']);
        assert_eq!(stun_local_ufrag(&b), None);
        let mut c = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        c.extend_from_slice(&[0; 12]);
        c.extend_from_slice(&[0x00, 0x06, 0x00, 0x02, 0xff, 0xfe, 0, 0]);
        assert_eq!(stun_local_ufrag(&c), None);
    }

    #[test]
    fn sendmmsg_delivers_every_datagram_to_its_address() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let rx: Vec<std::net::UdpSocket> =
            (0..5).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
        let batch: Vec<(SocketAddr, Vec<u8>)> =
            (0..150u32).map(|i| (rx[i as usize % 5].local_addr().expect("addr"), i.to_be_bytes().to_vec())).collect();
        send_batch(&tx, &batch).expect("sent");
        for (k, r) in rx.iter().enumerate() {
            r.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
            let mut got = Vec::new();
            let mut b = [0u8; 16];
            while got.len() < 30 {
                let n = r.recv(&mut b).expect("datagram");
                got.push(u32::from_be_bytes(b[..n].try_into().expect("4 bytes")));
            }
            assert_eq!(got, (0..150u32).filter(|i| *i as usize % 5 == k).collect::<Vec<_>>());
        }
    }
}
