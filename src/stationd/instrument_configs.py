"""Instrument configurations: validated, stored as versions, rendered with a cache.

Only "fplane" has a structure and a text rendering (stationd.fplane); other
names hold any JSON object.  Rendered files are cached in the spool
directory under (name, version, variant): versions never change, so a cached
file never goes stale, and a new version of a name clears that name's files
only to keep the directory small.  Deleting the cache changes nothing but
speed.
"""

import datetime
import os
import re
import shutil

from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from stationd import fplane
from stationd.filestore import replace_file
from stationd.store import Store
from stationd.store import configs as store_configs
from stationd.times import format_ns, parse_datestr

log = Logger()
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InstrumentConfigs:
    """Named configurations' versions (the store's), rendered fplane files cached in ``cache_dir``."""

    def __init__(self, store: Store, cache_dir: str, zone: datetime.tzinfo, clock: IReactorTime,
                 slots: list[str] | None = None):
        self.store = store
        self.cache_dir = cache_dir
        self.zone = zone
        self.clock = clock
        self.slots = slots or fplane.default_slots()

    def now_ns(self) -> int:
        return int(self.clock.seconds() * 1e9)

    def validate(self, name, content):
        """The content in canonical form; fplane.ConfigInvalid if it is refused."""
        if name == "fplane":
            return fplane.validate(content, self.slots)
        if not isinstance(content, dict):
            raise fplane.ConfigInvalid([{"problem": "a configuration must be a JSON object"}])
        return content

    async def at(self, name, datestr):
        """The version of ``name`` that ``datestr`` names (None: none then); ValueError for a bad datestr."""
        when = parse_datestr(datestr, self.zone)
        if when == "latest":
            return await self.store.read(store_configs.latest_version, name)
        return await self.store.read(store_configs.version_at, name, self.now_ns() if when == "current" else when)

    async def add(self, name, content, valid_from_ns, author):
        """Store a validated version; its description."""
        now = self.now_ns()
        version = await self.store.run(store_configs.add_version, name, content, valid_from_ns, author, now)
        log.info("Configuration {name} version {version} valid from {valid_from} stored by {author}",
                 name=name, version=version["version"], valid_from=version["valid_from"], author=author)
        if valid_from_ns < now:
            log.info("Configuration {name} version {version} is dated in the past ({valid_from}): "
                     "it replaces what was valid from then", name=name, version=version["version"],
                     valid_from=version["valid_from"])
        await deferToThread(shutil.rmtree, os.path.join(self.cache_dir, name), ignore_errors=True)
        return version

    def render(self, version, full=True, actual=False):
        """The fplane text of a stored version, from the cache when it is there (blocking: file I/O)."""
        path = os.path.join(self.cache_dir, version["name"], f"{version['version']}-{int(full)}{int(actual)}.txt")
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            pass
        text = fplane.render(version["content"], full=full, actual=actual, header=_header(version))
        try:
            replace_file(path, text.encode("utf-8"))
        except OSError as e:  # the cache is an optimisation: serve without it
            log.warn("Configuration cache {path} not written: {e}", path=path, e=e)
        return text

    def preview(self, name, content, author, valid_from_ns, full=True, actual=False):
        version = {"name": name, "version": None, "valid_from_ns": valid_from_ns, "author": author,
                   "created_ns": self.now_ns(), "content": content}
        return fplane.render(content, full=full, actual=actual, header=_header(version))


def _header(version):
    number = "preview, not stored" if version["version"] is None else f"version {version['version']}"
    created = version.get("created_at") or format_ns(version["created_ns"])
    valid_from = version.get("valid_from") or format_ns(version["valid_from_ns"])
    return [f"{version['name']} {number}, valid from {valid_from}",
            f"by {version['author']} at {created} (stationd)"]
