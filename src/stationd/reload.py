"""Reload without restart: the configuration file read again, checked whole, then taken up.

SIGHUP (``systemctl reload``, ``stationd-admin reload``) makes the node read its file again.
plan() checks all of it first — the file itself, the drivers of added and changed sensors, the
TLS files — so a reload is refused whole, with every ``file:section:key:`` error, and the
running configuration stays; or it applies whole.  Sensors, export targets, [log] and the TLS
certificate, key and client CA change live; what only a start can change (listeners, the
database, workers, ...) is named as needing a restart, and runs on as it was.

The node writes its pid to ``{data_dir}/stationd.pid`` and the outcome of each reload to
``{data_dir}/reload.json``: that is how ``stationd-admin reload`` finds it and tells the result.
"""

import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, cast

from twisted.logger import Logger

from stationd import config as configuration
from stationd.config import Config, ConfigError
from stationd.exporter import ExportTargets
from stationd.ingest import StationList
from stationd.logs import NodeLog
from stationd.sensors import Sensors, drivers
from stationd.tls import ServerTLS, tls_error_key

log = Logger()

# [web] keys taken up live (a new handshake gets them); every [log] key is too.
LIVE_WEB = ("tls_cert", "tls_key", "tls_min_version", "client_ca")
PID_FILE = "stationd.pid"
RESULT_FILE = "reload.json"


@dataclass
class Plan:
    """What a checked reload will do."""

    config: Config  # what runs once applied: the file's live settings, the running ones of the rest
    restart_needed: list[str]  # "file:section:key" of changed settings only a restart takes up
    sensors: tuple[list[str], list[str], list[str]]  # (added, changed, removed) names
    drivers: dict[str, Any]  # name -> the new driver of each added or changed sensor
    tls_options: Any = None  # the new certificate options, when the node serves https
    log_changed: bool = False


def _live(section: str, key: str, running: Config, new: Config) -> bool:
    if section == "log" or (section == "web" and key in LIVE_WEB):
        return True
    # A station list file may be renamed live; adding or dropping the list needs a restart.
    return (section, key) == ("ingest", "station_list") and bool(running["ingest"]["station_list"]) \
        and bool(new["ingest"]["station_list"])


def plan(running: Config, new: Config, sensors: Sensors | None, tls: ServerTLS | None, reactor: Any) -> Plan:
    """Check ``new`` against the ``running`` configuration; ConfigError with every problem.
    ``sensors`` is the node's Sensors (None in a worker process, which polls none)."""
    values = {section: dict(running.values[section]) for section in configuration.SCHEMA}
    origin = dict(running.origin)
    restart_needed = []
    for section, keys in configuration.SCHEMA.items():
        for key in keys:
            if running.values[section][key] == new.values[section][key]:
                continue
            if _live(section, key, running, new):
                values[section][key] = new.values[section][key]
                if (section, key) in new.origin:
                    origin[section, key] = new.origin[section, key]
            else:
                restart_needed.append(f"{new.origin.get((section, key), running.origin.get((section, key)))}"
                                      f":{section}:{key}")
    values["exports"], values["sensors"] = new["exports"], new["sensors"]
    merged = Config(values, new.path, origin)

    errors: list[str] = []
    changes: tuple[list[str], list[str], list[str]] = ([], [], [])
    made: dict[str, Any] = {}
    if sensors is not None:
        changes = sensors.changes(new["sensors"])
        for name in changes[0] + changes[1]:
            try:
                made[name] = drivers.for_section(new["sensors"][name], running["node"]["data_dir"], reactor)
            except ConfigError as e:
                errors.extend(e.errors)
    tls_options = None
    if tls is not None:  # (read again even if the file names the same files: a renewed certificate)
        try:
            tls_options = tls.load(merged["web"])
        except ValueError as e:
            key = tls_error_key(merged)
            errors.append(f"{merged.origin.get(('web', key), new.path)}:web:{key}: {e}")
    if errors:
        raise ConfigError(errors)
    return Plan(merged, restart_needed, changes, made, tls_options, log_changed=running["log"] != new["log"])


@dataclass
class Reloadable:
    """The node's parts a reload changes (sensors None in a worker process: it polls none)."""

    log_observer: NodeLog
    tls: ServerTLS | None
    sensors: Sensors | None
    exports: ExportTargets
    station_list: StationList | None
    reactor: Any


async def reload(running: Config, parts: Reloadable) -> tuple[Config, dict[str, Any]]:
    """Read ``running``'s file again and apply it, or refuse it (logged either way): the
    configuration now running, and the outcome."""
    try:
        new = configuration.load(running.path, environ={})
        checked = plan(running, new, parts.sensors, parts.tls, parts.reactor)
    except ConfigError as e:
        for error in e.errors:
            log.error("Reload refused, the running configuration stays: {error}", error=error)
        return running, {"result": "refused", "errors": e.errors}
    config = checked.config
    for key in checked.restart_needed:
        log.warn("Reload: {key} changed; it takes effect at the next restart", key=key)
    if checked.log_changed:
        parts.log_observer.configure(config["log"])
    if parts.tls is not None:
        parts.tls.use(config["web"], checked.tls_options)
        log.info("TLS certificate reloaded from {path}", path=parts.tls.cert_path)
    if parts.sensors is not None:
        parts.sensors.reconfigure(config["sensors"], checked.drivers)
    targets = await parts.exports.configure(config["exports"])
    if parts.station_list is not None:
        parts.station_list.path = cast(str, config["ingest"]["station_list"])
        await parts.station_list.check(force=True)
    changes = {"sensors": dict(zip(("added", "changed", "removed"), checked.sensors)),
               "exports": dict(zip(("added", "changed", "removed"), targets)), "log": checked.log_changed}
    log.info("Reload done: sensors {sensors}, export targets {exports}{log_note}{restart_note}",
             sensors=_summary(changes["sensors"]), exports=_summary(changes["exports"]),
             log_note=", log settings changed" if checked.log_changed else "",
             restart_note=f"; {len(checked.restart_needed)} change(s) wait for a restart"
             if checked.restart_needed else "")
    return config, {"result": "applied", "changes": changes, "restart_needed": checked.restart_needed, "errors": []}


def _summary(changes: Any) -> str:
    said = [f"{what} {', '.join(names)}" for what, names in changes.items() if names]
    return "; ".join(said) if said else "unchanged"


# -- how stationd-admin reaches the node ------------------------------------------------------

def write_pid(data_dir: str) -> None:
    _write(os.path.join(data_dir, PID_FILE), f"{os.getpid()}\n")


def remove_pid(data_dir: str) -> None:
    path = os.path.join(data_dir, PID_FILE)
    try:
        with open(path) as f:
            if f.read().strip() == str(os.getpid()):
                os.remove(path)
    except OSError:
        pass


def write_result(data_dir: str, result: dict[str, Any]) -> None:
    _write(os.path.join(data_dir, RESULT_FILE), json.dumps(result, indent=1) + "\n")


def _write(path: str, text: str) -> None:
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


class NotRunning(Exception):
    pass


def node_pid(data_dir: str) -> int:
    """The pid of the node running on ``data_dir``; NotRunning (with why) if there is none."""
    path = os.path.join(data_dir, PID_FILE)
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        raise NotRunning(f"no node is running on {data_dir} (no pid in {path})") from None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        raise NotRunning(f"no node is running on {data_dir} (pid {pid} of {path} is gone)") from None
    if b"stationd" not in command:  # a pid left by a node that was killed, and reused since
        raise NotRunning(f"no node is running on {data_dir} (pid {pid} of {path} is another program)")
    return pid


def request(data_dir: str, timeout: float = 60.0) -> dict[str, Any]:
    """Make the node on ``data_dir`` reload; its outcome (as reload.json says), or TimeoutError."""
    pid = node_pid(data_dir)
    path = os.path.join(data_dir, RESULT_FILE)
    asked = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                result = json.load(f)
            if result.get("pid") == pid and result.get("requested", 0) >= asked - 0.001:
                return dict(result)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the node (pid {pid}) did not report a reload within {timeout:g} s")
