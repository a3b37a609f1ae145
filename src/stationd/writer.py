"""Group commit into the store, and the durable spool for what the store cannot take now.

Uploads are acknowledged only once they are on stable storage, and made
durable once.  GroupCommit gathers the batches that arrive while a commit
runs and stores them all in the next transaction, straight into the store
(SQLite: synchronous=FULL, one fsync for the group; PostgreSQL: its commit);
the store's unique natural key makes a replayed event a duplicate there, so
no read comes before the insert.  When the store cannot take them (it is
away, locked, or full), the batches go to the spool instead: appended to a
segment file that is written, fsynced, renamed into place and its directory
fsynced before they are acknowledged (concurrent appends share the fsyncs),
and the Writer moves each segment into the store in one transaction once it
can, and deletes it.  While segments wait, new batches queue behind them in
the spool.  On start, segments left by an earlier run are drained first; a
temp file never renamed was never acknowledged and is removed.  The store
dedupes, so a segment stored twice (a crash between the commit and the
delete) lands once.
"""

import json
import os
import struct
import time
import zlib

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from stationd import jsoncodec
from stationd.records import Record
from stationd.store import TRANSIENT, one_line
from stationd.store.events import commit_records, store_batches
from stationd.store.imports import import_batch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime

    from stationd.metrics import Metrics
    from stationd.store import Store

# A segment file in the spool: (path, size in bytes, batches in it).
Segment = tuple[str, int, int]
_T = TypeVar("_T")

log = Logger()

_FRAME = struct.Struct(">II")  # payload length, CRC-32 of payload
SUFFIX = ".seg"


# The database's TRANSIENT errors (stationd.store) are retried for ever (with backoff).
# Any other error repeated POISON_ATTEMPTS times is the segment's own fault.
POISON_ATTEMPTS = 3
# One transaction takes up to this many segments, or this many bytes of them:
# enough to share commits, little enough to bound the writer's memory.
GROUP_SEGMENTS, GROUP_BYTES = 64, 2 * 1024 * 1024


class SpoolFull(Exception):
    """The spool is at max_spool_bytes: refuse, the client retries later."""


class SpoolError(Exception):
    """The spool could not make a batch durable (disk full, I/O error)."""


def encode_segment(records: Iterable[Record]) -> bytes:
    frames = []
    for record in records:
        payload = jsoncodec.dumps(record)
        frames.append(_FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
    return b"".join(frames)


def _count_frames(data: bytes) -> int:
    count, offset = 0, 0
    while offset + _FRAME.size <= len(data):
        length, _ = _FRAME.unpack_from(data, offset)
        offset += _FRAME.size + length
        count += 1
    return count


def decode_segment(data: bytes) -> list[Record]:
    """The records of a segment; ValueError if it is damaged."""
    records, offset = [], 0
    while offset < len(data):
        if offset + _FRAME.size > len(data):
            raise ValueError("truncated frame header")
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size: offset + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise ValueError(f"damaged frame at byte {offset}")
        records.append(json.loads(payload))  # not orjson: it reads integers past 64 bits as floats
        offset += _FRAME.size + length
    return records


class Spool:
    """Segment files in one directory, written by one thread in order."""

    def __init__(self, directory: str, max_bytes: int, reactor: "IReactorFromThreads", metrics: "Metrics",
                 fsync: Callable[[int], None] = os.fsync) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.reactor = reactor
        self.metrics = metrics
        self.fsync = fsync
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="stationd-spool")
        self._pending: list[tuple[bytes, defer.Deferred[Segment]]] = []  # (encoded record, Deferred)
        self._pending_bytes = 0
        self._inflight_bytes = 0  # the group being written now
        self._writing = False
        self._sequence = 0
        os.makedirs(directory, exist_ok=True)
        self.bytes, self.batches = 0, 0
        self._refused_while_failing: int | None = None  # uploads refused since writes began to fail

    def recover(self) -> list[Segment]:
        """Segments a previous run left, oldest first, as (path, size, batches).

        A temp file was never renamed, so never acknowledged: it is removed.
        """
        segments = []
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.startswith(".tmp-"):
                os.remove(path)
            elif name.endswith(SUFFIX):
                with open(path, "rb") as f:
                    data = f.read()
                segments.append((path, len(data), _count_frames(data)))
        self.bytes = sum(size for _, size, _ in segments)
        self.batches = sum(count for _, _, count in segments)
        self._publish()
        return segments

    def _publish(self) -> None:
        self.metrics.spool_bytes.set(self.bytes + self._inflight_bytes + self._pending_bytes)
        self.metrics.spool_batches.set(self.batches + len(self._pending))

    def append(self, record: Record) -> defer.Deferred[Segment]:
        """A Deferred that fires once ``record`` is durable, with its segment (path, size, batches);
        fails with SpoolFull or SpoolError."""
        frame = encode_segment([record])
        held = self.bytes + self._inflight_bytes + self._pending_bytes
        if held + len(frame) > self.max_bytes:
            return defer.fail(SpoolFull(f"a batch of {len(frame)} bytes does not fit: the spool holds {held} "
                                        f"of max_spool_bytes {self.max_bytes}"))
        d: defer.Deferred[Segment] = defer.Deferred()
        self._pending.append((frame, d))
        self._pending_bytes += len(frame)
        self._publish()
        if not self._writing:
            self._write_next()
        return d

    def _write_next(self) -> None:
        group, self._pending = self._pending, []
        size = sum(len(frame) for frame, _ in group)
        self._pending_bytes -= size
        self._inflight_bytes = size
        self._writing = True
        self._sequence += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence:08d}{SUFFIX}"
        d = deferToThreadPool(self.reactor, self.pool, self._write_segment,
                              name, b"".join(frame for frame, _ in group))
        d.addBoth(self._written, group, size)

    def _write_segment(self, name: str, data: bytes) -> str:
        """Write, fsync, rename, fsync the directory (in the spool thread)."""
        tmp = os.path.join(self.directory, ".tmp-" + name)
        final = os.path.join(self.directory, name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                started = time.perf_counter()
                self.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.metrics.fsync_seconds.observe(time.perf_counter() - started)
        except BaseException:
            for path in (tmp, final):
                try:
                    os.remove(path)
                except OSError:
                    pass
            raise
        return final

    def _written(self, result: str | Failure, group: list[tuple[bytes, defer.Deferred[Segment]]], size: int) -> None:
        self._writing = False
        self._inflight_bytes = 0
        if isinstance(result, Failure):
            # Once as the writes begin to fail (a full or read-only disk fails every
            # retry of every station), with the traceback; then a line when they work again.
            if self._refused_while_failing is None:
                log.failure("Spool write failed; uploads are refused until it works again", result)
                self._refused_while_failing = 0
            self._refused_while_failing += len(group)
            for _, d in group:
                d.errback(SpoolError(f"spool write failed: {result.getErrorMessage()}"))
        else:
            if self._refused_while_failing is not None:
                log.info("Spool writes work again; {n} upload(s) were refused meanwhile",
                         n=self._refused_while_failing)
                self._refused_while_failing = None
            self.bytes += size
            self.batches += len(group)
            segment = (result, size, len(group))
            for _, d in group:
                d.callback(segment)
        self._publish()
        if self._pending:
            self._write_next()

    def forget(self, size: int, count: int) -> None:
        """Account for a segment the writer has removed."""
        self.bytes -= size
        self.batches -= count
        self._publish()

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        if self.pool.started:
            self.pool.stop()


class Writer(Service):
    """The spool's owner: makes batches durable in it, and moves its segments into the store,
    as few transactions as it can, oldest first."""

    _retry: "defer.Deferred[None] | None"  # a drain's retry delay, while it waits
    _retry_call: "IDelayedCall | None"

    # reactor: Any, as the spool thread's IReactorFromThreads and, without a clock, the IReactorTime too.
    def __init__(self, spool: Spool, store: "Store", origin: str, metrics: "Metrics", reactor: Any,
                 clock: "IReactorTime | None" = None, retry_delay: float = 1.0, max_retry_delay: float = 30.0) -> None:
        self.setName("writer")  # (as an instance attribute: twisted's Service types the class one None)
        self.spool = spool
        self.store = store
        self.origin = origin
        self.metrics = metrics
        self.reactor = reactor
        self.clock: IReactorTime = clock or reactor
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        self._queue: list[Segment] = []
        self._draining: defer.Deferred[None] | None = None
        self._retry = self._retry_call = None
        self._recovered: list[defer.Deferred[None]] | None = []  # None once the start's drain is over

    def startService(self) -> None:
        super().startService()
        self.spool.start()
        self._queue.extend(self.spool.recover())
        if self._queue:
            log.info("Draining {n} spool segment(s) left by the previous run", n=len(self._queue))
            self._kick()
        else:
            self._recovered_now()

    def recovered(self) -> "defer.Deferred[None]":
        """Fires once the batches the previous run left in the spool are stored, or storing them
        has first failed (the database away: they wait, and uploads are spooled meanwhile)."""
        if self._recovered is None:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._recovered.append(waiting)
        return waiting

    def _recovered_now(self) -> None:
        waiting, self._recovered = self._recovered or [], None
        for d in waiting:
            d.callback(None)

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[None], None, None]:
        super().stopService()
        self._wake()  # a drain waiting out a retry delay ends now
        if self._draining is not None:
            yield self._draining
        self.spool.stop()

    async def spool_record(self, record: Record) -> None:
        """Make ``record`` durable in the spool (SpoolFull, SpoolError) and queue it for the store."""
        segment = await self.spool.append(record)
        if segment not in self._queue:  # (records appended together share a segment)
            self._queue.append(segment)
        self._kick()

    def _kick(self) -> None:
        if self._draining is None and self.running:
            self._draining = defer.ensureDeferred(self._drain())

    def _spool_thread(self, function: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        return deferToThreadPool(self.reactor, self.spool.pool, function, *args)

    async def _drain(self) -> None:
        delay = self.retry_delay
        attempts, last_error = 0, None
        try:
            while self._queue and self.running:
                # Many segments per transaction (one commit for all); after a
                # failure one at a time, to find the segment at fault.
                group = self._queue[:1] if attempts else _head(self._queue)
                try:
                    contents = await self._spool_thread(_read_all, [path for path, _, _ in group])
                except OSError:
                    log.failure("Reading the spool failed; retrying in {delay} s", delay=delay)
                    await self._sleep(delay)
                    delay = min(delay * 2, self.max_retry_delay)
                    continue
                records, readable = [], []
                for segment, content in zip(group, contents):
                    if isinstance(content, FileNotFoundError):
                        self._queue.remove(segment)
                        self.spool.forget(*segment[1:])
                    elif isinstance(content, ValueError):
                        await self._set_aside(segment, "damaged", content)
                    else:
                        records.extend(content)
                        readable.append(segment)
                if not readable or not self.running:
                    continue  # (the store may be stopping: leave the rest for the next start)
                try:
                    inserted, _ = await self.store.run(store_batches, records, self.origin)
                except Exception as e:
                    attempts = attempts + 1 if e.__class__ is last_error else 1
                    last_error = e.__class__
                    if not isinstance(e, TRANSIENT) and len(readable) > 1:
                        continue  # find the segment at fault, one at a time
                    if isinstance(e, TRANSIENT) or attempts < POISON_ATTEMPTS:
                        if not isinstance(e, TRANSIENT):
                            log.failure("Storing spool segment(s) failed; retrying in {delay} s", delay=delay)
                        elif attempts == 1:  # an outage: one line, not one an attempt
                            log.warn("The database cannot take the spooled batches now ({reason}); retrying "
                                     "with backoff up to {cap:g} s", reason=one_line(e), cap=self.max_retry_delay)
                        await self._sleep(delay)
                        delay = min(delay * 2, self.max_retry_delay)
                        continue
                    # The database refuses something in this segment itself
                    # (not an outage): store its batches one by one and set
                    # aside only those it refuses, so nothing else waits on them.
                    inserted = await self._isolate(readable[0], records)
                attempts, last_error = 0, None
                delay = self.retry_delay
                self.metrics.store_events.inc(inserted)
                await self._remove(readable)
        finally:
            self._draining = None
            self._recovered_now()

    async def _isolate(self, segment: Segment, records: list[Record]) -> int:
        inserted, refused = 0, []
        for record in records:
            try:
                inserted += (await self.store.run(store_batches, [record], self.origin))[0]
            except Exception as e:
                refused.append(record)
                log.critical("Station {station}: a batch of {n} event(s) refused by the store "
                             "({e}); kept in spool/rejected/", station=record.get("station"),
                             n=len(record.get("events", ())), e=e)
        if refused:
            await self._spool_thread(_write_aside, segment[0], "rejected", encode_segment(refused))
        return inserted

    async def _remove(self, segments: list[Segment]) -> None:
        for segment in segments:
            self._queue.remove(segment)
        try:
            await self._spool_thread(_remove_all, [path for path, _, _ in segments])
        except OSError:
            # Stored already: if the file stays, the next start replays it and
            # the store's dedupe makes that harmless.
            log.failure("Removing stored spool segments failed")
        for _, size, count in segments:
            self.spool.forget(size, count)

    async def _set_aside(self, segment: Segment, folder: str, error: ValueError) -> None:
        path, size, count = segment
        self._queue.remove(segment)
        await self._spool_thread(_set_aside, path, folder)
        self.spool.forget(size, count)
        log.critical("Spool segment {path} set aside in {folder}/: {error}",
                     path=path, folder=folder, error=error)

    def _sleep(self, seconds: float) -> defer.Deferred[None]:
        self._recovered_now()
        self._retry = defer.Deferred()
        self._retry_call = self.clock.callLater(seconds, self._wake)
        return self._retry

    def _wake(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None:  # (and so _retry_call is set)
            if cast("IDelayedCall", self._retry_call).active():
                cast("IDelayedCall", self._retry_call).cancel()
            retry.callback(None)

    def idle(self) -> bool:
        """True when every acknowledged batch is in the store (for tests and status)."""
        return not self._queue and self._draining is None


def _head(queue: list[Segment]) -> list[Segment]:
    """The first segments of the queue, up to GROUP_SEGMENTS and GROUP_BYTES (at least one)."""
    total = 0
    for count, (_, size, _) in enumerate(queue[:GROUP_SEGMENTS]):
        total += size
        if total > GROUP_BYTES and count:
            return queue[:count]
    return queue[:GROUP_SEGMENTS]


def _read_all(paths: Iterable[str]) -> list[list[Record] | ValueError | FileNotFoundError]:
    """Each segment's records, or the ValueError (damaged) or FileNotFoundError
    (removed by hand) that says why not."""
    contents: list[list[Record] | ValueError | FileNotFoundError] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                contents.append(decode_segment(f.read()))
        except (ValueError, FileNotFoundError) as e:
            contents.append(e)
    return contents


def _remove_all(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _write_aside(path: str, folder: str, data: bytes) -> None:
    """Keep refused batches of a segment in spool/<folder>/ and drop the segment."""
    target = os.path.join(os.path.dirname(path), folder)
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, os.path.basename(path)), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.remove(path)


def _set_aside(path: str, folder: str) -> None:
    """Move a segment the writer cannot store into spool/<folder>/, for an operator."""
    target = os.path.join(os.path.dirname(path), folder)
    os.makedirs(target, exist_ok=True)
    os.replace(path, os.path.join(target, os.path.basename(path)))


class Busy(Exception):
    """More batches wait for the store than the node holds in memory: refuse, the client retries."""


class StoreUnavailable(Exception):
    """The store cannot take a batch now, and it is not one the spool keeps (an import)."""


class StoreRefused(Exception):
    """The store refuses this batch itself (not an outage): nothing of it was kept."""


# Batches waiting for the next commit, at most: beyond, uploads are refused
# (503 / HiSPARC 400) instead of filling the node's memory.
PENDING_BYTES = 32 * 1024 * 1024


def _commit_group(conn: "Connection", records: list[Any], origin: str) -> list[Any]:
    """One transaction for a group: ingest records (commit_records) and imports (import_batch);
    the answers in the records' order."""
    # (Any: Records and imports' {"protocol": "import", "events"}; Answers and imports' (counts, file records).)
    ingested = iter(commit_records(conn, [r for r in records if r["protocol"] != "import"], origin))
    return [import_batch(conn, r["events"]) if r["protocol"] == "import" else next(ingested) for r in records]


class GroupCommit:
    """Batches into the store, a group a transaction: what arrives during a commit goes in the next.

    ``submit(record, size)`` fires with the record's answer once it is
    durable: committed (the store's counts), or, when the store cannot take
    it, in the spool (the counts as far as the batch itself tells: events
    already in the store are found, and left out, when the Writer stores it).
    An import is never spooled: it fails with StoreUnavailable, and its
    sender, which keeps it, retries.
    """

    def __init__(self, store: "Store", writer: Writer, origin: str, metrics: "Metrics",
                 max_pending_bytes: int = PENDING_BYTES) -> None:
        self.store, self.writer, self.origin, self.metrics = store, writer, origin, metrics
        self.max_pending_bytes = max_pending_bytes
        self._pending: list[tuple[Any, int, defer.Deferred[Any]]] = []
        self._pending_bytes, self._busy = 0, False
        self._outage: Exception | None = None  # the store's error while batches go to the spool

    def submit(self, record: Any, size: int) -> defer.Deferred[Any]:
        if self._pending_bytes + size > self.max_pending_bytes:
            return defer.fail(Busy(f"{self._pending_bytes} bytes of batches wait for the store"))
        d: defer.Deferred[Any] = defer.Deferred()
        self._pending.append((record, size, d))
        self._pending_bytes += size
        if not self._busy:
            self._next()
        return d

    def _next(self) -> None:
        group, self._pending = self._pending, []
        self._pending_bytes -= sum(size for _, size, _ in group)
        self._busy = True
        waiting = [(record, d) for record, _, d in group]
        defer.ensureDeferred(self._commit(waiting)).addBoth(self._done, waiting)

    def _done(self, result: None | Failure, waiting: list[tuple[Any, defer.Deferred[Any]]]) -> None:
        if isinstance(result, Failure):  # a bug: no upload waits for ever, none is acknowledged
            log.failure("Group commit failed", result)
            for _, d in waiting:
                if not d.called:
                    d.errback(StoreRefused(f"internal error: {result.getErrorMessage()}"))
        self._busy = False
        if self._pending:
            self._next()

    async def _commit(self, group: list[tuple[Any, defer.Deferred[Any]]]) -> None:
        if not self.writer.idle():  # batches wait in the spool: these go behind them
            await self._spool(group)
            return
        try:
            answers = await self.store.run(_commit_group, [record for record, _ in group], self.origin)
        except TRANSIENT as e:
            if self._outage is None:
                log.warn("The store cannot take batches now ({reason}); they are spooled until it can",
                         reason=one_line(e))
            self._outage = e
            await self._spool(group)
            return
        except Exception as e:
            if len(group) > 1:  # one batch at fault, or all: each on its own
                for one in group:
                    await self._commit([one])
                return
            log.failure("The store refused a batch of {n} event(s)", n=len(group[0][0]["events"]))
            group[0][1].errback(StoreRefused(f"the store refused this batch: {type(e).__name__}: {e}"))
            return
        if self._outage is not None:
            log.info("The store takes batches again")
            self._outage = None
        self.metrics.store_events.inc(sum(a["accepted"] + a["quarantined"] for (record, _), a in zip(group, answers)
                                          if record["protocol"] != "import" and "replayed" not in a))
        for (_, d), answer in zip(group, answers):
            d.callback(answer)

    async def _spool(self, group: list[tuple[Any, defer.Deferred[Any]]]) -> None:
        for record, d in group:
            if record["protocol"] == "import":
                d.errback(StoreUnavailable(f"the store cannot take it now: {self._outage or 'spool draining'}"))
        spooled = [(record, d) for record, d in group if record["protocol"] != "import"]
        for record, _ in spooled:
            quarantined = sum(1 for e in record["events"] if e["quarantine"] is not None)
            record["response"] = {"accepted": len(record["events"]) - quarantined,
                                  "duplicates": record.get("duplicates", 0), "quarantined": quarantined}
        results = await defer.DeferredList([defer.ensureDeferred(self.writer.spool_record(record))
                                            for record, _ in spooled], consumeErrors=True)
        for (record, d), (ok, result) in zip(spooled, results):
            if ok:
                d.callback(dict(record["response"], spooled=True))
            else:
                d.errback(result)
