"""A worker process of a node with [node] workers > 1 (stationd.workers starts it): the node as
stationd.service.wire() builds it for worker N, on the listening sockets it inherits."""

import argparse
import os
import signal
import socket
import sys
import threading
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger, globalLogBeginner

from stationd import config as configuration
from stationd.logs import NodeLog
from stationd.service import wire
from stationd.workers import READY

log = Logger()


def _watch_parent(reactor: Any) -> None:
    """Stop when stdin (a pipe from the twistd process) closes: the parent is gone."""
    def wait() -> None:
        while os.read(0, 4096):
            pass
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=wait, name="stationd-parent-watch", daemon=True).start()


def _family(fd: int) -> socket.AddressFamily:
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return probe.family
    finally:
        probe.close()


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor as global_reactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    parser = argparse.ArgumentParser(prog="stationd-worker")
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--config")
    parser.add_argument("--http-fds", default="")
    parser.add_argument("--https-fds", default="")
    args = parser.parse_args(argv)
    reactor: Any = global_reactor  # (twisted types it without adoptStreamPort and callFromThread)
    config = configuration.load(args.config)
    observer = NodeLog(config["log"], pipe=sys.stdout)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    node = wire(config, reactor, worker=args.worker, log_observer=observer)
    ports = []
    for fds, tls in ((args.http_fds, False), (args.https_fds, True)):
        for fd in (int(fd) for fd in fds.split(",") if fd):
            tls_creator = node.service.tls if tls else None
            factory = TLSMemoryBIOFactory(tls_creator, False, node.site) if tls_creator else node.site
            ports.append(reactor.adoptStreamPort(fd, _family(fd), factory))
            os.close(fd)  # (the reactor has its own copy)

    def stop() -> defer.Deferred[None]:
        for port in ports:
            port.stopListening()
        return node.service.stopService()

    reactor.callWhenRunning(node.service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(node.service.reload))
    log.info("Worker {number} takes signals", number=args.worker, **{READY: True})  # (a SIGHUP no longer kills it)
    _watch_parent(reactor)
    reactor.run()


if __name__ == "__main__":
    main()
