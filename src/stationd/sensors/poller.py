"""One sensor's timed job: when to poll, and a poll that cannot hang the loop.

Polls are due every ``interval`` seconds (on wall-clock multiples of it with
``align``), each delayed by a random part of ``jitter`` so that many nodes
do not hit a shared bus at once.  The next poll is scheduled before the
driver is called, so a slow driver never shifts the schedule; a read that
is still running when its ``timeout`` passes fails the poll, and while it
hangs on, later polls of that sensor fail at once instead of piling up.
Blocking drivers run in the sensor's own thread, so one that hangs delays
no other sensor and no reactor work.

The reactor can be busy for tens of milliseconds (a burst of uploads), so
for a sensor thread the reactor hands over each poll ``lead`` seconds early
and the thread starts it on time by the wall clock: a poll is then late only
by the thread's wake-up, not by whatever the reactor was doing.  Where the
system allows it, sensor threads run at the lowest real-time priority: on a
machine whose cores are busy (the node under load, its neighbours), a woken
thread otherwise waits for a core for 10-20 ms (docs/performance.rst,
Sensors).
"""

import os
import queue
import threading
import time

from twisted.internet import defer
from twisted.python.failure import Failure


class PollTimeout(Exception):
    pass


class SensorThread:
    """A daemon thread that runs one sensor's blocking reads, one at a time, each when due.

    A daemon, so a driver stuck in a read cannot keep the node from exiting.
    """

    def __init__(self, name, reactor):
        self.reactor = reactor
        self.jobs = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name=f"stationd-sensor-{name}", daemon=True)
        self.thread.start()
        self.realtime_error = realtime(self.thread)

    def __call__(self, function, due):
        """A Deferred of (the time the read started, its result), started at ``due`` (epoch seconds)."""
        d = defer.Deferred()
        self.jobs.put((function, due, d))
        return d

    def _work(self):
        while True:
            function, due, d = self.jobs.get()
            if function is None or self.stopping.wait(max(0.0, due - time.time())):
                return
            started = time.time()
            try:
                result = (started, function())
            except BaseException:
                result = Failure()
            self.reactor.callFromThread(_fire, d, result)

    def stop(self):
        self.stopping.set()
        self.jobs.put((None, None, None))


def realtime(thread):
    """Put ``thread`` on SCHED_FIFO priority 1 (children it starts go back to normal); None, or why not.

    Allowed to root, to CAP_SYS_NICE, or where RLIMIT_RTPRIO is 1 or more
    (etc/stationd.service sets LimitRTPRIO=1).  The kernel keeps 5 % of
    each second for normal threads, so even a driver that spins cannot
    freeze the machine.
    """
    try:
        os.sched_setscheduler(thread.native_id, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    except (OSError, AttributeError) as e:  # AttributeError: not Linux
        return str(e) or type(e).__name__
    return None


def _fire(d, result):
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


class Poller:
    def __init__(self, sensor, driver, clock, run_blocking, on_reading, on_failure, rng, on_late=None, lead=0.0):
        self.sensor, self.driver, self.clock = sensor, driver, clock
        self.lead = min(lead, sensor["interval"] / 4) if driver.blocking else 0.0
        self.run_blocking, self.on_reading, self.on_failure = run_blocking, on_reading, on_failure
        self.on_late = on_late or (lambda seconds: None)
        self.rng = rng
        self.reads = 0  # handed over and not returned (a sensor thread may hold the next while one runs)
        self.overdue_at = None  # when the last read handed over counts as stuck if it has not returned
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
        self._call = self.clock.callLater(max(0.0, due - self.lead - now), self._poll, due)

    def _poll(self, due):
        now = self.clock.seconds()
        interval = self.sensor["interval"]
        while self._base <= max(now, due):  # a poll missed (the machine slept) is skipped, not made up
            self._base += interval
        self._schedule(now)
        if self.reads >= 2 or (self.reads and now >= self.overdue_at):
            self.on_failure(self.sensor["name"], PollTimeout("the previous read has not returned yet"))
            return None
        return self.poll(due)

    def poll(self, due):
        """One read, due at ``due``, with its timeout; reports to on_reading or on_failure."""
        self.reads += 1
        self.overdue_at = due + self.sensor["timeout"]
        if self.driver.blocking:
            read = self.run_blocking(self.driver.read, due)
        else:
            read = defer.maybeDeferred(self.driver.read).addCallback(lambda values: (self.clock.seconds(), values))
        result = defer.Deferred()
        timeout = self.sensor["timeout"] + max(0.0, due - self.clock.seconds())

        def settle(outcome):
            self.reads -= 1
            if timer.active():
                timer.cancel()
            if not result.called:
                _fire(result, outcome)

        def expire():
            if not self.driver.blocking:
                read.cancel()  # a Deferred read can be abandoned; a thread cannot
            if not result.called:
                result.errback(PollTimeout(f"no answer within {self.sensor['timeout']:g} s"))

        timer = self.clock.callLater(timeout, expire)
        read.addBoth(settle)
        result.addCallbacks(self._read, lambda failure: self.on_failure(self.sensor["name"], failure.value),
                            callbackArgs=(due,))
        return result

    def _read(self, started_values, due):
        started, values = started_values
        self.on_late(max(0.0, started - due))
        self.on_reading(self.sensor["name"], started, values)
