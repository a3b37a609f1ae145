"""The short form of the SIGKILL crash test (tests/crash_ingest.py has the long one), on each backend.

    STATIOND_CRASH_KILLS=60 pytest tests/test_crash.py     # longer (20 kills a backend by default)
"""

import os

import pytest

from crash_ingest import run

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out

KILLS = int(os.environ.get("STATIOND_CRASH_KILLS", "20"))


def test_acknowledged_uploads_survive_sigkills(tmp_path, database_url):
    """Two HiSPARC and two native clients (an Idempotency-Key a batch), each batch sent until it is
    acknowledged; SQLite, and PostgreSQL where STATIOND_TEST_DATABASE_URL is set (else skipped,
    saying so)."""
    workdir = tmp_path / "crash"
    workdir.mkdir()
    result = run(kills=KILLS, workdir=str(workdir), seed=20261121, database_url=database_url)
    assert result["kills"] == KILLS
    assert result["events"] > 0  # uploads were acknowledged between the kills
    assert result["retries"] > 0  # and some were sent again: the kills cut batches off
