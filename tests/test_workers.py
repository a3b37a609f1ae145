"""A worker's log events, as the twistd process logs them (stationd.workers)."""

from twisted.logger import LogLevel, eventAsJSON, formatEvent, globalLogPublisher

from stationd.logs import WORKER
from stationd.workers import _Worker


def relogged(event):
    """What the twistd process logs for ``event`` sent by worker 1 as a JSON line."""
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        _Worker(None, 1).outReceived(b"\x1e" + eventAsJSON(event).encode() + b"\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    [logged] = seen
    return logged


def test_a_worker_event_keeps_its_format_specs_and_says_which_worker():
    event = {"log_format": '"{method} {uri}" {duration_ms:.1f}ms', "method": "GET", "uri": "/heartbeat",
             "duration_ms": 2.0401477813720703, "log_level": LogLevel.info, "log_namespace": "stationd.access"}
    logged = relogged(event)
    assert formatEvent(logged) == '"GET /heartbeat" 2.0ms'
    assert logged[WORKER] == 1 and logged["log_level"] == LogLevel.info


def test_a_field_json_cannot_carry_is_logged_as_its_text():
    class Factory:
        def __str__(self):
            return "<the factory>"

    event = {"log_format": "Starting factory {factory}", "factory": Factory(), "log_level": LogLevel.info,
             "log_namespace": "twisted"}
    assert formatEvent(relogged(event)) == "Starting factory <the factory>"


def test_a_line_that_is_not_json_is_logged_as_it_is():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        _Worker(None, 1).outReceived(b"not json\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert [formatEvent(e) for e in seen] == ["not json"]


def test_a_worker_still_starting_gets_its_sighup_once_it_takes_signals(tmp_path):
    from twisted.internet.task import Clock

    from stationd.workers import READY, Workers

    class Transport:
        def __init__(self):
            self.sent = []

        def signalProcess(self, name):
            self.sent.append(name)

    pool = Workers(3, None, str(tmp_path), Clock())
    for number in (1, 2):
        worker = pool.running_workers[number] = _Worker(pool, number)
        worker.transport = Transport()
    started = pool.running_workers[1]
    started.outReceived(b"\x1e" + eventAsJSON({"log_format": "Worker 1 takes signals", READY: True,
                                               "log_level": LogLevel.info, "log_namespace": "t"}).encode() + b"\n")
    pool.reload_all()
    starting = pool.running_workers[2]
    assert started.transport.sent == ["HUP"] and starting.transport.sent == []  # (SIGHUP would kill it now)
    starting.outReceived(b"\x1e" + eventAsJSON({"log_format": "Worker 2 takes signals", READY: True,
                                                "log_level": LogLevel.info, "log_namespace": "t"}).encode() + b"\n")
    assert starting.transport.sent == ["HUP"]  # (it may have read the file before the change)
    pool.reload_all()
    assert started.transport.sent == starting.transport.sent == ["HUP", "HUP"]
