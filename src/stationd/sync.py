"""stationd-client sync: push a directory of JSON event files to a node, each once.

What was sent is remembered in a state file (per node URL and station):
a file whose size and mtime, or else content, match its record is skipped.
Every request carries an Idempotency-Key made of the file's SHA-256 and the
events' positions, so a resend after a lost answer stores nothing twice.
"""

import datetime
import fnmatch
import hashlib
import json
import os
import time

from stationd.client import ClientError
from stationd.filestore import replace_file

SYNC_STATE = ".stationd-sync.json"  # in the synced directory unless told otherwise
SYNC_BATCH = 1000  # events a request when a file holds more


def is_rejection(error):
    """Whether a ClientError refuses that batch for its content alone (another batch may go through):
    400, 413 and 422 of the native ingest, HiSPARC 201 and 208; not an unreachable, busy or
    unauthorized node, an unknown station or a wrong password, which refuse every batch."""
    return error.status in (400, 413, 422) or error.code in ("201", "208")


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_events(data):
    """The events of a JSON event file (bytes): one event object, a list of events, or
    {"events": [...]} (the native ingest's body).  ValueError saying why not."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if isinstance(value, dict):
        value = value["events"] if "events" in value and "type" not in value else [value]
    if isinstance(value, list) and value:
        return value
    raise ValueError("no events in it" if value == [] else
                     "not an event object, a list of events, or {\"events\": [...]}")


def _idempotency_key(sha256, start, end):
    # The same bytes and the same slice of their events: the same request body.
    return f"stationd-{sha256}-{start}-{end}"


async def send_events(client, station, events, sha256, batch_size=SYNC_BATCH):
    """Native ingest of one file's ``events`` in batches of ``batch_size``, each with an
    Idempotency-Key made of the file's SHA-256 and the batch's place in it (a resend stores
    nothing twice).  Totals {"events", "accepted", "duplicates", "quarantined", "replayed"
    (batches)}.  A refused batch raises its ClientError, the message naming the events (by
    their index in the file) and what went through before it."""
    totals = {"events": len(events), "accepted": 0, "duplicates": 0, "quarantined": 0, "replayed": 0}
    for start in range(0, len(events), batch_size):
        end = min(start + batch_size, len(events))
        try:
            answer = await client.upload_events(station, events[start:end], _idempotency_key(sha256, start, end))
        except ClientError as e:
            details = getattr(e, "details", None)
            if isinstance(details, list) and details:
                e.args = (f"{e}: " + "; ".join(
                    f"event {start + d.get('index', 0)}: {d.get('message')}" for d in details[:5]
                    if isinstance(d, dict)) + (f"; and {len(details) - 5} more" if len(details) > 5 else ""),)
            if start:
                e.args = (f"{e} (events 0 to {start - 1} were stored)",)
            raise
        for name in ("accepted", "duplicates", "quarantined"):
            totals[name] += answer.get(name, 0)
        totals["replayed"] += bool(answer.get("replayed"))
    return totals


def load_sync_state(path):
    """The sync state in ``path`` ({"version": 1, "targets": {url: {station: {name: entry}}}}),
    empty if there is none; ValueError if it is not one."""
    try:
        with open(path, "rb") as f:
            state = json.load(f)
    except FileNotFoundError:
        return {"version": 1, "targets": {}}
    except ValueError as e:
        raise ValueError(f"{path}: not a sync state ({e}); remove it to send everything again") from None
    if not (isinstance(state, dict) and state.get("version") == 1 and isinstance(state.get("targets"), dict)):
        raise ValueError(f"{path}: not a sync state (version 1); remove it to send everything again")
    return state


def save_sync_state(path, state):
    """Write ``state`` to ``path`` atomically: an interruption leaves the old state or the new one."""
    replace_file(path, json.dumps(state, indent=1, sort_keys=True).encode("utf-8") + b"\n")


def _read_unless(path, entry):
    """(stat, content) of a file; content None if its size and mtime are the ``entry``'s."""
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        if entry and (entry.get("size"), entry.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
            return stat, None
        return stat, f.read()


async def sync_directory(client, directory, station, state_path=None, pattern="*.json", batch_size=SYNC_BATCH,
                         report=None, save_every=1.0, clock=time.monotonic, listed=None):
    """Send the JSON event files of ``directory`` (names matching ``pattern``; hidden files
    never) that the node has not acknowledged before, by native ingest as ``station``.

    What was acknowledged is remembered in ``state_path`` (default DIRECTORY/.stationd-sync.json),
    per node URL and station: each file's name, SHA-256, size and mtime.  A file whose size and
    mtime are as recorded is skipped unread; one whose content is as recorded is skipped after
    hashing.  The state is saved atomically after an acknowledged file (at most once every
    ``save_every`` seconds: a crash loses at most that much of it, and a resend of those files
    stores nothing twice, by their Idempotency-Keys) and when the run ends, however it ends.

    A file that cannot be read or that the node refuses for its content (is_rejection) is not
    recorded; the run goes on with the next.  Any other error of the node (unreachable, busy,
    a wrong key, an unknown station) stops the run: "stopped" says why, and the next run
    resumes.  ``report`` is called with each file's outcome {"file", "result": "sent" | "skipped"
    | "failed", ...} as it is known; ``listed`` with the number of files it will look at, once
    they are listed (a progress display's total, which ``report`` then counts).  Returns the
    summary {"sent", "skipped", "failed", "events", "accepted", "duplicates", "quarantined",
    "stopped"}.
    """
    directory = os.path.abspath(directory)
    state_path = os.path.abspath(state_path or os.path.join(directory, SYNC_STATE))
    state = load_sync_state(state_path)
    names = sorted(name for name in os.listdir(directory)
                   if not name.startswith(".") and fnmatch.fnmatch(name, pattern)
                   and os.path.join(directory, name) != state_path
                   and os.path.isfile(os.path.join(directory, name)))
    present = set(names)
    if listed is not None:
        listed(len(names))
    known = state["targets"].setdefault(client.url, {}).setdefault(str(station), {})
    summary = {"sent": 0, "skipped": 0, "failed": 0, "events": 0, "accepted": 0, "duplicates": 0,
               "quarantined": 0, "stopped": None}
    dirty, saved = False, clock()

    def save():
        nonlocal dirty, saved
        for name in [name for name in known if name not in present]:
            del known[name]  # gone from the directory: a file of that name is new again
        save_sync_state(state_path, state)
        dirty, saved = False, clock()

    def tell(outcome):
        summary[outcome["result"]] += 1
        if report is not None:
            report(outcome)

    try:
        for name in names:
            entry = known.get(name)
            try:
                stat, data = _read_unless(os.path.join(directory, name), entry)
            except OSError as e:
                tell({"file": name, "result": "failed", "error": f"cannot read it: {e.strerror}"})
                continue
            if data is None:
                tell({"file": name, "result": "skipped"})
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            if entry and entry.get("sha256") == sha256:
                entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)  # touched, not changed
                dirty = True
                tell({"file": name, "result": "skipped"})
                continue
            try:
                events = read_events(data)
            except ValueError as e:
                tell({"file": name, "result": "failed", "error": str(e)})
                continue
            try:
                totals = await send_events(client, station, events, sha256, batch_size)
            except ClientError as e:
                if not is_rejection(e):
                    summary["stopped"] = f"{name}: {e}"
                    break
                tell({"file": name, "result": "failed", "error": str(e), "status": e.status})
                continue
            # A file that grew while it was read never matches its recorded size: hashed again next time.
            known[name] = {"sha256": sha256, "size": len(data) if len(data) == stat.st_size else -1,
                           "mtime_ns": stat.st_mtime_ns, "events": len(events),
                           "sent_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
            dirty = True
            for key in ("events", "accepted", "duplicates", "quarantined"):
                summary[key] += totals[key]
            tell({"file": name, "result": "sent", **totals})
            if clock() - saved >= save_every:
                save()
    finally:
        if dirty or not present.issuperset(known):
            save()
    return summary
