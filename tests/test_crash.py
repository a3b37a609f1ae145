"""The short form of the SIGKILL crash test (tests/crash_ingest.py has the long one)."""

import pytest

from crash_ingest import run

pytestmark = pytest.mark.e2e  # real twistd processes: pytest -m 'not e2e' leaves them out


def test_acknowledged_uploads_survive_20_sigkills(tmp_path):
    events, kills = run(kills=20, workdir=str(tmp_path), seed=20261121)  # two HiSPARC, two native clients
    assert kills == 20
    assert events > 0  # uploads were acknowledged between the kills
