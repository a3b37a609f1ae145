"""Type=notify: what the node tells systemd (stationd.systemd), read from a datagram socket
as systemd's own NOTIFY_SOCKET would."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from twisted.internet import defer, task

from stationd.systemd import Notifier
from test_e2e import Node, launch


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    yield sock, str(tmp_path / "notify")
    sock.close()


def received(sock, until, seconds=30):
    """The notices, a datagram each (its lines split), up to the first that holds ``until``."""
    deadline, notices = time.monotonic() + seconds, []
    while not notices or until not in notices[-1]:
        assert time.monotonic() < deadline, notices
        notices.append(sock.recv(4096).decode().split("\n"))
    return notices


def test_the_daemon_says_ready_reloading_and_stopping_and_pets_the_watchdog(tmp_path, notify_socket):
    sock, path = notify_socket
    node = Node(tmp_path)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    node.proc = launch(tmp_path, node.config, stdout=open(node.log, "wb"), env=env)
    Node.started.append(node.proc)
    try:
        notices = received(sock, "READY=1")
        assert ["READY=1", "STATUS=serving"] in notices
        assert received(sock, "WATCHDOG=1", seconds=5)  # every 0.2 s
        node.proc.send_signal(signal.SIGHUP)  # (at once: READY=1 comes once the node handles it)
        notices = received(sock, "READY=1")
        reloading = [n for n in notices if "RELOADING=1" in n]
        assert reloading and reloading[0][1].startswith("MONOTONIC_USEC=")
        node.proc.send_signal(signal.SIGTERM)
        assert ["STOPPING=1", "STATUS=stopping"] in received(sock, "STOPPING=1")
        assert node.proc.wait(timeout=60) == 0
    finally:
        if node.proc.poll() is None:
            node.proc.kill()


def test_ready_waits_for_the_listeners_and_the_spool_of_the_last_run(notify_socket):
    sock, path = notify_socket
    listening, recovered = defer.Deferred(), defer.Deferred()
    clock = task.Clock()
    notifier = Notifier([listening, recovered], clock, {"NOTIFY_SOCKET": path})
    sock.settimeout(0.2)
    notifier.startService()
    clock.advance(0)  # (the reactor runs)
    listening.callback(None)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    recovered.callback(None)
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    notifier.stopService()


def test_the_watchdog_is_petted_at_half_its_time_only_for_this_process(notify_socket):
    sock, path = notify_socket
    clock = task.Clock()
    notifier = Notifier([], clock, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    notifier.startService()
    clock.advance(0)
    assert sorted([sock.recv(4096), sock.recv(4096)]) == [b"READY=1\nSTATUS=serving", b"WATCHDOG=1"]
    clock.advance(5)
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.stopService()
    assert not clock.getDelayedCalls()
    other = Notifier([], clock, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier([], task.Clock(), {})
    notifier.startService()
    notifier.notify("READY=1")  # (no socket, no error)
    notifier.stopService()


UNIT = os.path.join(os.path.dirname(__file__), "..", "etc", "systemd", "stationd.service")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (the systemd package)")
def test_the_unit_is_rated_2_5_or_better_by_systemd_analyze_security():
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", UNIT], capture_output=True, text=True,
                         timeout=60)
    [level] = re.findall(r"Overall exposure level for stationd\.service: ([0-9.]+)", out.stdout)
    assert float(level) <= 2.5, out.stdout


def test_the_unit_notifies_and_its_checks_take_socket_activation():
    with open(UNIT) as f:
        unit = f.read()
    assert "\nType=notify\n" in unit and "\nWatchdogSec=" in unit and "check-config" in unit
    with open(os.path.join(os.path.dirname(UNIT), "stationd.socket")) as f:
        assert "FileDescriptorName=stationd-http\n" in f.read()
