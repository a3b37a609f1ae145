import io
import json

from twisted.logger import Logger, LogPublisher

from stationd.logs import make_observer


def emit(config):
    out = io.StringIO()
    publisher = LogPublisher(make_observer(config, stream=out))
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


def test_json_format_keeps_fields():
    records = [json.loads(r) for r in emit({**BASE, "level": "info", "format": "json"}).split("\x1e") if r.strip()]
    assert [r["n"] for r in records] == [2, 3]


def test_log_file_rotates_by_size(tmp_path):
    config = {**BASE, "path": str(tmp_path / "logs" / "node.log"), "level": "info", "format": "text"}
    publisher = LogPublisher(make_observer(config))
    log = Logger(namespace="t", observer=publisher)
    for i in range(200):
        log.info("line {i} " + "x" * 40, i=i)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
