"""The live API key index, reloaded when the key files change.

Why a stat poll and not inotify: writers replace the files by rename and Kubernetes volume
mounts swap a symlinked directory; a 250 ms poll of (inode, size, mtime) catches both with no
watch descriptors to re-arm, costs two stat calls per period, and keeps the reload well under
the 1 s promise. Check reads `index` (one attribute load); the watcher swaps in a new
immutable KeyIndex, so a reader never sees a half-built map. An invalid file keeps the last
good index and is logged once per distinct problem; an invalid `quotas` entry only loses the
quotas (the defaults apply, logged the same way), never the keys.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from extproc.core.errors import InvalidArgument
from extproc.core.key_source import KeySource
from extproc.edge.keyfiles import CONFIG_FILE, SECRET_FILE, read_key_index
from extproc.edge.settings import KeyStoreSettings

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(paths: tuple[Path, ...]) -> _Stamp:
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            stamps.append(None)
        else:
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class KeyStore(KeySource):
    def __init__(self, settings: KeyStoreSettings) -> None:
        super().__init__()
        self._settings = settings
        self._paths = (settings.directory / SECRET_FILE, settings.directory / CONFIG_FILE)
        self._stamp: _Stamp | None = None

    def reload_if_changed(self) -> bool:
        """Reload when a file changed since the last look; True if a new index was swapped in."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            index = read_key_index(self._settings.directory)
        except (InvalidArgument, OSError, UnicodeDecodeError) as error:
            self.keep_previous(getattr(error, "message", None) or str(error))
            return False
        if self.publish(index):
            log.info("loaded %d API keys from %s", len(index), self._settings.directory)
        else:
            log.info("reloaded API keys: %d entries", len(index))
        return True

    async def watch(self) -> None:
        """Poll forever; the first pass happens before the first sleep."""
        while True:
            self.reload_if_changed()
            await asyncio.sleep(self._settings.poll_interval_s)
