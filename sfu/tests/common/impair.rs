//! Impaired networks for the live-class tests, made on this machine only and removed
//! after: a network namespace joined to the test's by a veth pair, a rate limit on the
//! way into it (`tc` htb: the kernel here has no netem), and a UDP relay of the test's
//! own that adds delay and loss (what netem would have done).
//!
//! ```text
//!   root namespace                          namespace preau-<pid>-<n>
//!   node (HTTP + media) on 10.213.k.1 ──veth── 10.213.k.2: the impaired pupil
//!   relay on 10.213.k.3 (same media port)      (its browser runs here)
//! ```
//!
//! The rate limit applies to what leaves the root namespace for the pupil (its
//! download, where the SFU's estimate matters); the relay impairs only the datagrams of
//! clients inside the namespace, so the teacher's path stays clean.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Namespaces left by a test process that no longer runs (killed at its timeout).
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("preau-").and_then(|r| r.split('-').next()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

/// A network namespace for one impaired client, joined to this one by a veth pair.
pub struct Link {
    /// The namespace's name (`ip netns exec <ns> ...`).
    pub ns: String,
    host_dev: String,
    /// This side's address: the node listens here.
    pub host: Ipv4Addr,
    /// The namespace's address.
    pub inside: Ipv4Addr,
    /// A second address on this side, for the relay.
    pub relay: Ipv4Addr,
}

impl Link {
    /// Creates the namespace and its veth pair, with no limit yet. Panics with the
    /// reason when this machine cannot (the tests need root, as CI has).
    pub fn new() -> Link {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        remove_orphans();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let k = ((pid as u64 * 7 + n) % 250) as u8 + 1;
        let link = Link {
            ns: format!("preau-{pid}-{n}"),
            host_dev: format!("pv{}h{n}", pid % 100_000),
            host: Ipv4Addr::new(10, 213, k, 1),
            inside: Ipv4Addr::new(10, 213, k, 2),
            relay: Ipv4Addr::new(10, 213, k, 3),
        };
        let inner = format!("pv{}n{n}", pid % 100_000);
        let (host, inside, relay) =
            (format!("{}/24", link.host), format!("{}/24", link.inside), format!("{}/24", link.relay));
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &link.ns],
            vec!["ip", "link", "add", &link.host_dev, "type", "veth", "peer", "name", &inner],
            vec!["ip", "link", "set", &inner, "netns", &link.ns],
            vec!["ip", "addr", "add", &host, "dev", &link.host_dev],
            vec!["ip", "addr", "add", &relay, "dev", &link.host_dev],
            vec!["ip", "link", "set", &link.host_dev, "up"],
            vec!["ip", "-n", &link.ns, "addr", "add", &inside, "dev", &inner],
            vec!["ip", "-n", &link.ns, "link", "set", &inner, "up"],
            vec!["ip", "-n", &link.ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = run(&step) {
                panic!("cannot make the test network (root and iproute2 needed, as on CI): {e}");
            }
        }
        link
    }

    /// Limits what reaches the namespace to `kbit` kbit/s, behind a queue of `queue`
    /// bytes (a home router's buffer); called again, changes the limit in place.
    pub fn limit(&self, kbit: u32, queue: u32) {
        let rate = format!("{kbit}kbit");
        // The bucket holds at least a few full packets at any rate.
        let burst = format!("{}", (kbit as u64 * 1000 / 8 / 100).max(6000));
        let verb = if self.limited() { "change" } else { "add" };
        if verb == "add" {
            run(&["tc", "qdisc", "add", "dev", &self.host_dev, "root", "handle", "1:", "htb", "default", "10"])
                .expect("tc htb");
        }
        run(&[
            "tc",
            "class",
            verb,
            "dev",
            &self.host_dev,
            "parent",
            "1:",
            "classid",
            "1:10",
            "htb",
            "rate",
            &rate,
            "ceil",
            &rate,
            "burst",
            &burst,
            "cburst",
            &burst,
        ])
        .expect("tc class");
        if verb == "add" {
            let limit = queue.to_string();
            run(&[
                "tc",
                "qdisc",
                "add",
                "dev",
                &self.host_dev,
                "parent",
                "1:10",
                "handle",
                "10:",
                "bfifo",
                "limit",
                &limit,
            ])
            .expect("tc bfifo");
        }
    }

    fn limited(&self) -> bool {
        Command::new("tc")
            .args(["class", "show", "dev", &self.host_dev])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("1:10"))
    }

    /// What the limit dropped so far (packets), from `tc -s`.
    pub fn dropped(&self) -> u64 {
        let Ok(out) = Command::new("tc").args(["-s", "qdisc", "show", "dev", &self.host_dev]).output() else {
            return 0;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("dropped ")
            .skip(1)
            .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the host end removes the pair; then the namespace.
        let _ = run(&["ip", "link", "del", &self.host_dev]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

/// Delay and loss for the clients at one address, on a UDP relay that stands in front
/// of the node's media port: the node announces the relay's address (`--public-ip`),
/// each client gets its own socket towards the node (so the node sees one address per
/// client) and replies go back the same way.
pub struct Relay {
    /// The relay's address: same port as the node's media.
    pub addr: SocketAddr,
    /// The impaired clients' datagrams carried and dropped, both ways.
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small deterministic generator: the same losses every run.
struct Lcg(u64);

impl Lcg {
    fn chance(&mut self, p: f64) -> bool {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

impl Relay {
    /// The relay's socket, bound first: the node takes the same port.
    pub async fn bind(ip: IpAddr) -> UdpSocket {
        UdpSocket::bind(SocketAddr::new(ip, 0)).await.expect("relay bind")
    }

    /// Forwards between clients reaching `front` and the node at `node`; datagrams of
    /// clients at `impaired` are delayed by `delay` and dropped with probability
    /// `loss`, each way.
    pub fn start(front: UdpSocket, node: SocketAddr, impaired: IpAddr, delay: Duration, loss: f64) -> Relay {
        let front = Arc::new(front);
        let addr = front.local_addr().expect("relay addr");
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (f, d) = (forwarded.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            // Aborting the relay drops this set, which ends the tasks in it.
            let mut tasks = tokio::task::JoinSet::new();
            // Delayed datagrams leave in order: one queue, one constant delay.
            let (late_tx, mut late_rx) = mpsc::unbounded_channel::<(Instant, Arc<UdpSocket>, Vec<u8>, SocketAddr)>();
            tasks.spawn(async move {
                while let Some((at, sock, data, to)) = late_rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    let _ = sock.send_to(&data, to).await;
                }
            });
            let (back_tx, mut back_rx) = mpsc::unbounded_channel::<(Vec<u8>, SocketAddr)>();
            let mut up: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut rng = Lcg(18);
            // Knobs for finding a failure's cause: RELAY_DOWN_ONLY loses only what goes to the
            // impaired clients; RELAY_TRACE=<file> writes a line per RTP datagram sent
            // to them (microseconds, SSRC, payload type, sequence number, size, lost).
            let down_only = std::env::var("RELAY_DOWN_ONLY").is_ok();
            let mut trace = std::env::var("RELAY_TRACE").ok().and_then(|f| std::fs::File::create(f).ok());
            let t0 = Instant::now();
            let mut buf = vec![0u8; 65536];
            loop {
                // From a client towards the node, or from the node back to a client.
                let (data, client, towards_node) = tokio::select! {
                    r = front.recv_from(&mut buf) => {
                        let Ok((n, src)) = r else { return };
                        (buf[..n].to_vec(), src, true)
                    }
                    Some((data, client)) = back_rx.recv() => (data, client, false),
                };
                let hit = client.ip() == impaired;
                let lose = hit && (!down_only || !towards_node) && rng.chance(loss);
                // RTP, not RTCP (payload types 192-223 with the marker bit): SRTP leaves
                // the header in clear.
                if let Some(t) = trace.as_mut()
                    && hit
                    && !towards_node
                    && data.len() >= 12
                    && data[0] >> 6 == 2
                    && !(192..=223).contains(&data[1])
                {
                    use std::io::Write;
                    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
                    let seq = u16::from_be_bytes([data[2], data[3]]);
                    let (at, pt, len) = (t0.elapsed().as_micros(), data[1] & 0x7f, data.len());
                    let _ = writeln!(t, "{at} {ssrc} {pt} {seq} {len} {}", lose as u8);
                }
                if lose {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if hit {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                let (sock, to) = if towards_node {
                    let sock = match up.get(&client) {
                        Some(s) => s.clone(),
                        None => {
                            let Ok(s) = UdpSocket::bind(SocketAddr::new(node.ip(), 0)).await else { return };
                            let s = Arc::new(s);
                            let (s2, tx) = (s.clone(), back_tx.clone());
                            tasks.spawn(async move {
                                let mut b = vec![0u8; 65536];
                                while let Ok((n, _)) = s2.recv_from(&mut b).await {
                                    if tx.send((b[..n].to_vec(), client)).is_err() {
                                        return;
                                    }
                                }
                            });
                            up.insert(client, s.clone());
                            s
                        }
                    };
                    (sock, node)
                } else {
                    (front.clone(), client)
                };
                if hit && !delay.is_zero() {
                    let _ = late_tx.send((Instant::now() + delay, sock, data, to));
                } else {
                    let _ = sock.send_to(&data, to).await;
                }
            }
        });
        Relay { addr, forwarded, dropped, task }
    }
}
