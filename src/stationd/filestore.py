"""File contents, stored once per SHA-256 in a fanned directory tree.

``{root}/ab/cd/abcd...`` (the first two pairs of hex digits as directories,
so no directory grows past 65,536 entries).  A content is written to a temp
file, fsynced, renamed into place and its directory fsynced: a path that
exists holds the whole content, and a crash leaves at most a temp file,
removed at the next start.
"""

import hashlib
import os
import tempfile

CHUNK = 1024 * 1024


class ContentMismatch(ValueError):
    """The content's size or SHA-256 is not what was announced."""


class FileStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        for name in os.listdir(self.tmp):
            os.remove(os.path.join(self.tmp, name))

    def path(self, sha256):
        return os.path.join(self.root, sha256[:2], sha256[2:4], sha256)

    def has(self, sha256):
        return os.path.exists(self.path(sha256))

    def _make_dirs(self, directory):
        """Make ``directory`` and the fan-out directories above it that are missing; those made, deepest first."""
        made = []
        while not os.path.isdir(directory) and directory != self.root:
            made.append(directory)
            directory = os.path.dirname(directory)
        for missing in reversed(made):
            os.makedirs(missing, exist_ok=True)
        return made

    def put(self, source, expect_sha256=None, expect_size=None, expect_md5=None):
        """Store the contents read from file object ``source``; (sha256, size).

        Blocking (run it in a thread).  With ``expect_*`` given, a content
        that differs is refused with ContentMismatch and nothing is kept
        (MD5: what MeteorPi's exporters announce).
        """
        digest, size = hashlib.sha256(), 0
        md5 = None if expect_md5 is None else hashlib.md5(usedforsecurity=False)
        fd, temp = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    if md5 is not None:
                        md5.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            if expect_sha256 is not None and sha256 != expect_sha256.lower():
                raise ContentMismatch(f"content has SHA-256 {sha256}, not {expect_sha256}")
            if expect_size is not None and size != expect_size:
                raise ContentMismatch(f"content has {size} bytes, not {expect_size}")
            if md5 is not None and md5.hexdigest() != expect_md5.lower():
                raise ContentMismatch(f"content has MD5 {md5.hexdigest()}, not {expect_md5}")
            final = self.path(sha256)
            if os.path.exists(final):
                os.remove(temp)
            else:
                made = self._make_dirs(os.path.dirname(final))
                os.rename(temp, final)
                _fsync_dir(os.path.dirname(final))
                for directory in made:  # (each fan-out directory made here, in the one above it)
                    _fsync_dir(os.path.dirname(directory))
            return sha256, size
        except BaseException:
            if os.path.exists(temp):
                os.remove(temp)
            raise


def replace_file(path, data):
    """Replace ``path`` with ``data`` (bytes) as a whole: a temp file beside it, fsynced,
    renamed over it, the directory fsynced.  An interruption leaves the old content or
    the new one, never a mix (blocking: run it in a thread from the reactor)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    _fsync_dir(directory)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
