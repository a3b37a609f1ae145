"""Sensors: polled on timers, their readings kept, alarms raised (docs/sensors.rst).

Every [sensor:NAME] section becomes a Poller with its driver.  A reading
sets the Prometheus gauges at once (fresh values whether or not anyone asks
over HTTP), is remembered as the sensor's latest, checked against the
field's alarm thresholds, and queued for the store, which gets the queue
every FLUSH_SECONDS in one transaction (a write a second per sensor would
wear an SD card for nothing).  Every COMPACT_SECONDS old readings are
downsampled and expired.
"""

import math
import random
import sys
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stationd.metrics import Metrics
from stationd.sensors.poller import Poller, SensorThread
from stationd.store import Store
from stationd.store import sensors as history
from stationd.store.events import digest, event_ids, store_batches

log = Logger()
FLUSH_SECONDS = 10.0
COMPACT_SECONDS = 600.0
LEAD_SECONDS = 0.25  # a sensor thread gets its poll this early and starts it on time (poller.py)
# How long a woken sensor thread may wait for a busy reactor to give up the
# GIL before it is made to (Python's default is 5 ms): under ingest load the
# p99 lateness of polls went from 9-22 to 5-9 ms (docs/performance.rst).
GIL_SWITCH_SECONDS = 0.001


class Alarms:
    """Per field: above ``alarm_above`` raises, below it minus the hysteresis clears
    (and the mirror image for ``alarm_below``), so a value hovering at a
    threshold raises once, not at every poll."""

    def __init__(self, sensor):
        self.sensor = sensor
        self.raised = set()  # (field, "above" | "below")

    def check(self, field, value):
        """[(kind, threshold, "raised" | "cleared")] for this value."""
        changes = []
        hysteresis = self.sensor["hysteresis"].get(field, self.sensor["hysteresis"].get("*", 0.0))
        for kind, thresholds in (("above", self.sensor["alarm_above"]), ("below", self.sensor["alarm_below"])):
            threshold = thresholds.get(field, thresholds.get("*"))
            if threshold is None:
                continue
            sign = 1 if kind == "above" else -1
            key = (field, kind)
            if key not in self.raised and sign * (value - threshold) > 0:
                self.raised.add(key)
                changes.append((kind, threshold, "raised"))
            elif key in self.raised and sign * (value - threshold) < -hysteresis:
                self.raised.discard(key)
                changes.append((kind, threshold, "cleared"))
        return changes


class Sensors(Service):
    """Polls the sensors, keeps their history and alarms; alarm events are
    stored as station ``node_name``'s, of origin ``node_id``.  ``reactor``
    runs the sensor threads, ``clock`` times the polls (tests: a task.Clock)."""

    def __init__(self, store: Store, metrics: Metrics, node_name: str, node_id: str, reactor,
                 clock: IReactorTime | None = None, rng: Callable[[], float] = random.random,
                 run_blocking: Callable | None = None):
        self.setName("sensors")  # (as an instance attribute: twisted's Service types the class one None)
        self.store, self.metrics = store, metrics
        self.node_name, self.node_id = node_name, node_id
        self.reactor, self.clock, self.rng = reactor, clock or reactor, rng
        self._run_blocking = run_blocking  # tests: f(read, due) -> Deferred (started, values); else a thread a sensor
        self.sensors: dict[str, dict] = {}  # name -> its [sensor:NAME] section
        self.pollers: dict[str, Poller] = {}
        self.threads: dict[str, SensorThread] = {}
        self.alarms: dict[str, Alarms] = {}
        self.latest: dict[str, tuple[int, dict]] = {}  # name -> (time_ns, {field: (value, unit)})
        self.failing: dict[str, str] = {}  # name -> the error while it fails
        self.pending: list[tuple] = []  # (sensor, field, time_ns, value) not yet in the store
        self._flushing = defer.DeferredLock()  # one flush at a time (flush())
        self.alarm_listeners: list[Callable] = []  # f(sensor, field, value, kind, threshold, state)
        self._switch_interval = None  # Python's, while the threads run with GIL_SWITCH_SECONDS
        self._flusher = _loop(self.flush, self.clock)
        self._compactor = _loop(self.compact, self.clock)

    def add(self, sensor, driver):
        """A sensor to poll (from the start, or at once once running)."""
        name = sensor["name"]
        self.sensors[name] = sensor
        self.alarms[name] = Alarms(sensor)
        threaded = self._run_blocking is None
        runner = (lambda function, due: self.threads[name](function, due)) if threaded else self._run_blocking
        self.pollers[name] = Poller(sensor, driver, self.clock, runner, self._reading, self._failed, self.rng,
                                    self.metrics.sensor_poll_lateness.observe, lead=LEAD_SECONDS if threaded else 0)
        if self.running:
            self._start(name)
            self._start_loops()

    def remove(self, name):
        """Stop polling ``name`` and forget it (its stored history stays, to expire with the store's)."""
        poller = self.pollers.pop(name)
        poller.stop()
        thread = self.threads.pop(name, None)
        if thread is not None:
            thread.stop()
        close = getattr(poller.driver, "close", None)
        if close is not None:
            close()
        for field, (_, unit) in self.latest.pop(name, (0, {}))[1].items():
            self.metrics.sensor_value.remove(name, field, unit)
        del self.sensors[name], self.alarms[name]
        self.failing.pop(name, None)

    def changes(self, sections):
        """What a reloaded configuration's sensors ({name: section}) change: the names
        (added, changed, removed)."""
        def same(a, b):
            return {k: v for k, v in a.items() if k != "origin"} == {k: v for k, v in b.items() if k != "origin"}

        return (sorted(set(sections) - set(self.sensors)),
                sorted(name for name in set(sections) & set(self.sensors) if not same(sections[name],
                                                                                       self.sensors[name])),
                sorted(set(self.sensors) - set(sections)))

    def reconfigure(self, sections, drivers):
        """Take up a reloaded configuration's sensors: those added start and those changed
        restart, with their new ``drivers`` ({name: driver}, made by the caller, who refuses the
        reload if one cannot be); those left out stop; the others poll on undisturbed."""
        added, changed, removed = self.changes(sections)
        for name in removed + changed:
            self.remove(name)
        for name in added + changed:
            self.add(sections[name], drivers[name])

    def startService(self):
        super().startService()
        for name in self.pollers:
            self._start(name)
        refused = {thread.realtime_error for thread in self.threads.values()} - {None}
        if refused:
            log.info("Sensor threads run at normal priority (real-time priority refused: {why}); under heavy load "
                     "polls may start 10-20 ms late (LimitRTPRIO=1 in the systemd unit allows it; docs/sensors.rst)",
                     why="; ".join(sorted(refused)))
        elif self.threads:
            log.info("Sensor threads run at real-time priority (SCHED_FIFO 1)")
        self._start_loops()

    def _start(self, name):
        poller = self.pollers[name]
        if poller.driver.blocking and self._run_blocking is None:
            self.threads[name] = SensorThread(name, self.reactor)
            if self._switch_interval is None:
                self._switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(GIL_SWITCH_SECONDS)
        poller.start()

    def _start_loops(self):
        if self.sensors and not self._flusher.running:
            self._flusher.start(FLUSH_SECONDS, now=False).addErrback(self._stopped_by, "flush")
            self._compactor.start(COMPACT_SECONDS, now=True).addErrback(self._stopped_by, "compact")

    def _stopped_by(self, failure, what):
        log.failure("Sensor readings: {what} loop stopped", failure, what=what)

    def stopService(self):
        super().stopService()
        for poller in self.pollers.values():
            poller.stop()
        for thread in self.threads.values():
            thread.stop()
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        for loop in (self._flusher, self._compactor):
            if loop.running:
                loop.stop()
        return defer.ensureDeferred(self.flush())

    # ---- readings

    def _reading(self, name, seconds, values):
        sensor = self.sensors.get(name)
        if sensor is None:  # a read that returned after its sensor was removed by a reload
            return None
        kept = {field: (float(value), unit) for field, (value, unit) in values.items()
                if (not sensor["fields"] or field in sensor["fields"]) and _finite(value)}
        if not kept:
            return self._failed(name, ValueError("the driver returned no numeric field"))
        if name in self.failing:
            log.info("Sensor {name}: reading again after {error}", name=name, error=self.failing.pop(name))
        time_ns = round(seconds * 1e6) * 1000  # microseconds: what a float of seconds holds exactly
        self.latest[name] = (time_ns, kept)
        for field, (value, unit) in kept.items():
            self.metrics.sensor_value.labels(name, field, unit).set(value)
            self.pending.append((name, field, time_ns, value))
            for kind, threshold, state in self.alarms[name].check(field, value):
                self._alarm(name, field, value, kind, threshold, state, time_ns)
        return None

    def _failed(self, name, error):
        if name not in self.sensors:
            return
        self.metrics.sensor_errors.labels(name).inc()
        reason = f"{type(error).__name__}: {error}"
        if name not in self.failing:
            log.warn("Sensor {name}: read failed ({reason}); polling goes on", name=name, reason=reason)
        self.failing[name] = reason

    def _alarm(self, name, field, value, kind, threshold, state, time_ns):
        (log.warn if state == "raised" else log.info)(
            "Sensor {name}: {field} = {value:g} {state} the {kind} {threshold:g} alarm", name=name, field=field,
            value=value, kind=kind, threshold=threshold,
            state="raises" if state == "raised" else "clears")
        data = {"sensor": name, "field": field, "value": value, "kind": kind, "threshold": threshold,
                "state": state}
        event = {"id": None, "type": "sensor_alarm", "time_ns": time_ns, "data": data, "digest": digest(data),
                 "quarantine": None}
        self.store.run(_store_alarm, self.node_name, event, self.node_id).addErrback(
            lambda failure: log.failure("Sensor {name}: alarm event not stored", failure, name=name))
        for listener in self.alarm_listeners:
            listener(name, field, value, kind, threshold, state)

    async def flush(self):
        """Store what is pending; returns once every row pending at the call is committed.  Flushes take
        turns (the timer's, readings()' and stopService's): one that found its rows taken by a flush
        still storing them waits for it, rather than return before they are in the store."""
        await self._flushing.acquire()
        try:
            rows, self.pending = self.pending, []
            if rows:
                try:
                    await self.store.run(history.add_readings, rows)
                except Exception:
                    log.failure("Sensor readings: {n} not stored", n=len(rows))
        finally:
            self._flushing.release()

    async def compact(self):
        now_ns = int(self.clock.seconds() * 1e9)
        for name, sensor in list(self.sensors.items()):  # (a reload may add or remove sensors meanwhile)
            try:
                await self.store.run(history.compact, name, now_ns, sensor["horizon"], sensor["resolution"],
                                     sensor["retention"])
            except Exception:
                log.failure("Sensor {name}: old readings not compacted", name=name)

    # ---- what the routes, D-Bus and the status ask

    def names(self):
        return sorted(self.sensors)

    def latest_values(self, name):
        """{field: value} of the last reading ({} before the first); KeyError for an unknown sensor."""
        if name not in self.sensors:
            raise KeyError(name)
        return {field: value for field, (value, _) in self.latest.get(name, (0, {}))[1].items()}

    def describe(self, name):
        sensor = self.sensors[name]
        time_ns, values = self.latest.get(name, (None, {}))
        return {"name": name, "driver": sensor["driver"], "interval": sensor["interval"], "time_ns": time_ns,
                "fields": {field: {"value": value, "unit": unit} for field, (value, unit) in values.items()},
                "state": "failing" if name in self.failing else "ok" if time_ns is not None else "waiting",
                "last_error": self.failing.get(name),
                "alarms": sorted(f"{field} {kind}" for field, kind in self.alarms[name].raised)}

    async def readings(self, name, since_ns, until_ns, step_s=None):
        if name not in self.sensors:
            raise KeyError(name)
        await self.flush()  # what was read a moment ago is in the answer too
        return await self.store.read(history.readings, name, since_ns, until_ns, step_s)


def _loop(function, clock):
    loop = task.LoopingCall(lambda: defer.ensureDeferred(function()))
    loop.clock = clock
    return loop


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _store_alarm(conn, station, event, origin):
    event = dict(event, id=event_ids(event["time_ns"], 1)[0])
    return store_batches(conn, [{"station": station, "received_ns": event["time_ns"], "events": [event]}], origin)
