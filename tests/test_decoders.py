"""HiSPARC payloads decoded in decoder processes (stationd.decoders): real processes, real
pickles; what a hostile payload costs is the decoder's, under its limits, never the node's."""

import datetime
import os
import pickle
import signal
import struct

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task

from stationd.decoders import DecoderGone, DecoderPool
from stationd.hisparc import DecodeError, decode_upload
from stationd.jsoncodec import canonical
from stationd.writer import Busy

MEMO_BOMB = b"\x80\x02Nr" + struct.pack("<I", 2**27) + b"."  # LONG_BINPUT 2**27: a 2 GiB memo
MEMO_BOMB_0 = b"Np134217728\n."  # protocol 0's PUT, the same
LENGTH_BOMB = b"\x80\x03B" + struct.pack("<I", 2**31 - 1) + b"."  # BINBYTES: 2 GiB asked for at once
NESTED = b"\x80\x02" + b"]" * 3_000_000 + b"a" * 2_999_999 + b"."  # seconds of the C unpickler


def upload(n=3):
    start = datetime.datetime(2024, 5, 1, 22, 0, 0)
    return pickle.dumps([{"header": {"eventtype_uploadcode": "CIC", "datetime": start + datetime.timedelta(seconds=i),
                                     "nanoseconds": i, "date": start.date(), "time": start.time()},
                          "datalist": [{"data_uploadcode": "PH1", "data": 1000 + i}]} for i in range(n)],
                        protocol=2)


@pytest.fixture
def pool():
    pool = DecoderPool(1, 256 * 2**20, 30.0, reactor)
    pool.startService()
    yield pool
    pytest_twisted.blockon(pool.stopService())


def peak_rss_mib(decoder):
    with open(f"/proc/{decoder.process.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


@pytest_twisted.ensureDeferred
async def test_a_payload_decodes_as_in_the_node_and_the_process_serves_the_next(pool):
    assert pool.processes == []  # (started by the first upload)
    events = await pool.decode(upload())
    expected = [dict(type=e["type"], time_ns=e["time_ns"], **dict(zip(("data_json", "digest"), canonical(e["data"]))))
                for e in decode_upload(upload())]
    assert events == expected and len(events) == 3
    first = pool.processes[0].process.pid
    with pytest.raises(DecodeError, match="event 0"):  # (format=json uploads are decoded there too)
        await pool.decode(b"[1]", "json")
    assert await pool.decode(upload(1)) == expected[:1]
    assert [d.process.pid for d in pool.processes] == [first]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("bomb", [MEMO_BOMB, MEMO_BOMB_0, LENGTH_BOMB], ids=["LONG_BINPUT", "PUT", "BINBYTES"])
async def test_a_memo_index_bomb_is_refused_within_the_memory_limit(pool, bomb):
    with pytest.raises(DecodeError, match="MemoryError|more memory|pickle"):
        await pool.decode(bomb)
    (decoder,) = pool.processes
    assert peak_rss_mib(decoder) < 256 + 64  # (in the node's own process: 2,125 MiB)
    assert len(await pool.decode(upload())) == 3  # the same process, still serving
    assert pool.processes == [decoder]


@pytest_twisted.ensureDeferred
async def test_a_payload_past_the_time_limit_costs_its_process_which_is_replaced():
    pool = DecoderPool(1, 512 * 2**20, 0.3, reactor)
    pool.startService()
    try:
        await pool.decode(upload())  # (the process started: the limit is the payload's alone)
        before = pool.processes[0].process.pid
        slow = defer.ensureDeferred(pool.decode(NESTED))
        after = defer.ensureDeferred(pool.decode(upload()))  # (it waits for the first)
        with pytest.raises(DecodeError, match="longer than 0.3 s"):
            await slow
        assert len(await after) == 3
        assert [d.process.pid for d in pool.processes] != [before]
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_uploads_beyond_the_decoders_and_their_queue_are_busy(monkeypatch):
    monkeypatch.setattr("stationd.decoders.QUEUE_PER_DECODER", 1)
    pool = DecoderPool(1, 512 * 2**20, 30.0, reactor)
    pool.startService()
    try:
        slow, queued = defer.ensureDeferred(pool.decode(NESTED)), defer.ensureDeferred(pool.decode(upload()))
        with pytest.raises(Busy):
            await pool.decode(upload())
        with pytest.raises(DecodeError, match="values|event|list"):
            await slow  # (no time limit here: decoded, and refused as too big)
        assert len(await queued) == 3
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_decoder_killed_from_outside_is_a_retry_not_a_refusal(pool):
    await pool.decode(upload())
    (decoder,) = pool.processes
    slow = defer.ensureDeferred(pool.decode(NESTED))
    await task.deferLater(reactor, 0.2, lambda: None)
    os.kill(decoder.process.pid, signal.SIGKILL)
    with pytest.raises(DecoderGone):  # (the upload answers 400: the station sends it again)
        await slow
    assert len(await pool.decode(upload())) == 3


@pytest_twisted.ensureDeferred
async def test_stopping_ends_the_processes():
    pool = DecoderPool(2, 256 * 2**20, 30.0, reactor)
    pool.startService()
    await defer.gatherResults([defer.ensureDeferred(pool.decode(upload())) for _ in range(2)])
    pids = [d.process.pid for d in pool.processes]
    assert len(pids) == 2
    await pool.stopService()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(Busy):
        await pool.decode(upload())


# -- what tests/test_fuzz_decoders.py leaves out: payloads whose sizes are read from themselves ------

EXAMPLES = int(os.environ.get("STATIOND_FUZZ_EXAMPLES", "150"))
LIMIT = 128 * 2**20
_SIZED = [(b"r", "<I"), (b"B", "<I"), (b"T", "<I"), (b"X", "<I"), (b"\x8d", "<Q"), (b"\x8e", "<Q"),
          (b"\x96", "<Q"), (b"\x95", "<Q"), (b"\x8b", "<I")]  # LONG_BINPUT, BINBYTES, BINSTRING,
# BINUNICODE, BINUNICODE8, BINBYTES8, BYTEARRAY8, FRAME, LONG4
HEADERS = st.sampled_from([b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b""])


@st.composite
def sized_bombs(draw):
    op, form = draw(st.sampled_from(_SIZED))
    size = draw(st.integers(0, 2**32 - 1 if form == "<I" else 2**40))
    return draw(HEADERS) + b"N" * draw(st.integers(0, 1)) + op + struct.pack(form, size) + draw(st.binary(max_size=16))


PAYLOADS = (sized_bombs()
            | st.integers(0, 2**40).map(lambda n: b"Np%d\n." % n)  # protocol 0's PUT
            | st.tuples(HEADERS, st.binary(max_size=256)).map(b"".join))  # every opcode, unfiltered


@pytest.fixture(scope="module")
def decoder_process():
    """A decoder process as the pool runs it, spoken to frame by frame."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "stationd.decoder_process", str(LIMIT)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def ask(process, data):
    process.stdin.write(struct.pack(">IB", len(data), 0) + data)
    process.stdin.flush()
    (size,) = struct.unpack(">I", process.stdout.read(4))
    return process.stdout.read(size)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize="STATIOND_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=PAYLOADS)
def test_payloads_whose_sizes_they_state_stay_within_the_decoders_limit(decoder_process, data):
    import json

    answer = ask(decoder_process, data)
    assert answer[:1] in (b"\x00", b"\x01")
    if answer[:1] == b"\x00":
        assert isinstance(json.loads(answer[1:]), list)
    assert decoder_process.poll() is None  # (the same process answers every example)
    with open(f"/proc/{decoder_process.pid}/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    assert peak < LIMIT + 48 * 2**20  # (its address space: what it started with, ~20 MiB, + LIMIT)


@pytest_twisted.ensureDeferred
async def test_a_decoder_that_cannot_start_is_busy_not_an_error(monkeypatch):
    pool = DecoderPool(1, 256 * 2**20, 30.0, reactor)
    pool.startService()

    def no_processes(*args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(reactor, "spawnProcess", no_processes)
    try:
        with pytest.raises(Busy, match="no decoder process"):
            await pool.decode(upload())
        monkeypatch.undo()
        assert len(await pool.decode(upload())) == 3
    finally:
        await pool.stopService()
