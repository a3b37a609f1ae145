"""One sensor's timed job: when to poll, and a poll that cannot hang the loop.

Polls are due every ``interval`` seconds (on wall-clock multiples of it with
``align``), each delayed by a random part of ``jitter`` so that many nodes
do not hit a shared bus at once.  The next poll is scheduled before the
driver is called, so a slow driver never shifts the schedule; a read that
is still running when its ``timeout`` passes fails the poll, and while it
hangs on, later polls of that sensor fail at once ("busy") instead of piling
up threads.  Blocking drivers run in the sensor's own thread, so one that
hangs delays no other sensor and no reactor work.
"""

import queue
import threading

from twisted.internet import defer
from twisted.python.failure import Failure


class PollTimeout(Exception):
    pass


class SensorThread:
    """A daemon thread that runs one sensor's blocking reads, one at a time.

    A daemon, so a driver stuck in a read cannot keep the node from exiting.
    """

    def __init__(self, name, reactor):
        self.reactor = reactor
        self.jobs = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name=f"stationd-sensor-{name}", daemon=True)
        self.thread.start()

    def __call__(self, function):
        d = defer.Deferred()
        self.jobs.put((function, d))
        return d

    def _work(self):
        while True:
            function, d = self.jobs.get()
            if function is None:
                return
            try:
                result = function()
            except BaseException:
                result = Failure()
            self.reactor.callFromThread(_fire, d, result)

    def stop(self):
        self.jobs.put((None, None))


def _fire(d, result):
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


class Poller:
    def __init__(self, sensor, driver, clock, run_blocking, on_reading, on_failure, rng, on_late=None):
        self.sensor, self.driver, self.clock = sensor, driver, clock
        self.run_blocking, self.on_reading, self.on_failure = run_blocking, on_reading, on_failure
        self.on_late = on_late or (lambda seconds: None)
        self.rng = rng
        self.busy = False
        self._base = None  # the grid time of the next poll, before jitter
        self._call = None

    def start(self):
        interval, now = self.sensor["interval"], self.clock.seconds()
        # Aligned: the next multiple of the interval; else at once.
        self._base = (now // interval + 1) * interval if self.sensor["align"] else now
        self._schedule(now)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, now):
        due = self._base + self.rng() * self.sensor["jitter"]
        self._call = self.clock.callLater(max(0.0, due - now), self._poll, due)

    def _poll(self, due):
        now = self.clock.seconds()
        self.on_late(now - due)
        interval = self.sensor["interval"]
        while self._base <= now:  # a poll missed (the machine slept) is skipped, not made up
            self._base += interval
        self._schedule(now)
        if self.busy:
            self.on_failure(self.sensor["name"], PollTimeout("the previous read has not returned yet"))
            return None
        return self.poll(now)

    def poll(self, now):
        """One read with its timeout; reports to on_reading or on_failure.  Returns a Deferred."""
        self.busy = True
        if self.driver.blocking:
            read = self.run_blocking(self.driver.read)
        else:
            read = defer.maybeDeferred(self.driver.read)
        result = defer.Deferred()
        timeout = self.sensor["timeout"]

        def settle(outcome):
            self.busy = False
            if timer.active():
                timer.cancel()
            if not result.called:
                _fire(result, outcome)

        def expire():
            if not self.driver.blocking:
                read.cancel()  # a Deferred read can be abandoned; a thread cannot
            if not result.called:
                result.errback(PollTimeout(f"no answer within {timeout:g} s"))

        timer = self.clock.callLater(timeout, expire)
        read.addBoth(settle)
        result.addCallbacks(lambda values: self.on_reading(self.sensor["name"], now, values),
                            lambda failure: self.on_failure(self.sensor["name"], failure.value))
        return result
