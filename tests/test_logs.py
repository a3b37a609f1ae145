import datetime
import io
import json
import time

from twisted.logger import Logger, LogPublisher

from stationd.logs import NodeLog


def emit(config):
    out = io.StringIO()
    publisher = LogPublisher(NodeLog(config, stream=out))
    log = Logger(namespace="t", observer=publisher)
    log.debug("quiet {n}", n=1)
    log.info("hello {n}", n=2)
    log.error("bad {n}", n=3)
    return out.getvalue()


BASE = {"path": None, "rotate_size": 1024, "rotate_keep": 2}


def test_level_filters_and_text_format():
    text = emit({**BASE, "level": "info", "format": "text"})
    assert "quiet" not in text and "hello 2" in text and "bad 3" in text
    assert "quiet 1" in emit({**BASE, "level": "debug", "format": "text"})
    assert "hello" not in emit({**BASE, "level": "error", "format": "text"})


def test_json_format_is_a_line_a_shipper_reads_as_it_is():
    lines = emit({**BASE, "level": "info", "format": "json"}).splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["namespace"], r["message"], r["n"]) for r in records] == [
        ("info", "t", "hello 2", 2), ("error", "t", "bad 3", 3)]
    when = datetime.datetime.fromisoformat(records[0]["time"])  # ISO 8601, UTC
    assert when.utcoffset() == datetime.timedelta(0) and abs(when.timestamp() - time.time()) < 60


def test_json_format_carries_a_failure_and_fields_json_cannot():
    out = io.StringIO()
    log = Logger(namespace="t", observer=LogPublisher(NodeLog({**BASE, "level": "info", "format": "json"},
                                                                     stream=out)))
    try:
        1 / 0
    except ZeroDivisionError:
        log.failure("Sum of {what}", what=object())
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["level"] == "critical" and record["message"].startswith("Sum of ")
    assert "ZeroDivisionError" in record["traceback"] and isinstance(record["what"], str)


def test_log_file_rotates_by_size(tmp_path):
    config = {**BASE, "path": str(tmp_path / "logs" / "node.log"), "level": "info", "format": "text"}
    publisher = LogPublisher(NodeLog(config))
    log = Logger(namespace="t", observer=publisher)
    for i in range(200):
        log.info("line {i} " + "x" * 40, i=i)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
