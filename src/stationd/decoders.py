"""HiSPARC payloads are decoded in a small pool of decoder processes, never on the reactor.

A pickle is untrusted input whose cost the C unpickler does not bound: 9 bytes can make it
allocate 2 GiB (a memo index), 14 MB of brackets keep it busy for seconds.  In the node's
own process either stalls every request.  Here each payload goes to a decoder process
(stationd.decoder_process) that runs under an address-space limit (``[ingest]
decode_memory``), so such a payload gets a MemoryError there, and within a time limit
(``decode_timeout``), past which the process is killed and replaced; the reactor only waits
for the answer, and on a central node decoding uses another core.  Processes start on the
first upload (a node that never gets one runs none), at most ``[ingest] decoders`` of them;
uploads beyond what they and a short queue hold are refused as Busy (the station retries).

Measured against the in-process decode in docs/performance.rst and docs/reliability.rst.
"""

import collections
import os
import struct
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IProcessTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from stationd import jsoncodec
from stationd.hisparc import DecodeError
from stationd.writer import Busy

log = Logger()
FORMATS = {"pickle": 0, "json": 1}
QUEUE_PER_DECODER = 16  # payloads waiting for each decoder before uploads are refused as Busy


class DecoderGone(Exception):
    """The decoder process ended before it answered (not through the time limit)."""


class _Decoder(protocol.ProcessProtocol):
    """One decoder process, one payload at a time."""

    def __init__(self, pool: "DecoderPool") -> None:
        self.pool = pool
        self.job: defer.Deferred[bytes] | None = None
        self.timer: Any = None
        self.timed_out = False
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    @property
    def process(self) -> IProcessTransport:
        assert self.transport is not None  # (spawnProcess sets it before anything here runs)
        return self.transport

    def send(self, data: bytes, fmt: int) -> "defer.Deferred[bytes]":
        self.job = defer.Deferred()
        self.timed_out = False
        self.timer = self.pool.reactor.callLater(self.pool.timeout, self._expire)
        self.process.writeSequence([struct.pack(">IB", len(data), fmt), data])
        return self.job

    def _expire(self) -> None:
        self.timed_out = True
        self.process.signalProcess("KILL")

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < 4:
            return
        (size,) = struct.unpack(">I", self._buffer[:4])
        if len(self._buffer) < 4 + size:
            return
        answer, self._buffer = self._buffer[4:4 + size], self._buffer[4 + size:]
        job, self.job = self.job, None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if job is not None:
            job.callback(answer)
        self.pool._idle(self)

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.warn("Decoder process: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        job, self.job = self.job, None
        if job is not None:
            job.errback(DecodeError(f"decoding took longer than {self.pool.timeout:g} s ([ingest] decode_timeout)")
                        if self.timed_out else DecoderGone(str(reason.value)))
        self.pool._ended(self)
        self.ended.callback(None)


class DecoderPool(Service):
    """Up to ``size`` decoder processes, each limited to ``memory`` bytes more than it starts
    with and ``timeout`` seconds a payload."""

    def __init__(self, size: int, memory: int, timeout: float, reactor: Any) -> None:
        self.setName("decoders")
        self.size, self.memory, self.timeout, self.reactor = size, memory, timeout, reactor
        self.processes: list[_Decoder] = []
        self._idle_processes: list[_Decoder] = []
        self._queue: collections.deque[tuple[bytes, int, defer.Deferred[bytes]]] = collections.deque()

    async def decode(self, data: bytes, fmt: str = "pickle") -> list[dict[str, Any]]:
        """The events of an upload's payload ({"type", "time_ns", "data_json", "digest"});
        DecodeError if it is not one (answer 208), Busy if the decoders are all taken."""
        if not self.running:
            raise Busy("the node is stopping")
        answer = await self._run(data, FORMATS[fmt])
        if answer[:1] != b"\x00":
            raise DecodeError(answer[1:].decode("utf-8", "replace"))
        return [{"type": kind, "time_ns": time_ns, "data_json": data_json, "digest": digest}
                for kind, time_ns, data_json, digest in jsoncodec.loads(answer[1:])]

    def _run(self, data: bytes, fmt: int) -> "defer.Deferred[bytes]":
        if self._idle_processes:
            return self._idle_processes.pop().send(data, fmt)
        if len(self.processes) < self.size:
            try:
                decoder = self._start()
            except OSError as e:  # (out of processes or descriptors: the station sends it again)
                log.error("Decoder process not started: {e}", e=e)
                raise Busy(f"no decoder process: {e}") from None
            return decoder.send(data, fmt)
        if len(self._queue) >= QUEUE_PER_DECODER * self.size:
            raise Busy("every decoder is busy")
        waiting: defer.Deferred[bytes] = defer.Deferred()
        self._queue.append((data, fmt, waiting))
        return waiting

    def _start(self) -> _Decoder:
        decoder = _Decoder(self)
        argv = [sys.executable, "-m", "stationd.decoder_process", str(self.memory)]
        self.reactor.spawnProcess(decoder, sys.executable, argv, env=dict(os.environ))
        self.processes.append(decoder)
        return decoder

    def _idle(self, decoder: _Decoder) -> None:
        if self._queue:
            data, fmt, waiting = self._queue.popleft()
            decoder.send(data, fmt).chainDeferred(waiting)
        else:
            self._idle_processes.append(decoder)

    def _ended(self, decoder: _Decoder) -> None:
        if decoder in self.processes:
            self.processes.remove(decoder)
        if decoder in self._idle_processes:
            self._idle_processes.remove(decoder)
        if self.running and self._queue:  # (its replacement takes the next payload)
            data, fmt, waiting = self._queue.popleft()
            self._start().send(data, fmt).chainDeferred(waiting)

    def stopService(self) -> "defer.Deferred[None]":
        super().stopService()
        while self._queue:
            self._queue.popleft()[2].errback(Busy("the node is stopping"))
        ended = [decoder.ended for decoder in self.processes]
        for decoder in self.processes:
            decoder.process.closeStdin()  # (it exits at the end of its input, a payload in hand done)
        return defer.DeferredList(ended).addCallback(lambda _: None)
