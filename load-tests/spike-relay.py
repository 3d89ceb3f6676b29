#!/usr/bin/env python3
"""A lossy UDP relay for the spike's NACK/RTX check (the kernel here has no netem).

Clients send to --listen; each client gets its own upstream socket towards --to, so the
SFU sees one address per client; replies go back the same way. Each datagram is dropped
with probability --loss in each direction. Counts are printed at exit (SIGTERM).
    spike-relay.py --listen 127.0.0.1:18492 --to 127.0.0.1:18491 --loss 0.02
"""
import argparse, random, selectors, signal, socket, sys

ap = argparse.ArgumentParser()
ap.add_argument("--listen", required=True)
ap.add_argument("--to", required=True)
ap.add_argument("--loss", type=float, default=0.02)
ap.add_argument("--seed", type=int, default=20)
a = ap.parse_args()
rng = random.Random(a.seed)
addr = lambda s: (s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1]))
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(addr(a.listen))
front.setblocking(False)
sfu = addr(a.to)
sel = selectors.DefaultSelector()
sel.register(front, selectors.EVENT_READ, None)
up = {}  # client address -> upstream socket
counts = {"forwarded": 0, "dropped": 0}

def stop(*_):
    print(counts, file=sys.stderr, flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
while True:
    for key, _ in sel.select():
        s, client = key.fileobj, key.data
        while True:
            try:
                data, src = s.recvfrom(65536)
            except BlockingIOError:
                break
            if rng.random() < a.loss:
                counts["dropped"] += 1
                continue
            counts["forwarded"] += 1
            if client is None:  # from a client: towards the SFU
                u = up.get(src)
                if u is None:
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.bind(("127.0.0.1", 0))
                    u.setblocking(False)
                    up[src] = u
                    sel.register(u, selectors.EVENT_READ, src)
                u.sendto(data, sfu)
            else:  # from the SFU: back to its client
                front.sendto(data, client)
