"""A HiSPARC payload decoder process (stationd.decoders starts it and talks to it).

Untrusted pickles are decoded here, not in the node: under an address-space limit
(RLIMIT_AS), so a payload that makes the unpickler ask for gigabytes gets a MemoryError, and
with the node's time limit around each payload, so one that takes too long costs this
process, which the node replaces.  Frames on stdin: a 4-byte big-endian length, a format
byte (0 pickle, 1 JSON), the payload; on stdout: a 4-byte length, then ``0`` and the events
as JSON ``[[type, time_ns, data_json, digest], ...]``, or ``1`` and why the payload was
refused.  Imports only what decoding needs (no Twisted, no store): it stays small.
"""

import resource
import struct
import sys

from stationd import jsoncodec
from stationd.hisparc import DecodeError, decode_upload

FORMATS = {0: "pickle", 1: "json"}


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def decode(data: bytes, fmt: int) -> bytes:
    """One payload's answer frame body."""
    try:
        events = decode_upload(data, FORMATS[fmt])
        rows = []
        for event in events:
            if "\x00" in event["type"]:
                raise DecodeError("NUL in the event type")
            try:
                data_json, digest = jsoncodec.canonical(event["data"])
            except ValueError as e:  # a NUL the store could not keep
                raise DecodeError(str(e)) from None
            rows.append([event["type"], event["time_ns"], data_json, digest])
        return b"\x00" + jsoncodec.dumps(rows)
    except DecodeError as e:
        return b"\x01" + str(e).encode("utf-8", "replace")
    except MemoryError:
        return b"\x01" + b"decoding it needs more memory than a decoder may use ([ingest] decode_memory)"


def main() -> None:
    memory = int(sys.argv[1])  # bytes this process may grow by
    limit = _vm_size() + memory
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError) as e:  # (a sandbox that forbids it: decode on, bounded in time only)
        sys.stderr.write(f"no memory limit for this decoder ({e}): a hostile payload may take much memory\n")
        sys.stderr.flush()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(5)
        if len(head) < 5:  # the node closed the pipe: it stops, or replaces this process
            return
        size, fmt = struct.unpack(">IB", head)
        answer = decode(stdin.read(size), fmt)
        stdout.write(struct.pack(">I", len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    main()
