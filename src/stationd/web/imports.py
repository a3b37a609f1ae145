"""Node-to-node import: POST /api/v1/import and PUT /api/v1/import/files/{id} (role importer).

A batch is stored in one transaction before it is answered (with SQLite's
synchronous=FULL and PostgreSQL's commit that is durable), idempotently by
event and file id, so an exporter that lost an answer just sends again.
The answer lists the files whose contents this node still lacks; the
exporter PUTs each, checked against the announced SHA-256 and size.
"""

import re

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from stationd.filestore import ContentMismatch, FileStore
from stationd.ingest import Ingest
from stationd.jsoncodec import NUL_MESSAGE, canonical, has_nul
from stationd.store import Store, files, stations
from stationd.writer import Busy, StoreRefused, StoreUnavailable
from stationd.times import MAX_NS, MIN_NS, parse_time
from stationd.web.auth import Authenticator, require
from stationd.web.http import HTTPError, json_body, read_json, route

MAX_BATCH = 10000
_UUID = re.compile(r"^[0-9a-fA-F-]{1,36}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _int(value, what, low=MIN_NS, high=MAX_NS):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}")
    return value


def _text(value, what, limit=255, required=True):
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        raise ValueError(f"{what} must be text of 1 to {limit} characters")
    return value


def parse_file(record):
    if not isinstance(record, dict):
        raise ValueError("a file must be an object")
    if not isinstance(record.get("id"), str) or not _UUID.match(record["id"]):
        raise ValueError("file id must be a UUID")
    if not isinstance(record.get("sha256"), str) or not _SHA256.match(record["sha256"]):
        raise ValueError("file sha256 must be 64 lower-case hex digits")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("file meta must be an object")
    if has_nul(meta):
        raise ValueError("file meta " + NUL_MESSAGE.removeprefix("data "))
    return {"id": record["id"], "sha256": record["sha256"], "meta": meta,
            "name": _text(record.get("name"), "file name"),
            "mime_type": _text(record.get("mime_type"), "file mime_type", 127),
            "semantic_type": _text(record.get("semantic_type"), "file semantic_type", 127, required=False),
            "size": _int(record.get("size"), "file size", 0),
            "time_ns": _int(record.get("time_ns"), "file time_ns"),
            "created_ns": _int(record.get("created_ns"), "file created_ns"),
            "origin": _text(record.get("origin"), "file origin")}


def parse_import_event(event, sender):
    """An exported event as the store takes it; ValueError naming what is wrong."""
    if not isinstance(event, dict):
        raise ValueError("an event must be an object")
    if not isinstance(event.get("id"), str) or not _UUID.match(event["id"]):
        raise ValueError("id must be a UUID")
    station = stations.check_id(_text(event.get("station"), "station", 64))
    time_ns = event["time_ns"] if "time_ns" in event else parse_time(event.get("time"))
    data = event.get("data")
    if not isinstance(data, dict):
        raise ValueError("data must be an object")
    # As at ingest: a PostgreSQL store, here or upstream, could not keep a NUL.
    data_json, data_digest = canonical(data)
    quarantined = event.get("quarantined", False)
    if not isinstance(quarantined, bool):
        raise ValueError("quarantined must be true or false")
    listed = event.get("files", [])
    if not isinstance(listed, list):
        raise ValueError("files must be a list")
    return {"id": event["id"], "station": station, "type": _text(event.get("type"), "type", 64),
            "time_ns": _int(time_ns, "time_ns"), "received_ns": _int(event.get("received_ns", 0), "received_ns"),
            "data_json": data_json, "digest": data_digest, "origin": _text(event.get("origin", sender), "origin"),
            "quarantined": quarantined,
            "quarantine_reason": _text(event.get("quarantine_reason"), "quarantine_reason", required=False),
            "files": [parse_file(f) for f in listed]}


class Import:
    def __init__(self, store: Store, auth: Authenticator, files: FileStore, ingest: Ingest, node_name: str,
                 node_id: str, clock: IReactorTime):
        self.store, self.auth, self.files, self.ingest = store, auth, files, ingest
        self.node_name, self.node_id = node_name, node_id  # exporters leave out events from here
        self.clock = clock

    @route("POST", "/api/v1/import")
    @require("importer")
    async def import_events(self, request):
        """{"origin": sending node's id, "events": [...]} -> {"accepted", "duplicates", "need": [file ids]}."""
        body = read_json(request)
        batch, sender = body.get("events"), body.get("origin")
        if sender == self.node_id:
            raise HTTPError(409, f"the sender has this node's own node id {self.node_id}: a node exporting to "
                            "itself, or a copy of its store; run `stationd-admin new-node-id` on the copy",
                            code="same_node_id")
        if not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH:
            raise HTTPError(422, f'body must be {{"origin", "events": [...]}} with 1 to {MAX_BATCH} events')
        parsed, errors = [], []
        for index, event in enumerate(batch):
            try:
                parsed.append(parse_import_event(event, sender))
            except (ValueError, TypeError) as e:
                errors.append({"index": index, "message": str(e)})
        if errors:
            raise HTTPError(422, f"{len(errors)} invalid event(s); nothing of this batch was stored",
                            code="invalid_events", details=errors)
        try:
            counts, records = await self.ingest.accept_import(parsed)
        except (StoreUnavailable, Busy) as e:
            raise HTTPError(503, f"cannot import now: {e}", headers={"Retry-After": "10"}) from None
        except StoreRefused as e:
            raise HTTPError(500, str(e), code="store_refused") from None
        missing = []
        if records:  # most batches have no files: no thread hop for them
            missing = await deferToThread(self._missing, records)
        # The batch's objects are let go after the answer has left (two reactor
        # turns from now: the first runs with this one's thread callbacks, before
        # the poll that writes the answer), while the exporter goes on: freeing
        # them once the writer's work has pushed them out of the CPU caches took
        # ~20 ms of a 5000-event round (docs/performance.rst, Export).
        held = [body, batch, parsed, records]
        del body, batch, parsed, records, event
        self.clock.callLater(0, self.clock.callLater, 0, held.clear)
        return json_body(request, {**counts, "need": missing, "node": self.node_name, "node_id": self.node_id})

    def _missing(self, records):
        """The ids of the file records whose contents this node lacks (in a thread: it stats files)."""
        return sorted({r["id"] for r in records if not self.files.has(r["sha256"])})

    @route("PUT", "/api/v1/import/files/<file_id>")
    @require("importer")
    async def import_file(self, request, file_id):
        """The content of a file announced by an import; checked against its SHA-256 and size."""
        record = await self.store.read(files.content_of, file_id)
        if record is None:
            raise HTTPError(404, f"no file {file_id}: import its event first")
        request.content.seek(0)
        try:
            await deferToThread(self.files.put, request.content, record["sha256"], record["size"])
        except ContentMismatch as e:
            raise HTTPError(422, f"file {file_id}: {e}; nothing kept", code="content_mismatch") from None
        return json_body(request, {"id": file_id, "sha256": record["sha256"], "size": record["size"]})
