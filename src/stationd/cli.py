"""stationd-client: a node's API from the command line.

URL, API key and CA come from --url/--api-key/--ca, else $STATIOND_URL,
$STATIOND_API_KEY, $STATIOND_CA.
"""

import argparse
import datetime
import hashlib
import json
import os
import sys

from twisted.internet import defer, task

from stationd import __version__
from stationd.client import MAX_PAGE, Client, ClientError, parse_constraint
from stationd.filestore import replace_file
from stationd.progress import Progress
from stationd.sync import SYNC_BATCH, SYNC_STATE, is_rejection, read_events, send_events, sync_directory

DATA_WIDTH = 100  # characters of an event's data in the table; --json shows it all


async def heartbeat(client, args):
    print(await client.heartbeat())


async def status(client, args):
    print(json.dumps(await client.status(), indent=2))


async def query(client, args):
    events = client.iter_events(
        station=args.station, type=args.type, after=args.after, before=args.before, fields=args.field,
        quarantined=args.quarantined, order=args.order, page_size=args.page_size, limit=args.limit or None)
    header = ("TIME", "STATION", "TYPE", "ID", "DATA")
    if args.output is None:
        await _listing(events, args, header, _event_row, "events")
        return
    directory, name = os.path.split(os.path.abspath(args.output))
    temp = os.path.join(directory, f".{name}.{os.getpid()}.part")
    try:
        with open(temp, "w", encoding="utf-8") as out:
            count = await _listing(events, args, header, _event_row, "events", out)
        os.replace(temp, args.output)  # never a half-written file, whatever stops the listing
    except OSError as e:
        fail(f"cannot write {args.output}: {e.strerror}")
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    print(_compact({"file": args.output, "events": count}) if args.json else f"{args.output}: {count} events")


def _progress(args, total, unit, label, quiet=False):
    """The progress line of long work: on stderr when it is a terminal, and not with --quiet."""
    return Progress(total, unit, label, quiet=quiet or getattr(args, "quiet", False))


async def files(client, args):
    records = client.iter_files(
        station=args.station, semantic_type=args.semantic_type, mime_type=args.mime_type, after=args.after,
        before=args.before, meta=args.meta, order=args.order, page_size=args.page_size,
        limit=args.limit or None)
    await _listing(records, args, ("TIME", "STATION", "SEMANTIC TYPE", "MIME TYPE", "SIZE", "ID", "NAME"),
                   _file_row, "files")


async def _listing(items, args, header, row, unit, out=None):
    """JSON Lines as the pages arrive, or a table once all are in, to ``out`` (default stdout);
    the number of items.

    The items are counted on the progress line while the cursors are followed to
    a file (``out``, or stdout redirected), not while they print on the terminal."""
    rows, count = [], 0
    to_file = out is not None or not _isatty(sys.stdout)
    with _progress(args, None, unit, "", quiet=not to_file) as progress:
        async for item in items:
            count += 1
            if args.json:
                print(_compact(item), file=out)
            else:
                rows.append(row(item))
            progress.update(1)
    if not args.json:
        _table([header] + rows, out=out)
        if args.limit and count == args.limit:
            sys.stderr.write(f"(stopped at --limit {args.limit})\n")
    return count


def _event_row(event):
    data = _compact(event["data"])
    if len(data) > DATA_WIDTH:
        data = data[:DATA_WIDTH - 3] + "..."
    if event.get("quarantined"):
        data += f"  [quarantined: {event.get('quarantine_reason')}]"
    return event["time"], event["station"], event["type"], event["id"], data


def _file_row(record):
    return (record["time"], record["station"], record["semantic_type"] or "-", record["mime_type"],
            str(record["size"]), record["id"], record["name"])


async def event(client, args):
    event = await client.event(args.id)
    if args.json:
        print(json.dumps(event, indent=2, ensure_ascii=False))
        return
    quarantined = f"yes: {event['quarantine_reason']}" if event["quarantined"] else "no"
    _fields([("id", event["id"]), ("station", event["station"]), ("type", event["type"]),
             ("time", event["time"]), ("received", event["received_at"]), ("origin", event["origin"]),
             ("quarantined", quarantined), ("data", json.dumps(event["data"], indent=2, ensure_ascii=False))])
    if event["files"]:
        print("files:")
        _table([_file_row(f) for f in event["files"]], indent="  ")


async def file(client, args):
    record = await client.file(args.id)
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return
    _fields([("id", record["id"]), ("name", record["name"]), ("station", record["station"]),
             ("time", record["time"]), ("semantic type", record["semantic_type"] or "-"),
             ("mime type", record["mime_type"]), ("size", f"{record['size']} bytes"),
             ("sha256", record["sha256"]), ("created", record["created_at"]), ("origin", record["origin"]),
             ("events", " ".join(record.get("events", [])) or "-"),
             ("meta", json.dumps(record["meta"], indent=2, ensure_ascii=False))])


async def download(client, args):
    path, record = args.output, None
    if path is None or os.path.isdir(path):
        record = await client.file(args.id)
        name = default_name(record["name"])
        path = name if path is None else os.path.join(path, name)
    progress = _progress(args, None, "B", path)
    if progress.enabled and record is None:
        record = await client.file(args.id)  # its size: the progress line's total
    progress.total = record["size"] if record else None
    try:
        with progress:
            size = await client.download(args.id, path, progress.update)
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror}")
    print(f"{path}: {size} bytes")


def default_name(name):
    """A record's name as a file name here: its last path component, never . or .."""
    name = os.path.basename(name.replace("\\", "/")).strip()
    return name if name not in ("", ".", "..") else "download"


async def exports(client, args):
    """Without an action, each target's state; with one, the admin operations on targets."""
    if args.action in ("add", "change", "pause", "resume", "remove") and not args.name:
        fail(f"exports {args.action}: name the target")
    if args.action == "list":
        targets = await client.export_targets()
        if args.json:
            print(json.dumps(targets, indent=2))
        for target in [] if args.json else targets:
            settings = " ".join(f"{k}={v}" for k, v in target["settings"].items())
            paused = ", paused" if target["paused"] else ""
            print(f"{target['name']} ({target['source']}{paused}): {target['status']['state']}; {settings}")
        return
    if args.action in ("add", "change"):
        settings = _settings(args.settings)
        function = client.add_export if args.action == "add" else client.change_export
        target = await function(args.name, settings)
    elif args.action in ("pause", "resume"):
        target = await client.change_export(args.name, paused=args.action == "pause")
    elif args.action == "remove":
        await client.remove_export(args.name)
        print(json.dumps({"removed": args.name}) if args.json else f"{args.name}: removed")
        return
    else:
        await _export_states(client, args)
        return
    print(json.dumps(target, indent=2) if args.json else
          f"{target['name']}: {'paused' if target['paused'] else target['status']['state']}")


def _settings(pairs):
    """KEY=VALUE arguments; an empty value sets the key back to its default."""
    settings = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            fail(f"{pair!r}: expected KEY=VALUE")
        settings[key] = value or None
    return settings


async def _export_states(client, args):
    targets = await client.exports()
    if args.json:
        print(json.dumps(targets, indent=2))
        return
    for name, state in sorted(targets.items()):
        if state["state"] == "paused":
            print(f"{name}: paused -> {state['target_url']}")
            continue
        line = f"{name}: {state['state']} -> {state['target_url']}, lag {state['lag_seconds']:.1f} s"
        if state.get("opens_at"):
            line += f", opens {state['opens_at']}"
        skipped = {reason: state.get("events", {}).get(f"skipped_{reason}") for reason in ("filter", "origin")}
        line += "".join(f", {n} skipped by {reason}" for reason, n in skipped.items() if n)
        if state["failing_since"]:
            line += f", failing since {state['failing_since']}: {state['last_error']}"
        print(line)


async def get_config(client, args):
    text = await client.get_config(args.datestr, args.name, short=args.short, actual=args.actual)
    if args.name != "fplane":
        text = json.dumps(text, indent=2, ensure_ascii=False) + "\n"
    path = args.output or (f"{args.name}{args.datestr or datetime.date.today().strftime('%Y%m%d')}.txt"
                           if args.name == "fplane" else "-")
    if path == "-":
        sys.stdout.write(text)
        return
    replace_file(path, text.encode("utf-8"))
    print(path)


async def put_config(client, args):
    try:
        with open(args.file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {args.file}: {e}")
    answer = await client.put_config(config, args.commit, args.name, args.valid_from)
    sys.stdout.write(answer if isinstance(answer, str) else json.dumps(answer, indent=2) + "\n")
    if not args.commit:
        sys.stderr.write("stationd-client: a preview: nothing was stored (use --commit)\n")


async def stations(client, args):
    found = await client.stations()
    if args.json:
        for station in found:
            print(_compact(station))
        return
    rows = [("ID", "NAME", "CLUSTER", "INSTRUMENT", "LAT, LON, ALT", "SINCE")]
    for station in found:
        status = station.get("status") or {}
        rows.append((station["id"], station["name"] or "-", station["cluster"] or "-",
                     status.get("instrument") or "-", _location(status.get("location")),
                     status.get("valid_from") or "-"))
    _table(rows)


async def station(client, args):
    station = await client.station(args.id)
    if args.json:
        print(json.dumps(station, indent=2, ensure_ascii=False))
        return
    counts = station.get("counts") or {}
    _fields([("id", station["id"]), ("name", station["name"] or "-"), ("cluster", station["cluster"] or "-"),
             ("events", str(counts.get("events", "-"))), ("first event", counts.get("first_event_time") or "-"),
             ("last event", counts.get("last_event_time") or "-"),
             ("quarantined", str(counts.get("quarantined", "-")))])
    if station.get("history"):
        print("status history:")
        _table([("VALID FROM", "VALID TO", "INSTRUMENT", "LAT, LON, ALT", "ORIENTATION")]
               + [(h["valid_from"], h["valid_to"] or "-", h["instrument"] or "-", _location(h["location"]),
                   _compact(h["orientation"]) if h["orientation"] is not None else "-")
                  for h in station["history"]], indent="  ")


async def sensors(client, args):
    """Without a name, every sensor's last reading; with one, its readings over a time range."""
    if args.name is None:
        found = await client.sensors()
        if args.json:
            for sensor in found:
                print(_compact(sensor))
            return
        rows = [("SENSOR", "STATE", "TIME", "VALUES")]
        for sensor in found:
            values = " ".join(f"{field}={_number(r['value'])}{' ' + r['unit'] if r['unit'] else ''}"
                              for field, r in sensor["fields"].items())
            state = sensor["state"] + (f" ({', '.join(sensor['alarms'])})" if sensor["alarms"] else "")
            rows.append((sensor["name"], state, sensor["time"] or "-", values or sensor["last_error"] or "-"))
        _table(rows)
        return
    readings = await client.readings(args.name, args.since, args.until, args.step)
    for reading in readings:
        if args.json:
            print(_compact(reading))
        else:
            print(reading["time"], " ".join(f"{k}={_number(v)}" for k, v in reading["values"].items()))


def _number(value):
    return f"{value:.6g}"


async def display(client, args):
    shown = await client.display(args.message)
    print(json.dumps({"shown": shown}) if args.json else shown)


def _location(location):
    values = [(location or {}).get(k) for k in ("lat", "lon", "alt")]
    return "-" if all(v is None for v in values) else ", ".join("-" if v is None else f"{v:g}" for v in values)


def _compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fields(pairs):
    width = max(len(name) for name, _ in pairs) + 2
    for name, value in pairs:
        print(f"{name + ':':<{width}}{str(value).replace(chr(10), chr(10) + ' ' * width)}")


def _table(rows, indent="", out=None):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        print(indent + "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip(), file=out)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


def _constraint(text):
    try:
        parse_constraint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _count(low, high=None):
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text!r}: use an integer from {low}" + (f" to {high}" if high is not None else " up"))
        return value

    return convert


def _paging_options(command, what):
    command.add_argument("--station", action="append", default=[], metavar="ID",
                         help="only this station (repeat for several)")
    command.add_argument("--after", metavar="TIME",
                         help="from this time on (inclusive): ISO 8601 with a zone, or epoch seconds")
    command.add_argument("--before", metavar="TIME", help="before this time (exclusive)")
    command.add_argument("--order", choices=("desc", "asc"), help="desc (newest first, the default) or asc")
    command.add_argument("--limit", type=_count(0), default=100, metavar="N",
                         help=f"at most N {what} in all (default 100; 0 for all)")
    command.add_argument("--page-size", type=_count(1, MAX_PAGE), metavar="N",
                         help=f"{what} per request (1 to {MAX_PAGE}; default: the node's, 100)")
    _json_flag(command, "one JSON object a line (JSON Lines)")


# Uploads: the node's two ingest protocols, and a directory kept in sync


async def upload(client, args):
    """Each FILE as a batch; a file refused for its content is reported and the others still go."""
    if args.hisparc and not args.password:
        fail("--hisparc needs the station's --password (or $STATIOND_STATION_PASSWORD)")
    failed, stopped = 0, None
    with _progress(args, len(args.files), "files", "upload") as progress:
        for path in args.files:
            progress.label = path  # the file being sent
            progress.update(0)
            try:
                outcome = await _upload_file(client, args, path)
            except (OSError, ValueError) as e:
                outcome = {"file": path, "result": "failed",
                           "error": f"cannot read it: {e.strerror}" if isinstance(e, OSError) else str(e)}
            except ClientError as e:
                if not is_rejection(e):
                    stopped = f"{path}: {e}"
                    break
                outcome = {"file": path, "result": "failed", "error": str(e), "status": e.status}
            failed += outcome["result"] == "failed"
            progress.clear()
            _report_file(args, outcome)
            progress.update(1)
        progress.label = "upload"
    if stopped:
        fail(stopped)
    if failed:
        raise SystemExit(1)


async def _upload_file(client, args, path):
    data = _read_input(path)
    if not args.hisparc:
        totals = await send_events(client, args.station, read_events(data), hashlib.sha256(data).hexdigest(),
                                   args.batch_size)
        return {"file": path, "result": "sent", **totals}
    try:
        json.loads(data)
    except ValueError:  # not JSON: a pickle as a station's upload holds it, sent as it is
        code = await client.upload_hisparc(args.station, args.password, data, "pickle")
        return {"file": path, "result": "sent", "code": code}
    events = read_events(data)
    code = await client.upload_hisparc(args.station, args.password, events, "pickle" if args.pickle else "json")
    return {"file": path, "result": "sent", "code": code, "events": len(events)}


def _read_input(path):
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _report_file(args, outcome):
    if args.json:
        print(_compact(outcome))
    elif outcome["result"] == "failed":
        sys.stderr.write(f"stationd-client: {outcome['file']}: {outcome['error']}\n")
    elif outcome["result"] == "sent":
        print(f"{outcome['file']}: {_totals(outcome)}")


def _totals(outcome):
    if "code" in outcome:  # HiSPARC
        events = f", {outcome['events']} events" if "events" in outcome else ""
        return f"{outcome['code']} (stored{events})"
    replayed = f"; {outcome['replayed']} batch(es) answered as before" if outcome.get("replayed") else ""
    return (f"{outcome['events']} events ({outcome['accepted']} accepted, {outcome['duplicates']} duplicates, "
            f"{outcome['quarantined']} quarantined{replayed})")


async def sync(client, args):
    progress = _progress(args, None, "files", "sync")

    def report(outcome):
        if outcome["result"] != "skipped":  # those print nothing
            progress.clear()
        _report_file(args, outcome)
        progress.update(1)

    def listed(count):
        progress.total = count

    try:
        with progress:
            summary = await sync_directory(client, args.directory, args.station, args.state, args.pattern,
                                           args.batch_size, report=report, listed=listed)
    except OSError as e:
        fail(f"{e.filename or args.directory}: {e.strerror}")
    except ValueError as e:
        fail(str(e))
    if args.json:
        print(_compact({"summary": summary}))
    else:
        print(f"sent {summary['sent']} file(s) ({summary['events']} events: {summary['accepted']} accepted, "
              f"{summary['duplicates']} duplicates, {summary['quarantined']} quarantined); "
              f"skipped {summary['skipped']} already sent; failed {summary['failed']}")
    if summary["stopped"]:
        sys.stderr.write(f"stationd-client: stopped at {summary['stopped']}; run it again to resume\n")
    if summary["failed"] or summary["stopped"]:
        raise SystemExit(1)


def _upload_commands(sub):
    command = sub.add_parser("upload", help="send files of events (native JSON ingest, or --hisparc)")
    command.set_defaults(function=upload)
    command.add_argument("files", nargs="+", metavar="FILE",
                         help="JSON: one event {\"type\", \"time\" or \"time_ns\", \"data\"}, a list of them, or "
                              "{\"events\": [...]}; with --hisparc also HiSPARC events, or a pickle (not JSON) "
                              "sent as it is; - for standard input")
    command.add_argument("--station", required=True, metavar="ID", help="the station the events are of")
    command.add_argument("--hisparc", action="store_true",
                         help="the HiSPARC form upload (POST /upload) with the station's password, "
                              "instead of the native ingest with the API key")
    command.add_argument("--password", default=os.environ.get("STATIOND_STATION_PASSWORD"),
                         help="the station's upload password, for --hisparc ($STATIOND_STATION_PASSWORD)")
    command.add_argument("--pickle", action="store_true",
                         help="with --hisparc: send JSON files' events pickled (as Python 3 stations do), "
                              "not as format=json")
    command.add_argument("--batch-size", type=_count(1), default=SYNC_BATCH, metavar="N",
                         help=f"native: events a request, for larger files (default {SYNC_BATCH})")
    _json_flag(command, "one JSON object a line (JSON Lines), a file each")
    _quiet_flag(command)

    command = sub.add_parser("sync", help="send the event files of a directory not sent before "
                                          "(remembered in a state file)")
    command.set_defaults(function=sync)
    command.add_argument("directory", metavar="DIRECTORY",
                         help="its JSON event files (as upload's FILE) are sent by native ingest")
    command.add_argument("--station", required=True, metavar="ID", help="the station the events are of")
    command.add_argument("--state", metavar="FILE",
                         help=f"what was sent, per node and station (default DIRECTORY/{SYNC_STATE})")
    command.add_argument("--pattern", default="*.json", metavar="GLOB",
                         help="which files (default *.json; hidden files never)")
    command.add_argument("--batch-size", type=_count(1), default=SYNC_BATCH, metavar="N",
                         help=f"events a request, for larger files (default {SYNC_BATCH})")
    _json_flag(command, "one JSON object a line (JSON Lines): a file each, then {\"summary\": ...}")
    _quiet_flag(command)


def _json_flag(command, help):
    """--json after the command; unset when not given there, so a --json before it (the
    top parser's) stands."""
    command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=help)


def _quiet_flag(command):
    """--quiet after the command, as _json_flag: a --quiet before it stands."""
    command.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                         help="no progress line on the terminal: only the result")


def parser():
    env = os.environ.get
    top = argparse.ArgumentParser(prog="stationd-client", description="Talk to a stationd node.")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # (Also after the command: those that have --json leave it unset unless given there.)
    top.add_argument("--json", action="store_true", help="JSON output, for the commands that have it")
    top.add_argument("--quiet", "-q", action="store_true",
                     help="no progress line (download, upload, sync, query --output): only the result")
    top.add_argument("--url", default=env("STATIOND_URL"), help="node URL ($STATIOND_URL)")
    top.add_argument("--api-key", default=env("STATIOND_API_KEY"), help="API key ($STATIOND_API_KEY)")
    top.add_argument("--ca", default=env("STATIOND_CA"),
                     help="PEM file of the CA (or self-signed certificate) to trust ($STATIOND_CA)")
    top.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    top.add_argument("--key", help="client certificate's private key (PEM)")
    top.add_argument("--timeout", type=float, default=30, help="seconds (default 30)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("heartbeat", help="check the node answers").set_defaults(function=heartbeat)
    sub.add_parser("status", help="the node's status (JSON)").set_defaults(function=status)

    command = sub.add_parser("query", help="events matching filters, newest first")
    command.set_defaults(function=query)
    command.add_argument("--type", action="append", default=[], help="only this event type (repeat for several)")
    command.add_argument("--field", action="append", default=[], type=_constraint, metavar="NAME.OP=VALUE",
                         help="a constraint on the event's data, OP one of eq, lt, le, gt, ge "
                              "(e.g. ph.gt=100; \"quoted\" values compare as text; repeat to AND)")
    command.add_argument("--quarantined", choices=("true", "false", "any"),
                         help="quarantined events only (true), none (false, the default) or both (any)")
    command.add_argument("-o", "--output", metavar="FILE",
                         help="write the events there (as they would print; replaced once all are in) and "
                              "print the file's name and their number")
    _paging_options(command, "events")
    _quiet_flag(command)

    command = sub.add_parser("event", help="one event with its files")
    command.set_defaults(function=event)
    command.add_argument("id")
    _json_flag(command, "the event as JSON")

    command = sub.add_parser("files", help="file records matching filters, newest first")
    command.set_defaults(function=files)
    command.add_argument("--semantic-type", action="append", default=[], metavar="TYPE",
                         help="only this semantic type (repeat for several)")
    command.add_argument("--mime-type", action="append", default=[], metavar="TYPE",
                         help="only this MIME type (repeat for several)")
    command.add_argument("--meta", action="append", default=[], type=_constraint, metavar="NAME.OP=VALUE",
                         help="a constraint on the record's meta, as query --field")
    _paging_options(command, "files")

    command = sub.add_parser("file", help="one file record")
    command.set_defaults(function=file)
    command.add_argument("id")
    _json_flag(command, "the record as JSON")

    command = sub.add_parser("download", help="a file's content")
    command.set_defaults(function=download)
    command.add_argument("id")
    command.add_argument("-o", "--output", metavar="FILE",
                         help="where to write it (default: the file's name, here; a directory: that name in it)")
    _quiet_flag(command)

    command = sub.add_parser("stations", help="stations and their current status")
    command.set_defaults(function=stations)
    _json_flag(command, "one JSON object a line (JSON Lines)")

    command = sub.add_parser("sensors", help="sensors and their last readings, or one sensor's readings")
    command.set_defaults(function=sensors)
    command.add_argument("name", nargs="?", help="a sensor: list its readings (default: the last hour)")
    command.add_argument("--since", help="ISO 8601 or epoch seconds")
    command.add_argument("--until", help="ISO 8601 or epoch seconds")
    command.add_argument("--step", type=float, help="average over buckets of this many seconds")
    _json_flag(command, "one JSON object a line (JSON Lines)")

    command = sub.add_parser("display", help="show a message on the node's display (role editor)")
    command.set_defaults(function=display)
    command.add_argument("message")
    _json_flag(command, "as JSON")

    command = sub.add_parser("exports", help="export targets: their state, or (role admin) list, add, change, "
                             "pause, resume or remove one")
    command.set_defaults(function=exports)
    command.add_argument("action", nargs="?", choices=("list", "add", "change", "pause", "resume", "remove"))
    command.add_argument("name", nargs="?")
    command.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                         help="settings as in an [export:NAME] section (add, change; KEY= sets the default)")
    _json_flag(command, "as JSON")

    command = sub.add_parser("get-config", help="an instrument configuration as valid at a date "
                                                "(FPlaneServer's get_fplane.sh)")
    command.set_defaults(function=get_config)
    command.add_argument("datestr", nargs="?", default="",
                         help="YYYYMMDD (that night), YYYYMMDDTHH:MM:SS, ISO 8601, latest; default now")
    command.add_argument("-o", "--output", metavar="FILE",
                         help="where to write it (default fplane<DATESTR>.txt, today's date for an empty "
                              "DATESTR; - for standard output)")
    command.add_argument("-s", "--short", action="store_true", help="active VIRUS units only (full_fplane=0)")
    command.add_argument("-p", "--actual", action="store_true", help="measured positions (actual_pos=1)")
    command.add_argument("--name", default="fplane", help="configuration name (default fplane; others as JSON)")

    command = sub.add_parser("put-config", help="send a new configuration version (a preview unless --commit)")
    command.set_defaults(function=put_config)
    command.add_argument("file", metavar="FILE.json", help="the configuration, e.g. {\"units\": [...]}")
    command.add_argument("--commit", action="store_true", help="store it (otherwise only validate and render)")
    command.add_argument("--name", default="fplane", help="configuration name (default fplane)")
    command.add_argument("--valid-from", metavar="TIME", help="ISO 8601 with zone (default now)")

    command = sub.add_parser("station", help="one station, its status history and event count")
    command.set_defaults(function=station)
    command.add_argument("id")
    _json_flag(command, "the station as JSON")

    _upload_commands(sub)
    return top


async def execute(args, reactor=None):
    """Run the command of ``args``; fail() (SystemExit 1) on an error."""
    try:
        client = Client(args.url, args.api_key, args.ca, args.cert, args.key,
                        reactor=reactor, timeout=args.timeout)
    except OSError as e:
        fail(f"cannot read {e.filename}: {e.strerror}")
    try:
        await args.function(client, args)
    except ClientError as e:
        fail(str(e))
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    finally:
        await client.close()


def main(argv=None):
    args = parser().parse_args(argv)
    if not args.url:
        fail("no node URL: give --url or set STATIOND_URL")
    # react() exits the process with the code of a SystemExit, else 0.
    task.react(lambda reactor: defer.ensureDeferred(execute(args, reactor)), [])


def fail(message):
    sys.stderr.write(f"stationd-client: {message}\n")
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
