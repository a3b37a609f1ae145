"""Guards against credential guessing: a per-client limit on failed API keys and
passwords, a fair, bounded queue of password (scrypt) checks, and an access log
that summarises a flood of failures instead of writing a line each.

- ``FailureLimiter``: each client (source address) may fail ``limit`` times in
  a window of ``window`` seconds (the window starts at its first failure);
  after that it is refused, without any credential being looked at, until
  the window ends (JSON routes: 429 with ``Retry-After``; HiSPARC ``/upload``:
  ``400`` with ``Retry-After``, the code stations retry on).  A limited client
  learns nothing, even when it sends a right password.
- ``PasswordChecks``: scrypt derivations run one at a time (16 MiB and a core
  for tens of ms each), taken round-robin between stations, so a station's
  first check waits for at most one derivation of each other station with
  checks waiting, never behind a queue of guesses for one.  At most
  ``per_station`` checks wait (or run) for one station and ``per_client`` for
  one client; beyond that a check is refused at once.  Passwords already
  checked (``stations.remembered``) never come here: a station whose right
  password is known is answered without waiting for anything.
- ``FailureLog``: per client, the first ``sample`` failed-credential requests
  of an interval are logged as usual; the rest are counted and written as one
  line per client when the interval ends.
"""

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from stationd.store import stations
from stationd.web.connections import client_key

MAX_CLIENTS = 10000  # clients tracked at once (an attacker with many addresses must not grow memory)


def client_of(request: Any) -> str:
    """Who sent the request, as the connection cap counts clients (web.connections.client_key): its
    IPv4 address or its IPv6 /64, since one host often has a whole /64 and would otherwise get a
    limit an address; for UNIX sockets and the like its transport's type name."""
    address = request.getClientAddress()
    return client_key(address) or type(address).__name__


class FailureLimiter:
    def __init__(self, limit: int, window: float, clock: IReactorTime) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._clients: dict[str, list[float]] = {}  # client -> [window start, failures in it]

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until ``client`` may try again; None if it is not limited."""
        entry = self._clients.get(client)
        if entry is None or self.limit <= 0:
            return None
        left = entry[0] + self.window - self.clock.seconds()
        if left <= 0:
            del self._clients[client]
            return None
        return max(1, int(left + 0.999)) if entry[1] >= self.limit else None

    def failed(self, client: str) -> None:
        if self.limit <= 0:
            return
        now = self.clock.seconds()
        entry = self._clients.get(client)
        if entry is None or now >= entry[0] + self.window:
            if entry is None and len(self._clients) >= MAX_CLIENTS:
                self._forget_old(now)
            self._clients[client] = [now, 1]
        else:
            entry[1] += 1

    def _forget_old(self, now: float) -> None:
        for client, (start, _) in list(self._clients.items()):
            if now >= start + self.window:
                del self._clients[client]
        while len(self._clients) >= MAX_CLIENTS:  # all current: the oldest windows go first
            del self._clients[next(iter(self._clients))]


class PasswordChecks:
    def __init__(self, per_station: int, per_client: int,
                 verify: Callable[[str, str], bool] | None = None,
                 run: Callable[..., defer.Deferred] = deferToThread) -> None:
        self.per_station, self.per_client = per_station, per_client
        self.verify, self.run = verify, run  # (verify None: stations.verify_password, looked up at each check)
        self._queues: dict[str, deque] = {}  # station -> its waiting checks (in the order they came)
        self._station_load: dict[str, int] = {}  # waiting or running, by station
        self._client_load: dict[str, int] = {}  # and by client
        self._running = False
        self._served: dict[str, int] = {}  # station -> the turn it was last served (stations queued)
        self._turn = 0

    def check(self, station: str, client: str, stored: str, password: str) -> "defer.Deferred[bool | None]":
        """Whether ``password`` matches ``stored``; None (at once) if the station's or the client's
        queue is full."""
        if (self._station_load.get(station, 0) >= self.per_station
                or self._client_load.get(client, 0) >= self.per_client):
            return defer.succeed(None)
        self._station_load[station] = self._station_load.get(station, 0) + 1
        self._client_load[client] = self._client_load.get(client, 0) + 1
        answer: defer.Deferred[bool | None] = defer.Deferred()
        self._queues.setdefault(station, deque()).append((client, stored, password, answer))
        self._next()
        return answer

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def _next(self) -> None:
        while not self._running and self._queues:
            # The station served longest ago (or not since its queue last emptied) goes next:
            # a station new to the queue waits for the derivation running, not behind another's.
            station = min(self._queues, key=lambda name: self._served.get(name, -1))
            queue = self._queues[station]
            client, stored, password, answer = queue.popleft()
            self._turn += 1
            self._served[station] = self._turn  # (kept while the station has checks waiting or running)
            if not queue:
                del self._queues[station]
            known = stations.remembered(stored, password)  # (checked meanwhile for another upload)
            if known is not None:
                self._done(station, client)
                answer.callback(known)
                continue
            self._running = True
            d = defer.maybeDeferred(self.run, self.verify or stations.verify_password, stored, password)
            d.addBoth(self._finished, station, client, answer)

    def _finished(self, result: Any, station: str, client: str, answer: defer.Deferred) -> None:
        self._running = False
        self._done(station, client)
        if isinstance(result, Failure):
            answer.errback(result)
        else:
            answer.callback(result)
        self._next()

    def _done(self, station: str, client: str) -> None:
        for load, name in ((self._station_load, station), (self._client_load, client)):
            load[name] -= 1
            if not load[name]:
                del load[name]
        if station not in self._station_load:
            self._served.pop(station, None)


access_log = Logger(namespace="stationd.access")


class FailureLog:
    def __init__(self, clock: IReactorTime, interval: float = 60.0, sample: int = 5,
                 log: Logger = access_log) -> None:
        self.clock, self.interval, self.sample, self.log = clock, interval, sample, log
        self._seen: dict[str, int] = {}  # client -> failed-credential requests this interval
        self._flush: IDelayedCall | None = None

    def suppress(self, client: str) -> bool:
        """Count a failed-credential request of ``client``; True: do not log it (it is summarised)."""
        if self._flush is None:
            self._flush = self.clock.callLater(self.interval, self.summarise)
        if client not in self._seen and len(self._seen) >= MAX_CLIENTS:
            client = "(other clients)"
        seen = self._seen[client] = self._seen.get(client, 0) + 1
        return seen > self.sample

    def summarise(self) -> None:
        """One line per client that had requests not logged in the interval now over."""
        self._flush = None
        seen, self._seen = self._seen, {}
        for client, count in seen.items():
            if count > self.sample:
                self.log.warn(
                    "{client}: {suppressed} more failed-credential requests not logged "
                    "(of {count} in {interval:.0f} s)",
                    client=client, suppressed=count - self.sample, count=count, interval=self.interval)

    def stop(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self.summarise()
