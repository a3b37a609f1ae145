"""The content store: once per SHA-256, whole or not at all."""

import hashlib
import io
import os

import pytest

from stationd.filestore import ContentMismatch, FileStore


def test_contents_are_stored_once_under_their_hash(tmp_path):
    store = FileStore(str(tmp_path / "files"))
    content = os.urandom(3 * 1024 * 1024 + 5)  # several chunks
    sha256 = hashlib.sha256(content).hexdigest()
    assert store.put(io.BytesIO(content)) == (sha256, len(content))
    assert store.put(io.BytesIO(content)) == (sha256, len(content))
    path = store.path(sha256)
    assert path == str(tmp_path / "files" / sha256[:2] / sha256[2:4] / sha256)
    assert open(path, "rb").read() == content and store.has(sha256)
    assert os.listdir(tmp_path / "files" / "tmp") == []


@pytest.mark.parametrize("expect", [{"expect_sha256": "0" * 64}, {"expect_size": 3}])
def test_a_content_that_is_not_what_was_announced_leaves_nothing(tmp_path, expect):
    store = FileStore(str(tmp_path / "files"))
    with pytest.raises(ContentMismatch):
        store.put(io.BytesIO(b"four"), **expect)
    assert not store.has(hashlib.sha256(b"four").hexdigest())
    assert os.listdir(tmp_path / "files" / "tmp") == []


def test_a_failing_read_leaves_nothing_and_temp_files_of_a_crash_go_at_start(tmp_path):
    store = FileStore(str(tmp_path / "files"))

    class Broken(io.BytesIO):
        def read(self, n=-1):
            raise OSError("device gone")

    with pytest.raises(OSError):
        store.put(Broken())
    assert os.listdir(tmp_path / "files" / "tmp") == []
    (tmp_path / "files" / "tmp" / "tmpabc").write_bytes(b"half a file")  # as a crash leaves it
    FileStore(str(tmp_path / "files"))
    assert os.listdir(tmp_path / "files" / "tmp") == []


def test_replace_file_leaves_the_old_content_or_the_new_never_a_temp(tmp_path, monkeypatch):
    import os

    from stationd.filestore import replace_file

    path = tmp_path / "sub" / "state.json"
    replace_file(str(path), b"old")
    assert path.read_bytes() == b"old"

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        replace_file(str(path), b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["state.json"]
    replace_file(str(path), b"new")
    assert path.read_bytes() == b"new" and os.listdir(path.parent) == ["state.json"]


def test_the_fan_out_directories_a_content_makes_are_made_durable_too(tmp_path, monkeypatch):
    """A content's new ``ab/cd/`` directories are fsynced in their parents, else a power cut could
    lose a content already answered as stored."""
    from stationd import filestore

    synced = []
    real = filestore._fsync_dir
    monkeypatch.setattr(filestore, "_fsync_dir", lambda path: synced.append(path) or real(path))
    store = FileStore(str(tmp_path / "files"))
    sha, _ = store.put(io.BytesIO(b"first"))
    top, middle = os.path.join(store.root, sha[:2]), os.path.join(store.root, sha[:2], sha[2:4])
    assert synced == [middle, top, store.root]
    synced.clear()
    store.put(io.BytesIO(b"first"))  # stored already: nothing to make durable
    assert synced == []
