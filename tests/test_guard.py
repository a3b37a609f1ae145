"""Credential guessing (issue 20, item 4), stationd.web.guard in units: the failure limiter's
windows (task.Clock), the fair, bounded queue of password checks (a fake slow hasher) and the
access log's summary of a flood.  Through a node's routes: tests/test_auth_abuse.py."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from stationd.store import stations
from stationd.web.guard import FailureLimiter, FailureLog, PasswordChecks



# --- the limiter -------------------------------------------------------------------------------

def test_a_client_is_limited_after_its_failures_until_the_window_ends():
    clock = Clock()
    limiter = FailureLimiter(3, 60, clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None
    clock.advance(10)
    limiter.failed("10.0.0.1")  # the third in the window that began at 0
    assert limiter.retry_after("10.0.0.1") == 50
    assert limiter.retry_after("10.0.0.2") is None  # other clients are not affected
    clock.advance(49.5)
    assert limiter.retry_after("10.0.0.1") == 1
    clock.advance(0.5)
    assert limiter.retry_after("10.0.0.1") is None  # the window is over: counting starts again
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None


def test_a_client_is_an_ipv4_address_or_an_ipv6_64_as_the_connection_cap_counts_them():
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from stationd.web.guard import client_of

    class Request:
        def __init__(self, address):
            self.address = address

        def getClientAddress(self):
            return self.address

    def client(address):
        return client_of(Request(address))

    assert client(IPv4Address("TCP", "192.0.2.7", 5000)) == "192.0.2.7"
    # One host with a /64 gets one limit, whichever of its addresses it guesses from.
    assert client(IPv6Address("TCP", "2001:db8:1:2::1", 5000)) == client(
        IPv6Address("TCP", "2001:db8:1:2:ffff::9", 5001)) == "2001:db8:1:2::/64"
    assert client(IPv6Address("TCP", "2001:db8:1:3::1", 5000)) != client(IPv6Address("TCP", "2001:db8:1:2::1", 5000))
    assert client(IPv6Address("TCP", "::ffff:192.0.2.7", 5000)) == "192.0.2.7"
    assert client(UNIXAddress(b"/run/stationd.sock")) == "UNIXAddress"


def test_failures_spread_over_windows_never_limit():
    clock = Clock()
    limiter = FailureLimiter(3, 60, clock)
    for _ in range(10):
        limiter.failed("c")
        limiter.failed("c")
        clock.advance(61)
        assert limiter.retry_after("c") is None


def test_a_limit_of_0_limits_nothing():
    limiter = FailureLimiter(0, 60, Clock())
    for _ in range(100):
        limiter.failed("c")
    assert limiter.retry_after("c") is None


def test_the_limiter_tracks_a_bounded_number_of_clients(monkeypatch):
    from stationd.web import guard

    monkeypatch.setattr(guard, "MAX_CLIENTS", 3)
    clock = Clock()
    limiter = FailureLimiter(1, 60, clock)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}")
        clock.advance(1)
    assert len(limiter._clients) <= 3
    assert limiter.retry_after("10.0.0.9") == 59  # the newest are kept


# --- the queue of password checks ---------------------------------------------------------------

class SlowHasher:
    """A fake scrypt: each derivation waits until the test finishes it."""

    def __init__(self):
        self.running = []  # (password, Deferred) started and not finished

    def run(self, verify, stored, password):
        d = defer.Deferred()
        self.running.append((password, d))
        return d

    def finish(self, matches=False):
        password, d = self.running.pop(0)
        d.callback(matches)
        return password


def test_a_station_s_first_check_waits_for_at_most_the_running_derivation():
    hasher = SlowHasher()
    checks = PasswordChecks(4, 4, run=hasher.run)
    guesses = [checks.check("A", f"10.0.{i // 250}.{i % 250}", "hash-A", f"guess-{i}") for i in range(200)]
    refused = [d for d in guesses if d.called and d.result is None]
    assert len(refused) == 196  # the station's queue holds 4: the rest are refused at once
    for d in refused:
        d.result = None  # (consumed)
    right = checks.check("B", "10.9.9.9", "hash-B", "right")
    assert [p for p, _ in hasher.running] == ["guess-0"]
    assert hasher.finish() == "guess-0"
    assert [p for p, _ in hasher.running] == ["right"]  # B next, before A's three other guesses
    hasher.finish(True)
    assert right.result is True
    assert checks.waiting() == 2 and hasher.running[0][0] == "guess-1"


def test_checks_are_taken_in_turn_between_stations():
    hasher = SlowHasher()
    checks = PasswordChecks(4, 100, run=hasher.run)
    for station in "AB":
        for i in range(3):
            checks.check(station, f"{station}{i}", "h", f"{station}-{i}")
    order = []
    while hasher.running:
        order.append(hasher.finish())
    assert order == ["A-0", "B-0", "A-1", "B-1", "A-2", "B-2"]


def test_one_client_may_queue_only_so_many_checks_whatever_the_stations():
    hasher = SlowHasher()
    checks = PasswordChecks(4, 2, run=hasher.run)
    answers = [checks.check(f"S{i}", "10.0.0.1", "h", f"g{i}") for i in range(10)]
    assert [d.called for d in answers] == [False, False] + [True] * 8
    assert all(d.result is None for d in answers[2:])
    assert not checks.check("S9", "10.0.0.2", "h", "other").called  # another client still may
    while hasher.running:
        hasher.finish()
    assert checks.check("S0", "10.0.0.1", "h", "again").called is False  # its slots are free again


def test_a_password_checked_while_queued_is_answered_from_the_memo(monkeypatch):
    monkeypatch.setattr(stations, "_right", set())
    hasher = SlowHasher()
    checks = PasswordChecks(4, 4, run=hasher.run)
    checks.check("A", "c1", "h", "first")
    second = checks.check("A", "c2", "h", "right")
    third = checks.check("A", "c3", "h", "right")
    stations._right.add(stations._memo("h", "right"))  # (as another upload's check found it meanwhile)
    hasher.finish()
    assert [p for p, _ in hasher.running] == []  # "right" is known now: no derivation for either
    assert second.result is True and third.result is True


def test_a_failing_derivation_fails_its_check_and_the_queue_goes_on():
    hasher = SlowHasher()
    checks = PasswordChecks(4, 4, run=hasher.run)
    first = checks.check("A", "c", "h", "p1")
    second = checks.check("A", "c", "h", "p2")
    hasher.running.pop(0)[1].errback(MemoryError("no memory"))
    assert first.called and isinstance(first.result, defer.Failure)
    first.addErrback(lambda failure: None)
    assert hasher.running[0][0] == "p2"
    hasher.finish()
    assert second.result is False


# --- the access log -----------------------------------------------------------------------------

def test_a_flood_of_failures_is_logged_as_a_summary_each_interval():
    clock, events = Clock(), []
    failures = FailureLog(clock, interval=60, sample=2, log=Logger(observer=events.append))
    assert [failures.suppress("10.0.0.1") for _ in range(5)] == [False, False, True, True, True]
    assert failures.suppress("10.0.0.2") is False
    clock.advance(60)
    assert [(e["client"], e["suppressed"], e["count"]) for e in events] == [("10.0.0.1", 3, 5)]
    assert failures.suppress("10.0.0.1") is False  # a new interval: sampled again
    clock.advance(60)
    assert len(events) == 1  # nothing suppressed, nothing to say
