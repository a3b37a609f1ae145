"""The shapes that travel from ingest through the group commit and the spool into the store."""

from typing import Any, NotRequired, TypedDict


class Event(TypedDict):
    """An event as Ingest stamps it: its data as canonical JSON text (stationd.jsoncodec.canonical)."""

    type: str
    time_ns: int
    data_json: str
    digest: str
    id: NotRequired[str]
    quarantine: NotRequired[str | None]  # why it is quarantined, or None


class Record(TypedDict):
    """A station's batch: what GroupCommit stores, or the spool keeps until the store can."""

    protocol: str  # "native" | "hisparc"
    station: str
    received_ns: int
    idempotency_key: str | None
    events: list[Event]
    duplicates: int  # repeats within the batch, left out of events
    response: NotRequired[dict[str, Any]]  # the answer given, set when spooled


class Answer(TypedDict):
    accepted: int
    duplicates: int
    quarantined: int
    replayed: NotRequired[bool]  # the Idempotency-Key's earlier answer
    spooled: NotRequired[bool]  # made durable in the spool, the store being unavailable
