"""Exporters: each [export:NAME] target pushes this node's events upstream.

One timed job a target, on the reactor's clock (injectable for tests).  A
round reads the events after the target's persistent cursor, sends them to
the upstream's import API, uploads the file contents it asks for, and only
then advances the cursor: an outage, a crash or a lost answer means a
resend, which the importer dedupes.  A full batch is followed at once by
the next (catching up), read while the upstream stores the one before;
otherwise the next round is ``interval`` later.

Failures back off exponentially with full jitter up to ``max_backoff``,
wait at least as long as a Retry-After asks (up to ``max_retry_after``),
and never stop the target: it keeps trying at the cap, visible in
/api/v1/status, /metrics and the log (one line a state change, not one an
attempt).  With a ``window`` the
target only starts batches during those hours of the site's day.

Nodes are known by their node id (stationd.store.identity): events whose
origin is the upstream's id are passed over (they came from there), and an
upstream with this node's own id is refused, since everything of this
node's would look like the upstream's.  docs/replication.rst has the states.
"""

import dataclasses
import datetime
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from stationd.client import Client, ClientError
from stationd.config import parse_export
from stationd.retry import backoff_delay
from stationd.store import exports, files
from stationd.times import format_ns

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from stationd.config import ExportTarget
    from stationd.filestore import FileStore
    from stationd.metrics import Metrics
    from stationd.store import Store

# What exports.next_batch reads: (events in import form, scanned_to, full, (passed over by filter, by origin)).
Batch = tuple[list[dict[str, Any]], int, bool, tuple[int, int]]

log = Logger()
def seconds_until_open(window: tuple[int, int] | None, when: datetime.datetime) -> float:
    """0 inside ``window`` ((start, end) minutes of the day, end may wrap past midnight), else
    the seconds until it opens.  None means always open."""
    if window is None:
        return 0.0
    start, end = window
    minute = when.hour * 60 + when.minute + when.second / 60 + when.microsecond / 6e7
    if start == end:
        return 0.0
    inside = start <= minute < end if start < end else minute >= start or minute < end
    return 0.0 if inside else ((start - minute) % 1440) * 60


STATES = ("starting", "ok", "backing_off", "waiting_window", "error", "paused", "standby")
# An exporter holds its target's lease for this long past each round (renewed
# every round, at least every interval): a holder that died is replaced within it.
LEASE_SECONDS = 90.0
SYNC_SECONDS = 10.0  # how often ExportTargets reads the stored targets again


def show_state(metrics: "Metrics", target: str, state: str) -> None:
    """stationd_export_state: 1 for the target's state, 0 for the others."""
    for name in STATES:
        metrics.export_state.labels(target, name).set(1 if name == state else 0)


def forget_target(metrics: "Metrics", target: str) -> None:
    """A removed target's series go with it."""
    for metric in (metrics.export_lag, metrics.export_failures, metrics.export_state, metrics.export_events):
        metric.remove_by_labels({"target": target})


class SameNode(Exception):
    """The upstream has this node's own node id: sending would be sending to itself."""


@dataclasses.dataclass(frozen=True)
class LocalNode:
    """This node's side of every export: what the exporters read, count and name themselves by."""

    store: "Store"
    files: "FileStore"
    metrics: "Metrics"
    node_id: str
    zone: datetime.tzinfo
    # This process among those sharing the store (workers, hosts on one
    # PostgreSQL: they share the node id too): who holds an export lease.
    holder: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:"
                                                            f"{uuid.uuid4().hex[:8]}")


class Exporter(Service):
    """One target's timed job.  Its state, for status, /metrics and the log:

    ``starting`` before the first round ends; ``ok`` after a batch (or an
    empty round) went through; ``backing_off`` while attempts fail;
    ``waiting_window`` outside the target's window (``opens_at`` says when
    it opens); ``error`` while the upstream answers with this node's own id
    (nothing is sent, no cursor moves, the upstream is asked again at the
    backoff cap); ``standby`` while another process sharing the store holds
    the target's lease (it is looked at again every interval).  A paused
    target (ExportTargets) is ``paused``.
    """

    failing_since: float | None  # clock seconds
    last_error: str | None
    last_error_at: float | None
    opens_at: int | None

    def __init__(self, target: "ExportTarget", local: LocalNode, clock: "IReactorTime", client: Client | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.setName(f"export:{target['name']}")
        self.target = target
        self.store = local.store
        self.files = local.files
        self.metrics = local.metrics
        self.node_id = local.node_id
        self.zone = local.zone
        self.clock = clock
        self.rng = rng
        self.client = client or Client(target["target_url"], target["api_key"] or None, target["ca"],
                                       target["client_cert"], target["client_key"], reactor=clock,
                                       timeout=target["timeout"])
        self.upstream: str | None = None  # the upstream's node id, from its status and its answers
        self.state, self.failures, self.failing_since = "starting", 0, None
        self.last_error = self.last_error_at = self.opens_at = None
        self.holder = local.holder
        self.holding = False  # the target's lease, as of the last round
        self._claimed_at = float("-inf")  # clock seconds of the last claim
        self.cursor: int | None = None
        self.oldest_ns: int | None = None  # received_ns of the first event the upstream has yet to confirm
        self.counts = {"sent": 0, "duplicate": 0, "skipped_filter": 0, "skipped_origin": 0}
        self._call: IDelayedCall | None = None
        self._round: defer.Deferred[float] | None = None
        # (cursor, Deferred of the batch after it), read while a full batch is sent
        self._prefetch: tuple[tuple[int, str | None], defer.Deferred[Batch | None]] | None = None
        self.metrics.export_lag.labels(target["name"]).set_function(self.lag)
        self._show_state()

    def lag(self) -> float:
        """Seconds since the first event the upstream has yet to confirm was received (0: none waits)."""
        return 0.0 if self.oldest_ns is None else max(0.0, self.clock.seconds() - self.oldest_ns / 1e9)

    # ---- service

    def startService(self) -> None:
        super().startService()
        self._schedule(0)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        running = self._round
        return defer.ensureDeferred(self._close(running))

    async def _close(self, running: defer.Deferred[float] | None) -> None:
        if running is not None:
            await running  # a batch in flight finishes (or fails) first
        if self.holding:
            try:
                await self.store.run(exports.release_lease, self.target["name"], self.holder)
            except Exception as e:  # it expires by itself
                log.warn("Export {target}: lease not released ({e})", target=self.target["name"], e=e)
            self.holding = False
        await self.client.close()

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self.clock.callLater(delay, self._start_round)

    def _start_round(self) -> None:
        self._call = None
        self._round = defer.ensureDeferred(self.run_round())
        self._round.addBoth(self._round_done)

    def _round_done(self, delay: float | Failure) -> None:
        self._round = None
        if isinstance(delay, (int, float)):
            self._schedule(delay)
        else:  # a bug, not an outage: keep the target alive, at the cap
            log.failure("Export {target}: round failed", delay, target=self.target["name"])
            self._schedule(self.target["max_backoff"])

    # ---- one round

    async def run_round(self) -> float:
        """Send at most one batch; the seconds until the next round.  Whatever happened, the
        lag is measured again: it grows through outages, closed windows and refusals."""
        now = self.clock.seconds()
        try:
            holder = await self._claim(now)
        except Exception as e:  # the store: as any other failed round
            return self._failed(f"{type(e).__name__}: {e}", None)
        if holder != self.holder:
            if self.state != "standby":
                log.info("Export {target}: {holder} exports it; standing by", target=self.target["name"],
                         holder=holder)
                self._set_state("standby")
            return min(self.target["interval"], LEASE_SECONDS / 3)
        wait = seconds_until_open(self.target["window"], datetime.datetime.fromtimestamp(now, self.zone))
        if wait:
            self.opens_at = round(now + wait)  # windows open on a minute
            self._set_state("waiting_window")
            delay = min(wait, self.target["interval"])  # back sooner, to keep the lag true
        else:
            self.opens_at = None
            delay = await self._attempt()
        await self._measure_lag()
        return delay

    async def _claim(self, now: float) -> str:
        """Take or renew the lease; who holds it.  Taking it over, the cursor is read again: the
        holder before moved it.  A lease held is renewed once a third of it has gone, not every
        round: a round of a catching-up target (a batch) or of a station node's idle target (every
        interval) costs no write transaction of its own, and no other process can take the lease
        before it expires."""
        if self.holding and now < self._claimed_at + LEASE_SECONDS / 3:
            return self.holder
        holder = await self.store.run(exports.claim_lease, self.target["name"], self.holder, int(now * 1e9),
                                      int(max(LEASE_SECONDS, 3 * self.target["timeout"]) * 1e9))
        self._claimed_at = now
        holding = holder == self.holder
        if holding and not self.holding:
            log.info("Export {target}: this process exports it ({holder})", target=self.target["name"],
                     holder=holder)
        if holding != self.holding:
            self.holding = holding
            self.cursor, self._prefetch = None, None
        return holder

    async def _attempt(self) -> float:
        try:
            full = await self._send_batch()
        except SameNode as e:
            return self._failed(str(e), None, "error")
        except ClientError as e:
            if e.code == "same_node_id":
                return self._failed(str(e), None, "error")
            return self._failed(str(e), e.retry_after)
        except Exception as e:  # the store (locked, gone), a file, or a bug: retried like an outage
            if self.state != "backing_off":
                log.failure("Export {target}: round failed", target=self.target["name"])
            return self._failed(f"{type(e).__name__}: {e}", None)
        self._succeeded()
        return 0 if full else self.target["interval"]

    def _check_upstream(self, node_id: str | None) -> None:
        """Take the upstream's id, unless it is this node's: then nothing must be sent, nor passed over."""
        if node_id is not None and node_id == self.node_id:
            raise SameNode(
                f"the upstream at {self.target['target_url']} has this node's own node id {self.node_id}: "
                "it is this node itself, or a node whose store was copied from this one (an imaged SD card). "
                "Nothing is sent until that changes: point the target at another node, or run "
                "`stationd-admin new-node-id` on the copy and restart it")
        self.upstream = node_id or self.upstream

    async def _send_batch(self) -> bool:
        name = self.target["name"]
        if self.cursor is None:
            self.cursor = await self.store.read(exports.get_cursor, name)
        if self.upstream is None or self.state != "ok":  # who it is, before anything is sent or passed over
            self._check_upstream((await self.client.status()).get("node_id"))
        batch, scanned_to, full, (by_filter, by_origin) = await self._read_batch()
        if batch:
            answer = await self.client.import_events(self.node_id, batch)
            self._check_upstream(answer.get("node_id"))
            for file_id in answer.get("need", []):
                content = await self.store.read(files.content_of, file_id)
                if content is not None and self.files.has(content["sha256"]):
                    await self.client.put_file(file_id, self.files.path(content["sha256"]))
            self._count("sent", answer.get("accepted", 0))
            self._count("duplicate", answer.get("duplicates", 0))
        if scanned_to != self.cursor:
            await self.store.run(exports.set_cursor, name, scanned_to, int(self.clock.seconds() * 1e9))
            self.cursor = scanned_to
            self._count("skipped_filter", by_filter)
            self._count("skipped_origin", by_origin)
        return full

    def _count(self, result: str, n: int) -> None:
        if n:
            self.counts[result] += n
            self.metrics.export_events.labels(self.target["name"], result).inc(n)

    async def _read_batch(self) -> Batch:
        """The batch after the cursor; a full one also starts reading the next, so the
        local read overlaps the upstream's work on this one (one import in flight)."""
        prefetch, self._prefetch = self._prefetch, None
        read = None
        if prefetch is not None and prefetch[0] == (self.cursor, self.upstream):
            read = await prefetch[1]  # None if that read failed: read again, and fail here if it must
        if read is None:
            read = await self.store.read(exports.next_batch, self.target, self.cursor, self.upstream)
        batch, scanned_to, full, _ = read
        if full:
            ahead = self.store.read(exports.next_batch, self.target, scanned_to, self.upstream)
            self._prefetch = ((scanned_to, self.upstream), ahead.addErrback(lambda failure: None))
        return read

    async def _measure_lag(self) -> None:
        try:
            if self.cursor is None:
                self.cursor = await self.store.read(exports.get_cursor, self.target["name"])
            self.oldest_ns = await self.store.read(exports.oldest_pending, self.target, self.cursor, self.upstream)
        except Exception:  # the store failing is the round's to report; the last figure stays
            log.failure("Export {target}: cannot measure the lag", target=self.target["name"])

    def _failed(self, reason: str, retry_after: float | None, state: str = "backing_off") -> float:
        self.failures += 1
        self.last_error, self.last_error_at = reason, self.clock.seconds()
        if state == "error":
            delay = self.target["max_backoff"]
        else:
            delay = backoff_delay(self.failures, self.target["max_backoff"], self.rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.target["max_retry_after"]))
        self.metrics.export_failures.labels(self.target["name"]).set(self.failures)
        if self.state != state:
            if self.state not in ("backing_off", "error"):
                self.failing_since = self.clock.seconds()
            if state == "error":
                log.error("Export {target}: refusing to export: {reason}", target=self.target["name"],
                          reason=reason)
            else:
                log.warn("Export {target}: failing ({reason}); retrying with backoff up to {cap:.0f} s",
                         target=self.target["name"], reason=reason, cap=self.target["max_backoff"])
            self._set_state(state)
        return delay

    def _succeeded(self) -> None:
        if self.state in ("backing_off", "error"):
            log.info("Export {target}: working again after {n} failed attempts", target=self.target["name"],
                     n=self.failures)
        self.failures, self.failing_since, self.last_error = 0, None, None
        self._set_state("ok")
        self.metrics.export_failures.labels(self.target["name"]).set(0)

    def _set_state(self, state: str) -> None:
        self.state = state
        self._show_state()

    def _show_state(self) -> None:
        show_state(self.metrics, self.target["name"], self.state)

    def status(self) -> dict[str, Any]:
        def iso(seconds: float | None) -> str | None:
            return None if seconds is None else format_ns(int(seconds * 1e9))

        return {"target_url": self.target["target_url"], "state": self.state, "cursor": self.cursor,
                "lag_seconds": round(self.lag(), 3),
                "oldest_pending": None if self.oldest_ns is None else format_ns(self.oldest_ns),
                "failures": self.failures, "failing_since": iso(self.failing_since),
                "last_error": self.last_error, "last_error_at": iso(self.last_error_at),
                "opens_at": iso(self.opens_at), "upstream_node_id": self.upstream,
                "events": dict(self.counts)}


class TargetError(Exception):
    """An admin request on export targets that cannot be done: (HTTP status, code, message, details)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details


def _setting(key: str, value: object) -> str:
    """A setting from JSON as the config file would spell it (lists: words; null: the default)."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return " ".join(value)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise TargetError(400, "bad_target", f"{key}: a string, a number or a list of strings", {key: "bad type"})


class ExportTargets(MultiService):
    """Every export target, its Exporter running unless paused.

    Targets come from [export:NAME] sections (read-only here) and from the
    admin API, which stores them (store.exports.put_target) so they outlive
    restarts.  A change restarts the target's exporter from its cursor.
    Every SYNC_SECONDS the stored targets are read again: those another
    process sharing the store (a worker, a host) added, changed or removed
    through its admin API are taken up here too.
    """

    def __init__(self, local: LocalNode, configured: Mapping[str, "ExportTarget"], clock: "IReactorTime") -> None:
        super().__init__()
        self.local, self.configured, self.clock = local, configured, clock
        self.targets: dict[str, tuple[ExportTarget, str, bool]] = {}  # name -> (target, "config" | "api", paused)
        self.exporters: dict[str, Exporter] = {}
        self._changing = defer.DeferredLock()
        self._sync = task.LoopingCall(lambda: defer.ensureDeferred(self.sync()))
        self._sync.clock = clock

    def startService(self) -> None:
        super().startService()
        self._sync.start(SYNC_SECONDS, now=False).addErrback(
            lambda failure: log.failure("Export targets: sync stopped", failure))

    def stopService(self) -> defer.Deferred[None]:
        if self._sync.running:
            self._sync.stop()
        return super().stopService()  # type: ignore[no-any-return]

    async def sync(self) -> None:
        """Take up the targets other processes sharing the store added, changed or removed."""
        try:
            stored = await self.local.store.read(exports.list_targets)
        except Exception as e:  # the store away: next time
            log.debug("Export targets: not synced ({e})", e=e)
            return
        async with self._changing:
            for name, (_, source, _) in list(self.targets.items()):
                if source == "api" and name not in stored:
                    await self._unset(name)
                    forget_target(self.local.metrics, name)
                    log.info("Export target {name!r} removed elsewhere", name=name)
            for name, (settings, paused) in sorted(stored.items()):
                current = self.targets.get(name)
                if current is not None and (current[1] == "config" or (current[0]["settings"], current[2])
                                            == (settings, paused)):
                    continue
                target, problems = parse_export(name, settings)
                if problems:
                    continue
                if current is not None:
                    await self._unset(name)
                self._set(name, target, "api", paused)
                log.info("Export target {name!r} {what} elsewhere", name=name,
                         what="paused" if paused else "set")

    def load(self, stored: Mapping[str, tuple[Mapping[str, str], bool]]) -> None:
        """At start: the config file's targets, then the stored ones ({name: (settings, paused)})."""
        for name, target in self.configured.items():
            self._set(name, target, "config", False)
        for name, (settings, paused) in sorted(stored.items()):
            target, problems = parse_export(name, settings)
            if name in self.targets or problems:
                log.error("Export target {name!r} stored by the admin API is left out: {why}", name=name,
                          why="a config-file target has its name" if name in self.targets else problems)
                continue
            self._set(name, target, "api", paused)

    async def configure(self, configured: Mapping[str, "ExportTarget"]) -> tuple[list[str], list[str], list[str]]:
        """A reloaded configuration's [export:NAME] targets: those added start, those changed
        restart from their cursor (a batch in flight finishes first), those left out stop (an
        admin-API target they hid comes back at the next sync).  The names (added, changed, removed)."""
        added: list[str] = []
        changed: list[str] = []
        removed: list[str] = []
        async with self._changing:
            for name in sorted(set(self.configured) - set(configured)):
                if self.targets.get(name, (None, ""))[1] == "config":
                    await self._unset(name)
                    forget_target(self.local.metrics, name)
                    removed.append(name)
            for name, target in sorted(configured.items()):
                current = self.targets.get(name)
                if current is not None and current[1] == "config" and current[0] == target:
                    continue
                (changed if current is not None and current[1] == "config" else added).append(name)
                if current is not None:
                    await self._unset(name)  # (an admin-API target of that name: the file's wins, as at start)
                self._set(name, target, "config", False)
            self.configured = configured
        return added, changed, removed

    def _set(self, name: str, target: "ExportTarget", source: str, paused: bool) -> None:
        self.targets[name] = (target, source, paused)
        if paused:
            show_state(self.local.metrics, name, "paused")
        else:
            self.exporters[name] = exporter = Exporter(target, self.local, self.clock)
            exporter.setServiceParent(self)

    async def _unset(self, name: str) -> None:
        exporter = self.exporters.pop(name, None)
        del self.targets[name]
        if exporter is not None:
            await defer.maybeDeferred(exporter.disownServiceParent)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: self.exporters[name].status() if name in self.exporters
                else {"target_url": target["target_url"], "state": "paused"}
                for name, (target, _, _) in self.targets.items()}

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """For the admin API: settings as given (without the API key), source, paused, state."""
        status = self.status()
        return [{"name": n, "source": source, "paused": paused,
                 "settings": {k: v for k, v in target["settings"].items() if k != "api_key"},
                 "api_key_set": bool(target["api_key"]), "status": status[n]}
                for n, (target, source, paused) in sorted(self.targets.items()) if name in (None, n)]

    async def add(self, name: str, settings: Mapping[str, Any], paused: bool = False) -> dict[str, Any]:
        async with self._changing:
            if name in self.targets:
                raise TargetError(409, "target_exists", f"export target {name!r} exists")
            await self._save(name, {k: _setting(k, v) for k, v in settings.items() if v is not None}, paused)
        return self.describe(name)[0]

    async def change(self, name: str, settings: Mapping[str, Any], paused: bool | None = None) -> dict[str, Any]:
        """Settings given replace those stored (null: back to the default); paused pauses or resumes."""
        async with self._changing:
            target, source, was_paused = self._get(name)
            merged = dict(target["settings"])
            for key, value in settings.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = _setting(key, value)
            await self._save(name, merged, was_paused if paused is None else paused)
        return self.describe(name)[0]

    async def remove(self, name: str) -> None:
        async with self._changing:
            self._get(name)
            await self.local.store.run(exports.remove_target, name)
            await self._unset(name)
            forget_target(self.local.metrics, name)

    def _get(self, name: str) -> tuple["ExportTarget", str, bool]:
        if name not in self.targets:
            raise TargetError(404, "no_such_target", f"no export target {name!r}")
        if self.targets[name][1] == "config":
            raise TargetError(409, "read_only", f"export target {name!r} is set in the configuration file; "
                              "change it there and restart")
        return self.targets[name]

    async def _save(self, name: str, settings: dict[str, str], paused: bool) -> None:
        target, problems = parse_export(name, settings)
        if problems:
            details = {key or "name": message for key, message in problems}
            raise TargetError(400, "bad_target", "; ".join(f"{k}: {m}" for k, m in details.items()), details)
        await self.local.store.run(exports.put_target, name, settings, paused, int(self.clock.seconds() * 1e9))
        if name in self.targets:
            await self._unset(name)  # a batch in flight finishes first
        self._set(name, target, "api", paused)
        log.info("Export target {name!r} {what} through the admin API", name=name,
                 what="paused" if paused else "set")
