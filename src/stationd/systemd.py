"""Telling systemd how the node is (``Type=notify``): the sd_notify datagrams, without libsystemd.

``READY=1`` once every listener listens and what the previous run left in the spool is
stored (or waits for the database: uploads are spooled meanwhile); ``RELOADING=1`` and
``READY=1`` around a reload; ``STOPPING=1`` when the node begins to stop; ``WATCHDOG=1``
at half of ``WATCHDOG_USEC``, from the reactor, so a stuck reactor is restarted.  Without
``NOTIFY_SOCKET`` (not run by systemd) none of this happens.
"""

import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class Notifier(Service):
    """``waits_for``: Deferreds that fire when the node is ready (listeners, the writer's recovery)."""

    def __init__(self, waits_for: Iterable[Any], clock: IReactorTime, environ: Mapping[str, str] | None = None
                 ) -> None:
        self.setName("systemd")
        environ = os.environ if environ is None else environ
        self.waits_for, self.clock = waits_for, clock
        path = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path  # (@: the abstract namespace)
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        mine = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        self.watchdog_seconds = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() and mine else None
        self._watchdog = task.LoopingCall(self.notify, "WATCHDOG=1")
        self._watchdog.clock = clock
        self._failed = False

    def notify(self, *states: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(states).encode("utf-8"), self.address)
        except OSError as e:
            if not self._failed:
                log.warn("systemd: cannot notify {address!r} ({error}); the unit may time out",
                         address=self.address, error=e)
            self._failed = True

    def startService(self) -> None:
        super().startService()
        if self.address:
            # (deferLater: not before the reactor runs, when the node's SIGHUP handler is in place;
            # a reload asked for earlier would have killed it.)
            running = task.deferLater(self.clock, 0, lambda: None)
            ready = defer.gatherResults([*self.waits_for, running], consumeErrors=True)
            ready.addCallback(lambda _: self.notify("READY=1", "STATUS=serving"))
            ready.addErrback(lambda failure: log.failure("systemd: not ready", failure))
        if self.watchdog_seconds:
            self._watchdog.start(self.watchdog_seconds, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._watchdog.running:
            self._watchdog.stop()
        self.notify("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        # (MONOTONIC_USEC: what systemd 253 and later ask of a reload notice.)
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self) -> None:
        self.notify("READY=1", "STATUS=serving")
